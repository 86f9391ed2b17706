# The embedded demo: a synthetic dataset in real fMRIPrep / XCP-D / BIDS EEG / QSIRecon formats.
import os

if CFG.input.demo:
    DEMO_FMRI = INPUTS.tables["fmri"]

    rule demo_data:
        output:
            INPUTS.participants,
            GROUND_TRUTH,
            [
                p
                for name, m in MODALITIES.items()
                for p in m.demo_files(INPUTS.tables[name])
            ],
        log:
            f"{LOGS}/demo_data.log",
        conda:
            ENV
        threads: res("demo", "threads")
        resources:
            mem_mb=res("demo", "mem_mb"),
            runtime=res("demo", "runtime"),
        params:
            outdir=lambda w, output: os.path.dirname(output[1]),
            n_subjects=CFG.input.demo_subjects,
            xcpd_subjects=sorted(
                DEMO_FMRI.loc[DEMO_FMRI["source"] == "timeseries", "subject"].unique()
            ),
            seed=CFG.seed,
            atlas_data_dir=CFG.atlas.data_dir,
        script:
            "../scripts/demo_data.py"

    # The demo's unlabelled corpus (brainfuse.demo.corpus), made when a method pre-trains on it
    # (methods.<m>.pretrain_on: demo_corpus): other subjects of the same population as ROI
    # tables, read and cached by the fMRI modality's own steps.
    if DEMO_CORPUS in [p for caches in CORPUS.values() for p in caches.values()]:

        rule demo_corpus:
            output:
                DEMO_CORPUS,
            log:
                f"{LOGS}/demo_corpus.log",
            conda:
                ENV
            resources:
                mem_mb=res("demo", "mem_mb"),
                runtime=res("demo", "runtime"),
            params:
                n_subjects=CFG.input.demo_corpus_subjects,
                seed=CFG.seed,
                fmri=CFG.section("fmri"),
                atlas=CFG.raw["atlas"],
            script:
                "../scripts/demo_corpus.py"
