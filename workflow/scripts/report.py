from pathlib import Path

from brainfuse.core.logging import setup_logging
from brainfuse.methods.pretrained import pretraining_summary
from brainfuse.modalities.base import load_modality
from brainfuse.report.index_page import ReportInputs, build_report

setup_logging(snakemake.log[0])
# biomarkers/<method>/<name>.<ext> -> {method: {name: path}}; figures/<name>.png -> {name: path}
biomarkers = {}
for path in snakemake.input.biomarkers:
    biomarkers.setdefault(Path(path).parent.name, {})[Path(path).stem] = path
sections = [
    load_modality(reference).report_section(cache)
    for reference, cache in zip(snakemake.params.modalities, snakemake.input.caches, strict=True)
]
build_report(
    ReportInputs(
        summary_path=snakemake.input.summary,
        per_fold_path=snakemake.input.per_fold,
        qc_path=snakemake.input.qc,
        folds_path=snakemake.input.folds,
        folds_summary_path=snakemake.input.folds_summary,
        out_html=snakemake.output.index,
        skipped=dict(snakemake.params.skipped),
        descriptions=dict(snakemake.params.descriptions),
        modality_sections=[s for s in sections if s],
        predictions_path=snakemake.input.predictions,
        deltas_path=snakemake.input.deltas,
        per_site_path=snakemake.input.per_site,
        diagnostics_path=snakemake.input.diagnostics,
        curves_path=snakemake.input.curves[0] if snakemake.input.curves else None,
        curves_figure=snakemake.input.curves[1] if snakemake.input.curves else None,
        figures={Path(p).stem: p for p in snakemake.input.figures},
        biomarkers=biomarkers,
        method_pages={Path(p).stem: p for p in snakemake.output.pages},
        truth_path=snakemake.input.truth[0] if snakemake.input.truth else None,
        stages={m: list(s) for m, s in snakemake.params.stages.items()},
        families=dict(snakemake.params.families),
        origins=dict(snakemake.params.origins),
        harmonise=dict(snakemake.params.harmonise),
        confounds=list(snakemake.params.confounds),
        pretraining={m: pretraining_summary(**p) for m, p in snakemake.params.pretraining.items()},
        positive=snakemake.params.positive,
        seed=snakemake.params.seed,
    )
)
