from pathlib import Path

from brainfuse.report.index_page import ReportInputs, build_report
from brainfuse.steps import setup_logging

setup_logging(snakemake.log[0])
# biomarkers/<method>/<name>.<ext> -> {method: {name: path}}; figures/<name>.png -> {name: path}
biomarkers = {}
for path in snakemake.input.biomarkers:
    biomarkers.setdefault(Path(path).parent.name, {})[Path(path).stem] = path
build_report(
    ReportInputs(
        summary_path=snakemake.input.summary,
        per_fold_path=snakemake.input.per_fold,
        qc_path=snakemake.input.qc,
        folds_path=snakemake.input.folds,
        out_html=snakemake.output.index,
        skipped=dict(snakemake.params.skipped),
        descriptions=dict(snakemake.params.descriptions),
        fmri_cache=snakemake.input.fmri_cache[0] if snakemake.input.fmri_cache else None,
        predictions_path=snakemake.input.predictions,
        figures={Path(p).stem: p for p in snakemake.input.figures},
        biomarkers=biomarkers,
        method_pages={Path(p).stem: p for p in snakemake.output.pages},
        truth_path=snakemake.input.truth[0] if snakemake.input.truth else None,
        stages={m: list(s) for m, s in snakemake.params.stages.items()},
        positive=snakemake.params.positive,
        seed=snakemake.params.seed,
    )
)
