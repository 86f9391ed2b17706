# Evaluation over folds, biomarkers (attribution) per method, figures and the HTML report.
from brainfuse.methods.pretrained import FROZEN_SUFFIX
from brainfuse.modalities.base import modality_reference

# Methods whose models are explained (the majority baseline has nothing to explain).
ATTRIBUTED = [m for m in RUN_METHODS if CATALOG[m].estimator != "majority"]
# The classical baselines every method is compared with (the best of them, in eval/deltas.tsv).
BASELINES = [m for m in ATTRIBUTED if CATALOG[m].family == "sklearn"]
TRUTH = [GROUND_TRUTH] if CFG.input.demo else []
# Methods pre-trained in each fold and then fine-tuned: their pre-training stage's linear probe
# on the frozen encoder is scored too, as "<method> (frozen)" beside the fine-tuned row.
PROBED = [
    m
    for m, stages in RUN_METHODS.items()
    if "pretrain" in stages[:-1] and "pretrain" in CATALOG[m].self_supervised
]


rule evaluate:
    input:
        predictions=[
            p
            for method in RUN_METHODS
            for p in final_stage_files("predictions", method)
        ],
        probes=[
            stage_file("predictions", m, fold, "pretrain")
            for m in PROBED
            for fold in range(N_FOLDS)
        ],
        qc=QC_TABLE,  # the site of each subject
        # every stage's subjects, checked against the folds' test subjects before scoring
        provenance=all_stage_files("provenance"),
        folds=FOLDS,
    output:
        predictions=EVAL["predictions"],
        per_fold=EVAL["per_fold"],
        summary=report(
            EVAL["summary"],
            caption="../report/summary.rst",
            category="Evaluation",
        ),
        deltas=EVAL["deltas"],
        per_site=EVAL["per_site"],
    log:
        f"{LOGS}/evaluate.log",
    conda:
        ENV
    params:
        seed=CFG.seed,  # of the bootstrap intervals
        baselines=BASELINES,
    script:
        "../scripts/evaluate.py"


rule attribution:
    input:
        models=lambda w: final_stage_files("model", w.method),
        # a stage plugin may read the previous stage's model while the final one is rebuilt
        previous=lambda w: stage_before_final(w.method),
        tables=lambda w: final_stage_files("tables", w.method),
        caches=lambda w: caches_of_method(w.method),
        folds=FOLDS,
        truth=TRUTH,
        participants=[INPUTS.participants] if ADJUSTED else [],
    output:
        importance=report(
            BIOMARKER_TABLES["importance"],
            caption="../report/importance.rst",
            category="Biomarkers",
            subcategory="{method}",
        ),
        edges=BIOMARKER_TABLES["edges"],
        summary=BIOMARKER_TABLES["summary"],
    log:
        f"{LOGS}/attribution/{{method}}.log",
    conda:
        ENV
    threads: res("default", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("default", "runtime"),
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=CFG.label.positive,
        seed=CFG.seed,
        description=lambda w: CATALOG[w.method].description,
        extensions=CFG.extensions,
        variants=CFG.variants,
        ig_steps=32,
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
        participant_column=CFG.input.participant_column,
    script:
        "../scripts/attribution.py"


rule biomarker_figures:
    input:
        **BIOMARKER_TABLES,
    output:
        **{
            name: report(
                path,
                caption=f"../report/{name}.rst",
                category="Biomarkers",
                subcategory="{method}",
            )
            for name, path in BIOMARKER_FIGURES.items()
        },
    log:
        f"{LOGS}/biomarker_figures/{{method}}.log",
    conda:
        ENV
    params:
        # what the atlas is, not how its coverage is judged
        atlas={k: CFG.raw["atlas"][k] for k in ("name", "path", "labels", "data_dir")},
    script:
        "../scripts/biomarker_figures.py"


rule report_figures:
    input:
        predictions=EVAL["predictions"],
        per_fold=EVAL["per_fold"],
        qc=QC_TABLE,
        fmri_cache=[cache_of("fmri")] if "fmri" in AVAILABLE else [],
    output:
        roc=report(
            REPORT_FIGURES["roc"], caption="../report/roc.rst", category="Evaluation"
        ),
        fold_spread=report(
            REPORT_FIGURES["fold_spread"],
            caption="../report/fold_spread.rst",
            category="Evaluation",
        ),
        fc_difference=report(
            REPORT_FIGURES["fc_difference"],
            caption="../report/fc_difference.rst",
            category="Dataset",
        ),
        fd_distribution=report(
            REPORT_FIGURES["fd_distribution"],
            caption="../report/fd_distribution.rst",
            category="Quality control",
        ),
        exclusions=report(
            REPORT_FIGURES["exclusions"],
            caption="../report/exclusions.rst",
            category="Quality control",
        ),
    log:
        f"{LOGS}/report_figures.log",
    conda:
        ENV
    params:
        positive=CFG.label.positive,
        fd_threshold=CFG.section("fmri")["fd_threshold"],
    script:
        "../scripts/report_figures.py"


rule report:
    input:
        summary=EVAL["summary"],
        per_fold=EVAL["per_fold"],
        predictions=EVAL["predictions"],
        deltas=EVAL["deltas"],
        per_site=EVAL["per_site"],
        qc=QC_TABLE,
        folds=FOLDS,
        folds_summary=FOLDS_SUMMARY,
        diagnostics=EVAL["diagnostics"],
        curves=CURVES_IN_REPORT,  # the learning curves, once made (curves.smk)
        caches=[cache_of(m) for m in MODALITIES if m in AVAILABLE],
        figures=list(REPORT_FIGURES.values()),
        biomarkers=[
            path.format(method=m)
            for m in ATTRIBUTED
            for path in (*BIOMARKER_TABLES.values(), *BIOMARKER_FIGURES.values())
        ],
        truth=TRUTH,
        # what the encoders pre-trained once (pretrain_on, init) saw
        pretrained=[str(pretrained.manifest_of(e)) for e in ENCODERS.values()],
    output:
        index=report(
            REPORT_INDEX,
            caption="../report/index.rst",
            category="Report",
        ),
        pages=[
            report(
                REPORT_PAGE.format(method=m),
                caption="../report/method_page.rst",
                category="Report",
                subcategory="Methods",
            )
            for m in RUN_METHODS
        ],
    log:
        f"{LOGS}/report.log",
    conda:
        ENV
    params:
        # the modality of each cache, in the order of input.caches: each adds its own section
        modalities=[
            modality_reference(MODALITIES[m]) for m in MODALITIES if m in AVAILABLE
        ],
        skipped=SKIPPED,
        descriptions={
            **{m: CATALOG[m].description for m in RUN_METHODS},
            **{
                m + FROZEN_SUFFIX: "linear probe on its frozen pre-trained encoder"
                for m in PROBED
            },
        },
        families={
            **{
                m: "baseline" if CATALOG[m].family == "sklearn" else "deep"
                for m in RUN_METHODS
            },
            **{m + FROZEN_SUFFIX: "deep" for m in PROBED},
        },
        stages=RUN_METHODS,
        # the catalog method of each (a config variant's: the method it copies)
        origins={m: CATALOG[m].origin for m in RUN_METHODS},
        pretraining={
            m: {
                "stages": list(CFG.methods[m].stages),
                "manifest": (
                    str(pretrained.manifest_of(ENCODERS[m])) if m in ENCODERS else None
                ),
                "init": CFG.methods[m].init,
            }
            for m in RUN_METHODS
        },
        positive=CFG.label.positive,
        seed=CFG.seed,
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
    script:
        "../scripts/report.py"
