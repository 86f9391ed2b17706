from brainfuse.core.cache import read_cache
from brainfuse.core.logging import setup_logging
from brainfuse.curves import write_subsampled_folds

setup_logging(snakemake.log[0])
# each subject's label, from the caches as the folds job reads it; only the training and
# validation subjects' labels are used
labels = {}
for path in snakemake.input.caches:
    table = read_cache(path, columns=["subject", "label"]).table
    labels.update(zip(table["subject"].astype(str), table["label"].astype(str), strict=True))
write_subsampled_folds(
    snakemake.input.folds,
    labels,
    snakemake.params.fraction,
    snakemake.params.seed,
    snakemake.output[0],
)
