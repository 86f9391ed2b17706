from brainfuse.core.logging import setup_logging
from brainfuse.modalities.fmri.run import fmri_run, timeseries_run

setup_logging(snakemake.log[0])
outputs = dict(
    out_timeseries=snakemake.output.timeseries,
    out_sidecar=snakemake.output.sidecar,
    out_relmat=snakemake.output.relmat,
    out_relmat_raw=snakemake.output.relmat_raw,
    out_coverage=snakemake.output.coverage,
    out_figure=snakemake.output.figure,
)
common = dict(
    entities=snakemake.params.entities,
    atlas_cfg=snakemake.params.atlas,
    params=snakemake.params.fmri,
)
if "bold" in snakemake.input.keys():
    fmri_run(
        bold=snakemake.input.bold,
        confounds=snakemake.input.confounds,
        mask=snakemake.input.mask,
        sidecar=snakemake.params.sidecar,
        **common,
        **outputs,
    )
else:
    timeseries_run(
        table=snakemake.input.table, default_tr=snakemake.params.default_tr, **common, **outputs
    )
