from brainfuse.steps import dataset_description, setup_logging

setup_logging(snakemake.log[0])
dataset_description(snakemake.params.config, snakemake.output[0])
