from brainfuse.core.logging import setup_logging
from brainfuse.core.provenance import dataset_description

setup_logging(snakemake.log[0])
dataset_description(snakemake.params.config, snakemake.output[0])
