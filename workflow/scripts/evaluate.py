from brainfuse.core.logging import setup_logging
from brainfuse.evaluate import evaluate
from brainfuse.provenance import check_manifests

setup_logging(snakemake.log[0])
# no score is computed for a model whose fold's test subjects reached any of its stages
check_manifests(list(snakemake.input.provenance), snakemake.input.folds)
evaluate(
    list(snakemake.input.predictions),
    out_predictions=snakemake.output.predictions,
    out_per_fold=snakemake.output.per_fold,
    out_summary=snakemake.output.summary,
    baselines=list(snakemake.params.baselines),
    qc_path=snakemake.input.qc,
    out_deltas=snakemake.output.deltas,
    out_per_site=snakemake.output.per_site,
    seed=snakemake.params.seed,
    probe_files=list(snakemake.input.probes),
)
