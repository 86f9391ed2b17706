from brainfuse.core.logging import setup_logging
from brainfuse.modalities.base import load_modality

setup_logging(snakemake.log[0])
params = snakemake.params
load_modality(params.modality).build_cache(
    # the chunk manifests say the files are complete; the cache reads the files themselves
    inputs={**params.sample_files, "participants": snakemake.input.participants},
    params={"label": params.label, "atlas": params.atlas, "section": params.section},
    outputs=dict(snakemake.output.items()),
)
