# fMRI: parcellate each preprocessed BOLD run, denoise the parcel signals, FC, run-level QC.
FMRI_TS = out_pattern("bold", "func", seg=ATLAS, stat="mean", suffix="timeseries.tsv")
FMRI_SIDECAR = FMRI_TS.replace(".tsv", ".json")
FMRI_RAW_FC = out_pattern(
    "bold",
    "func",
    seg=ATLAS,
    desc="raw",
    stat="pearsoncorrelation",
    suffix="relmat.tsv",
)


rule fmri_run:
    input:
        bold=lambda w: INPUTS.lookup("bold", w),
        confounds=lambda w: bold_companions(INPUTS.lookup("bold", w))["confounds"],
        mask=lambda w: bold_companions(INPUTS.lookup("bold", w))["mask"],
    output:
        timeseries=FMRI_TS,
        sidecar=FMRI_SIDECAR,
        relmat=out_pattern(
            "bold", "func", seg=ATLAS, stat="pearsoncorrelation", suffix="relmat.tsv"
        ),
        relmat_raw=FMRI_RAW_FC,
        coverage=out_pattern(
            "bold", "func", seg=ATLAS, stat="coverage", suffix="bold.tsv"
        ),
        figure=out_pattern("bold", "figures", seg=ATLAS, desc="qc", suffix="bold.png"),
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
