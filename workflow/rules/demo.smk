# The embedded demo: a synthetic dataset in real fMRIPrep / XCP-D / BIDS EEG / QSIRecon formats.
import os

if config["input"]["demo"]:
    DEMO_FMRI = INPUTS.tables["fmri"]

    rule demo_data:
        output:
            INPUTS.participants,
            f"{R}/demo_bids/ground_truth.json",
            [
                p
                for name, m in MODALITIES.items()
                for p in m.demo_files(INPUTS.tables[name])
            ],
        log:
            f"{R}/logs/demo_data.log",
        conda:
            ENV
        resources:
            mem_mb=res("demo", "mem_mb"),
            runtime=res("demo", "runtime"),
        params:
            outdir=lambda w, output: os.path.dirname(output[1]),
            n_subjects=config["input"]["demo_subjects"],
            xcpd_subjects=sorted(
                DEMO_FMRI.loc[DEMO_FMRI["source"] == "timeseries", "subject"].unique()
            ),
            seed=config["seed"],
            atlas_data_dir=config["atlas"]["data_dir"],
        script:
            "../scripts/demo_data.py"
