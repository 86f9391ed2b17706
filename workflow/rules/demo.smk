# The embedded demo: a synthetic dataset in real fMRIPrep / BIDS EEG / QSIRecon formats.
if config["input"]["demo"]:

    rule demo_data:
        output:
            INPUTS.participants,
            f"{R}/demo_bids/ground_truth.json",
            INPUTS.tables["bold"]["path"].tolist(),
            [
                p
                for b in INPUTS.tables["bold"]["path"]
                for p in bold_companions(b).values()
            ],
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
            seed=config["seed"],
            atlas_data_dir=config["atlas"]["data_dir"],
        script:
            "../scripts/demo_data.py"
