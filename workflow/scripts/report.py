from brainfuse.report import build_report
from brainfuse.steps import setup_logging

setup_logging(snakemake.log[0])
build_report(
    summary_path=snakemake.input.summary,
    per_fold_path=snakemake.input.per_fold,
    qc_path=snakemake.input.qc,
    folds_path=snakemake.input.folds,
    skipped=dict(snakemake.params.skipped),
    descriptions=dict(snakemake.params.descriptions),
    out_html=snakemake.output[0],
    fmri_cache=snakemake.input.fmri_cache[0] if snakemake.input.fmri_cache else None,
)
