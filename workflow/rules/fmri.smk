# fMRI: parcellate each preprocessed BOLD run (or read a pre-parcellated XCP-D table), denoise,
# FC, run-level QC.
FMRI_TS = out_pattern("fmri", "func", seg=ATLAS, stat="mean", suffix="timeseries.tsv")
FMRI_SIDECAR = FMRI_TS.replace(".tsv", ".json")
FMRI_RAW_FC = out_pattern(
    "fmri",
    "func",
    seg=ATLAS,
    desc="raw",
    stat="pearsoncorrelation",
    suffix="relmat.tsv",
)


rule fmri_run:
    input:
        unpack(fmri_inputs),
    output:
        timeseries=FMRI_TS,
        sidecar=FMRI_SIDECAR,
        relmat=out_pattern(
            "fmri", "func", seg=ATLAS, stat="pearsoncorrelation", suffix="relmat.tsv"
        ),
        relmat_raw=FMRI_RAW_FC,
        coverage=out_pattern(
            "fmri", "func", seg=ATLAS, stat="coverage", suffix="bold.tsv"
        ),
        figure=out_pattern("fmri", "figures", seg=ATLAS, desc="qc", suffix="bold.png"),
    log:
        out_pattern("fmri", "logs", suffix="fmri.log"),
    benchmark:
        out_pattern("fmri", "benchmarks", suffix="fmri_run.tsv")
    group:
        "fmri"
    conda:
        ENV
    resources:
        mem_mb=res("fmri", "mem_mb"),
        runtime=res("fmri", "runtime"),
    params:
        sidecar=lambda w: bold_companions(INPUTS.lookup("fmri", w))["sidecar"],
        entities=lambda w: entities_of("fmri", w),
        atlas=config["atlas"],
        fmri=config["fmri"],
        default_tr=config["input"]["timeseries_tr"],
    script:
        "../scripts/fmri_run.py"
