from brainfuse.explain.step import attribution_step
from brainfuse.steps import setup_logging

setup_logging(snakemake.log[0])
attribution_step(
    method=snakemake.wildcards.method,
    model_paths=list(snakemake.input.models),
    metrics_paths=list(snakemake.input.metrics),
    routing_paths=list(snakemake.input.routing),
    cache_paths=dict(zip(snakemake.params.modalities, snakemake.input.caches, strict=True)),
    folds_path=snakemake.input.folds,
    positive=snakemake.params.positive,
    seed=snakemake.params.seed,
    out_importance=snakemake.output.importance,
    out_edges=snakemake.output.edges,
    out_summary=snakemake.output.summary,
    truth_path=snakemake.input.truth[0] if snakemake.input.truth else None,
    description=snakemake.params.description,
    n_steps=snakemake.params.ig_steps,
    num_threads=snakemake.threads,
)
