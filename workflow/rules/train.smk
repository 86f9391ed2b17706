# One job per method x stage x fold; a stage takes the previous stage's checkpoint as input.
# Two rules write the same outputs, told apart by the method: `train_stage` trains the torch
# methods (Lightning; the rule that asks for a GPU), `fit_baseline` fits the scikit-learn
# baselines (CPU only, so a cluster profile never gives them a GPU). Both run the same script.
STAGE_DIR = f"{R}/models/{{method}}/fold-{{fold}}/{{stage}}"


rule train_stage:
    input:
        caches=lambda w: [
            f"{R}/cache/{m}.parquet" for m in CATALOG.modalities_of(w.method, AVAILABLE)
        ],
        folds=f"{R}/folds/folds.tsv",
        previous=previous_stage,
    output:
        model=f"{STAGE_DIR}/model.bin",
        metrics=f"{STAGE_DIR}/metrics.json",
        predictions=f"{STAGE_DIR}/predictions.tsv",
    log:
        f"{R}/logs/train/{{method}}_fold-{{fold}}_{{stage}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{method}}_fold-{{fold}}_{{stage}}.tsv"
    wildcard_constraints:
        method=methods_regex("torch"),
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=config["label"]["positive"],
        seed=config["seed"],
        method_params=lambda w: config["methods"][w.method].get("params", {}),
        # Lightning's resumable checkpoints: deliberately not a declared output
        checkpoint_dir=lambda w: f"{R}/checkpoints/{w.method}/fold-{w.fold}/{w.stage}",
    script:
        "../scripts/train_stage.py"


# The baselines: the same job without `gpu` (resources are replaced as a whole here).
use rule train_stage as fit_baseline with:
    wildcard_constraints:
        method=methods_regex("sklearn"),
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
