# Dataset-level outputs beside the modality caches: the QC table, the CV folds, the description.
rule qc_table:
    input:
        expand(f"{R}/qc/{{modality}}_qc.tsv", modality=sorted(AVAILABLE)),
    output:
        f"{R}/qc/qc.tsv",
    log:
        f"{R}/logs/qc_table.log",
    conda:
        ENV
    script:
        "../scripts/qc_table.py"


rule folds:
    input:
        expand(f"{R}/cache/{{modality}}.parquet", modality=sorted(AVAILABLE)),
    output:
        f"{R}/folds/folds.tsv",
    log:
        f"{R}/logs/folds.log",
    conda:
        ENV
    params:
        cv=config["cv"],
        seed=config["seed"],
    script:
        "../scripts/folds.py"


rule dataset_description:
    output:
        f"{R}/dataset_description.json",
    log:
        f"{R}/logs/dataset_description.log",
    conda:
        ENV
    params:
        config=config,
    script:
        "../scripts/dataset_description.py"
