# Dataset-level Parquet caches (one row per included sample), the QC table and the CV folds.
CACHE_STEP = {
    "fmri": ("bold", "build_fmri_cache", FMRI_TS.replace(".tsv", ".json"), FMRI_TS),
    "eeg": (
        "eeg",
        "build_eeg_cache",
        EEG_FEATURES.replace(".parquet", ".json"),
        EEG_FEATURES,
    ),
    "sc": ("sc", "build_sc_cache", SC_RELMAT.replace(".tsv", ".json"), SC_RELMAT),
}
CONFIG_SECTION = {"fmri": "fmri", "eeg": "eeg", "sc": "sc"}


rule cache:
    input:
        sidecars=lambda w: expand_samples(
            CACHE_STEP[w.modality][0], CACHE_STEP[w.modality][2]
        ),
        data=lambda w: expand_samples(
            CACHE_STEP[w.modality][0], CACHE_STEP[w.modality][3]
        ),
        participants=INPUTS.participants,
    output:
        cache=f"{R}/cache/{{modality}}.parquet",
        qc=f"{R}/qc/{{modality}}_qc.tsv",
    log:
        f"{R}/logs/cache_{{modality}}.log",
    wildcard_constraints:
        modality="fmri|eeg|sc",
    conda:
        ENV
    resources:
        mem_mb=res("cache", "mem_mb"),
        runtime=res("cache", "runtime"),
    params:
        step=lambda w: CACHE_STEP[w.modality][1],
        label=config["label"],
        atlas=config["atlas"],
        section=lambda w: config[CONFIG_SECTION[w.modality]],
    script:
        "../scripts/cache.py"


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
        config_hash=config_hash(config),
    script:
        "../scripts/dataset_description.py"
