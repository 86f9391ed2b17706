from brainfuse.steps import merge_qc, setup_logging

setup_logging(snakemake.log[0])
merge_qc(list(snakemake.input), snakemake.output[0])
