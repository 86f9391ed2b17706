# Dataset-level Parquet caches (one row per included sample), the QC table and the CV folds.
PER_SAMPLE_OUTPUTS = {"fmri": FMRI_TS, "eeg": EEG_FEATURES, "sc": SC_RELMAT}


rule fmri_cache:
    input:
        sidecars=expand_samples("fmri", FMRI_SIDECAR),
        data=expand_samples("fmri", FMRI_TS),
        raw_fc=expand_samples("fmri", FMRI_RAW_FC),
        participants=INPUTS.participants,
    output:
        cache=f"{R}/cache/fmri.parquet",
        qc=f"{R}/qc/fmri_qc.tsv",
    log:
        f"{R}/logs/cache_fmri.log",
    conda:
        ENV
    resources:
        mem_mb=res("cache", "mem_mb"),
        runtime=res("cache", "runtime"),
    params:
        label=config["label"],
        atlas=config["atlas"],
        section=config["fmri"],
    script:
        "../scripts/fmri_cache.py"


rule eeg_cache:
    input:
        sidecars=expand_samples("eeg", EEG_SIDECAR),
        data=expand_samples("eeg", EEG_FEATURES),
        participants=INPUTS.participants,
    output:
        cache=f"{R}/cache/eeg.parquet",
        qc=f"{R}/qc/eeg_qc.tsv",
    log:
        f"{R}/logs/cache_eeg.log",
    conda:
        ENV
    resources:
        mem_mb=res("cache", "mem_mb"),
        runtime=res("cache", "runtime"),
    params:
        step="build_eeg_cache",
        label=config["label"],
        atlas=config["atlas"],
        section=config["eeg"],
    script:
        "../scripts/cache.py"


rule sc_cache:
    input:
        sidecars=expand_samples("sc", SC_SIDECAR),
        data=expand_samples("sc", SC_RELMAT),
        participants=INPUTS.participants,
    output:
        cache=f"{R}/cache/sc.parquet",
        qc=f"{R}/qc/sc_qc.tsv",
    log:
        f"{R}/logs/cache_sc.log",
    conda:
        ENV
    resources:
        mem_mb=res("cache", "mem_mb"),
        runtime=res("cache", "runtime"),
    params:
        step="build_sc_cache",
        label=config["label"],
        atlas=config["atlas"],
        section=config["sc"],
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
    script:
        "../scripts/dataset_description.py"
