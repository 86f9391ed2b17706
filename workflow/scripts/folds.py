from brainfuse.core.cache import read_cache
from brainfuse.core.logging import setup_logging
from brainfuse.folds import write_folds

setup_logging(snakemake.log[0])
tables = [read_cache(path, columns=["subject", "label", "site"]).table for path in snakemake.input]
write_folds(
    tables,
    snakemake.params.cv,
    snakemake.params.seed,
    snakemake.params.n_folds,
    snakemake.output.folds,
    snakemake.output.summary,
)
