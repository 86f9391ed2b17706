# One job per method x stage x fold; a stage takes the previous stage's checkpoint as input.
STAGE_DIR = f"{R}/models/{{method}}/fold-{{fold}}/{{stage}}"


rule train_stage:
    input:
        caches=lambda w: [
            f"{R}/cache/{m}.parquet" for m in METHODS[w.method].modalities
        ],
        folds=f"{R}/folds/folds.tsv",
        previous=previous_stage,
    output:
        model=f"{STAGE_DIR}/model.bin",
        metrics=f"{STAGE_DIR}/metrics.json",
        predictions=f"{STAGE_DIR}/predictions.tsv",
    log:
        f"{R}/logs/train/{{method}}_fold-{{fold}}_{{stage}}.log",
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        modalities=lambda w: list(METHODS[w.method].modalities),
        positive=config["label"]["positive"],
        seed=config["seed"],
    script:
        "../scripts/train_stage.py"
