# Dataset-level outputs beside the modality caches: the QC table, the CV folds, the description.
rule qc_table:
    input:
        [MODALITY_QC.format(modality=m) for m in sorted(AVAILABLE)],
    output:
        QC_TABLE,
    log:
        f"{LOGS}/qc_table.log",
    conda:
        ENV
    script:
        "../scripts/qc_table.py"


rule folds:
    input:
        [cache_of(m) for m in sorted(AVAILABLE)],
    output:
        folds=FOLDS,
        summary=FOLDS_SUMMARY,
    log:
        f"{LOGS}/folds.log",
    conda:
        ENV
    params:
        cv=CFG.raw["cv"],
        seed=CFG.seed,
        n_folds=N_FOLDS,
    script:
        "../scripts/folds.py"


rule dataset_description:
    output:
        DATASET_DESCRIPTION,
    log:
        f"{LOGS}/dataset_description.log",
    conda:
        ENV
    params:
        # the whole configuration is the record (with its hash)
        config=CFG.raw,
    script:
        "../scripts/dataset_description.py"
