from pathlib import Path

from brainfuse.core.logging import setup_logging
from brainfuse.explain.step import attribution_step
from brainfuse.extensions import load_extensions

setup_logging(snakemake.log[0])
catalog, _ = load_extensions(snakemake.params.extensions, snakemake.params.variants)
attribution_step(
    method=snakemake.wildcards.method,
    model_paths=list(snakemake.input.models),
    previous_paths=list(snakemake.input.previous),
    # a stage's extra tables: M3D-BFS writes its experts' routing there
    routing_paths=[str(Path(folder) / "routing.tsv") for folder in snakemake.input.tables],
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
    catalog=catalog,
    # the in-fold harmonisation and confounds the models were trained with
    adjustment={
        "harmonise": snakemake.params.harmonise,
        "confounds": snakemake.params.confounds,
        "participants": snakemake.input.participants[0] if snakemake.input.participants else None,
        "participant_column": snakemake.params.participant_column,
    },
)
