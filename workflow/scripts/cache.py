from brainfuse.core.logging import setup_logging
from brainfuse.modalities.eeg.cache import build_eeg_cache
from brainfuse.modalities.sc.cache import build_sc_cache

setup_logging(snakemake.log[0])
build = {"build_eeg_cache": build_eeg_cache, "build_sc_cache": build_sc_cache}
build[snakemake.params.step](
    sidecars=list(snakemake.input.sidecars),
    data=list(snakemake.input.data),
    participants=snakemake.input.participants,
    label_cfg=snakemake.params.label,
    atlas_cfg=snakemake.params.atlas,
    config_section=snakemake.params.section,
    out_cache=snakemake.output.cache,
    out_qc=snakemake.output.qc,
)
