# EEG: band-limited amplitude envelopes per recording (sensor or source level), one Parquet row each.
EEG_FEATURES = out_pattern(
    "eeg", "eeg", seg=ATLAS, desc="envelopes", suffix="eeg.parquet"
)
EEG_SIDECAR = EEG_FEATURES.replace(".parquet", ".json")


rule eeg_run:
    input:
        eeg=lambda w: INPUTS.lookup("eeg", w),
        channels=lambda w: eeg_companion(w, "channels"),
        electrodes=lambda w: eeg_companion(w, "electrodes"),
    output:
        features=EEG_FEATURES,
        sidecar=EEG_SIDECAR,
    log:
        out_pattern("eeg", "logs", suffix="eeg.log"),
    benchmark:
        out_pattern("eeg", "benchmarks", suffix="eeg_run.tsv")
    group:
        "eeg"
    conda:
        ENV
    resources:
        mem_mb=res("eeg", "mem_mb"),
        runtime=res("eeg", "runtime"),
    params:
        entities=lambda w: entities_of("eeg", w),
        atlas=config["atlas"],
        # content-addressed memo of template forward models and inverse kernels, shared by jobs
        eeg={**config["eeg"], "cache_dir": f"{R}/cache/eeg_head_model"},
    script:
        "../scripts/eeg_run.py"
