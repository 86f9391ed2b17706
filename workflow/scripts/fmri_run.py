from brainfuse.steps import fmri_run, setup_logging

setup_logging(snakemake.log[0])
fmri_run(
    bold=snakemake.input.bold,
    confounds=snakemake.input.confounds,
    mask=snakemake.input.mask,
    sidecar=snakemake.params.sidecar,
    entities=snakemake.params.entities,
    atlas_cfg=snakemake.params.atlas,
    params=snakemake.params.fmri,
    out_timeseries=snakemake.output.timeseries,
    out_sidecar=snakemake.output.sidecar,
    out_relmat=snakemake.output.relmat,
    out_relmat_raw=snakemake.output.relmat_raw,
    out_coverage=snakemake.output.coverage,
    out_figure=snakemake.output.figure,
)
