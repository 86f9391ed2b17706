from brainfuse.core.logging import setup_logging
from brainfuse.evaluate import evaluate

setup_logging(snakemake.log[0])
evaluate(
    list(snakemake.input),
    out_predictions=snakemake.output.predictions,
    out_per_fold=snakemake.output.per_fold,
    out_summary=snakemake.output.summary,
    seed=snakemake.params.seed,
)
