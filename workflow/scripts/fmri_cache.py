from brainfuse.core.logging import setup_logging
from brainfuse.modalities.fmri.cache import build_fmri_cache

setup_logging(snakemake.log[0])
build_fmri_cache(
    sidecars=list(snakemake.input.sidecars),
    data=list(snakemake.input.data),
    raw_fc=list(snakemake.input.raw_fc),
    participants=snakemake.input.participants,
    label_cfg=snakemake.params.label,
    atlas_cfg=snakemake.params.atlas,
    config_section=snakemake.params.section,
    out_cache=snakemake.output.cache,
    out_qc=snakemake.output.qc,
)
