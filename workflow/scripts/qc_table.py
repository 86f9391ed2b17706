from brainfuse.core.logging import setup_logging
from brainfuse.core.qc import merge_qc

setup_logging(snakemake.log[0])
merge_qc(list(snakemake.input), snakemake.output[0])
