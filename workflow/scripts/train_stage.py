from brainfuse.core.logging import setup_logging
from brainfuse.extensions import load_extensions
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.run import run_stage

setup_logging(snakemake.log[0])
catalog, _ = load_extensions(snakemake.params.extensions, snakemake.params.variants)
# the in-fold harmonisation and confounds (baselines: their features; torch: FC/SC matrices)
adjustment = {}
if hasattr(snakemake.params, "harmonise"):
    participants = snakemake.input.get("participants", [])
    adjustment = {
        "harmonise": snakemake.params.harmonise,
        "confounds": snakemake.params.confounds,
        "participants": participants[0] if participants else None,
        "participant_column": snakemake.params.participant_column,
    }
# the manifest of the encoder pre-trained once (pretrain_on, init) a first stage starts from
pretrained = snakemake.input.get("pretrained", [])
request = StageRequest(
    method=snakemake.wildcards.method,
    stage=snakemake.wildcards.stage,
    fold=int(snakemake.wildcards.fold),
    cache_paths=dict(zip(snakemake.params.modalities, snakemake.input.caches, strict=True)),
    folds_path=snakemake.input.folds,
    positive=snakemake.params.positive,
    seed=snakemake.params.seed,
    outputs=StageOutputs(
        model=snakemake.output.model,
        metrics=snakemake.output.metrics,
        predictions=snakemake.output.predictions,
        tables=snakemake.output.tables,
        provenance=snakemake.output.provenance,
    ),
    params={**snakemake.params.method_params, "num_threads": snakemake.threads, **adjustment},
    previous=snakemake.input.previous[0] if snakemake.input.previous else None,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    devices=max(1, int(snakemake.resources.get("gpu", 0))),
    pretrained=pretrained[0] if pretrained else None,
)
run_stage(request, catalog)
