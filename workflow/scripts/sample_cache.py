from brainfuse.core.logging import setup_logging
from brainfuse.modalities.base import load_modality

setup_logging(snakemake.log[0])
params = snakemake.params
load_modality(params.modality).build_cache(
    inputs=dict(snakemake.input.items()),
    params={"label": params.label, "atlas": params.atlas, "section": params.section},
    outputs=dict(snakemake.output.items()),
)
