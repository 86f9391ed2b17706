# EEG: band-limited amplitude envelopes per recording (sensor or source level), one Parquet row each.
EEG_FEATURES = out_pattern("eeg", "eeg", seg=ATLAS, desc="envelopes", suffix="eeg.parquet")


def eeg_companion(w, kind):
    path = eeg_companions(INPUTS.lookup("eeg", w))[kind]
    # channels/electrodes files are optional in BIDS; a missing one falls back to the montage
    return path if config["input"]["demo"] or os.path.exists(path) else []


rule eeg_run:
    input:
        eeg=lambda w: INPUTS.lookup("eeg", w),
        channels=lambda w: eeg_companion(w, "channels"),
        electrodes=lambda w: eeg_companion(w, "electrodes"),
    output:
        features=EEG_FEATURES,
        sidecar=EEG_FEATURES.replace(".parquet", ".json"),
    params:
        entities=lambda w: entities_of("eeg", w),
        atlas=config["atlas"],
        eeg=config["eeg"],
    log:
        out_pattern("eeg", "logs", suffix="eeg.log"),
    resources:
        mem_mb=res("eeg", "mem_mb"),
        runtime=res("eeg", "runtime"),
    conda:
        ENV
    script:
        "../scripts/eeg_run.py"
