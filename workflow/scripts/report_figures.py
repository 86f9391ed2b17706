from brainfuse.core.logging import setup_logging
from brainfuse.report.step import make_report_figures

setup_logging(snakemake.log[0])
make_report_figures(
    predictions_path=snakemake.input.predictions,
    per_fold_path=snakemake.input.per_fold,
    qc_path=snakemake.input.qc,
    out=dict(snakemake.output.items()),
    fmri_cache=snakemake.input.fmri_cache[0] if snakemake.input.fmri_cache else None,
    positive=snakemake.params.positive,
    fd_threshold=snakemake.params.fd_threshold,
)
