from brainfuse import steps

steps.setup_logging(snakemake.log[0])
getattr(steps, snakemake.params.step)(
    sidecars=list(snakemake.input.sidecars),
    data=list(snakemake.input.data),
    participants=snakemake.input.participants,
    label_cfg=snakemake.params.label,
    atlas_cfg=snakemake.params.atlas,
    config_section=snakemake.params.section,
    out_cache=snakemake.output.cache,
    out_qc=snakemake.output.qc,
)
