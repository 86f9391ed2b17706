# One job per method x stage x fold; a stage takes the previous stage's checkpoint as input.
STAGE_DIR = f"{R}/models/{{method}}/fold-{{fold}}/{{stage}}"


rule train_stage:
    input:
        caches=lambda w: [
            f"{R}/cache/{m}.parquet" for m in modalities_of(w.method, AVAILABLE)
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
    retries: 1
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        modalities=lambda w: list(modalities_of(w.method, AVAILABLE)),
        positive=config["label"]["positive"],
        seed=config["seed"],
        method_params=lambda w: config["methods"][w.method].get("params", {}),
        # Lightning's resumable checkpoints: deliberately not a declared output
        checkpoint_dir=lambda w: f"{R}/checkpoints/{w.method}/fold-{w.fold}/{w.stage}",
    script:
        "../scripts/train_stage.py"
