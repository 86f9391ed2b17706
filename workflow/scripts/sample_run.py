from brainfuse.core.logging import setup_logging
from brainfuse.modalities.base import load_modality

setup_logging(snakemake.log[0])
params = snakemake.params
load_modality(params.modality).run_sample(
    inputs=dict(snakemake.input.items()),
    params={
        "entities": params.entities,
        "atlas": params.atlas,
        "section": params.section,
        **params.sample,
    },
    outputs=dict(snakemake.output.items()),
)
