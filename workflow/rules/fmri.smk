# fMRI: parcellate each preprocessed BOLD run, denoise the parcel signals, Pearson FC, run-level QC.
FMRI_TS = out_pattern("bold", "func", seg=ATLAS, stat="mean", suffix="timeseries.tsv")


rule fmri_run:
    input:
        bold=lambda w: INPUTS.lookup("bold", w),
        confounds=lambda w: bold_companions(INPUTS.lookup("bold", w))["confounds"],
        mask=lambda w: bold_companions(INPUTS.lookup("bold", w))["mask"],
    output:
        timeseries=FMRI_TS,
        sidecar=FMRI_TS.replace(".tsv", ".json"),
        relmat=out_pattern(
            "bold", "func", seg=ATLAS, stat="pearsoncorrelation", suffix="relmat.tsv"
        ),
        coverage=out_pattern(
            "bold", "func", seg=ATLAS, stat="coverage", suffix="bold.tsv"
        ),
    log:
        out_pattern("bold", "logs", suffix="fmri.log"),
    conda:
        ENV
    resources:
        mem_mb=res("fmri", "mem_mb"),
        runtime=res("fmri", "runtime"),
    params:
        sidecar=lambda w: bold_companions(INPUTS.lookup("bold", w))["sidecar"],
        entities=lambda w: entities_of("bold", w),
        atlas=config["atlas"],
        fmri=config["fmri"],
    script:
        "../scripts/fmri_run.py"
