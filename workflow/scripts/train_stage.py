from brainfuse.steps import setup_logging
from brainfuse.train import run_stage

setup_logging(snakemake.log[0])
run_stage(
    method=snakemake.wildcards.method,
    stage=snakemake.wildcards.stage,
    fold=int(snakemake.wildcards.fold),
    cache_paths=dict(zip(snakemake.params.modalities, snakemake.input.caches, strict=True)),
    folds_path=snakemake.input.folds,
    positive=snakemake.params.positive,
    seed=snakemake.params.seed,
    out_model=snakemake.output.model,
    out_metrics=snakemake.output.metrics,
    out_predictions=snakemake.output.predictions,
)
