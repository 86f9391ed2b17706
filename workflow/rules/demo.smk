# The embedded demo: a synthetic dataset in real fMRIPrep / XCP-D / BIDS EEG / QSIRecon formats.
if config["input"]["demo"]:
    DEMO_FMRI = INPUTS.tables["fmri"]
    DEMO_BOLD = DEMO_FMRI.loc[DEMO_FMRI["source"] == "bold", "path"].tolist()
    DEMO_TABLES = DEMO_FMRI.loc[DEMO_FMRI["source"] == "timeseries", "path"].tolist()

    rule demo_data:
        output:
            INPUTS.participants,
            f"{R}/demo_bids/ground_truth.json",
            DEMO_BOLD,
            [p for b in DEMO_BOLD for p in bold_companions(b).values()],
            DEMO_TABLES,
            [p.replace(".tsv", ".json") for p in DEMO_TABLES],
            INPUTS.tables["eeg"]["path"].tolist(),
            [
                p
                for e in INPUTS.tables["eeg"]["path"]
                for p in eeg_companions(e).values()
            ],
            INPUTS.tables["sc"]["path"].tolist(),
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
