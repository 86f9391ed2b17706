# Evaluation over folds, biomarkers (attribution) per method, figures and the HTML report.
FINAL_PREDICTIONS = [
    f"{R}/models/{method}/fold-{fold}/{stages[-1]}/predictions.tsv"
    for method, stages in RUN_METHODS.items()
    for fold in range(N_FOLDS)
]
# Methods whose models are explained (the majority baseline has nothing to explain).
ATTRIBUTED = [m for m in RUN_METHODS if CATALOG[m].estimator != "majority"]
BIOMARKERS = f"{R}/biomarkers/{{method}}"
GROUND_TRUTH = [f"{R}/demo_bids/ground_truth.json"] if config["input"]["demo"] else []
REPORT_FIGURES = {
    name: f"{R}/reports/figures/{name}.png"
    for name in ("roc", "fold_spread", "fc_difference", "fd_distribution", "exclusions")
}
BIOMARKER_FIGURES = ("top_parcels", "top_edges", "networks")


rule evaluate:
    input:
        FINAL_PREDICTIONS,
    output:
        predictions=f"{R}/eval/predictions.tsv",
        per_fold=f"{R}/eval/metrics_per_fold.tsv",
        summary=report(
            f"{R}/eval/summary.tsv",
            caption="../report/summary.rst",
            category="Evaluation",
        ),
    log:
        f"{R}/logs/evaluate.log",
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule attribution:
    input:
        models=lambda w: [
            f"{R}/models/{w.method}/fold-{fold}/{RUN_METHODS[w.method][-1]}/model.bin"
            for fold in range(N_FOLDS)
        ],
        metrics=lambda w: [
            f"{R}/models/{w.method}/fold-{fold}/{RUN_METHODS[w.method][-1]}/metrics.json"
            for fold in range(N_FOLDS)
        ],
        # per-sample tables a stage writes beside its metrics (M3D-BFS routing): not yet declared
        routing=[],
        caches=lambda w: [
            f"{R}/cache/{m}.parquet" for m in CATALOG.modalities_of(w.method, AVAILABLE)
        ],
        folds=f"{R}/folds/folds.tsv",
        truth=GROUND_TRUTH,
    output:
        importance=report(
            f"{BIOMARKERS}/importance.tsv",
            caption="../report/importance.rst",
            category="Biomarkers",
            subcategory="{method}",
        ),
        edges=f"{BIOMARKERS}/edges.tsv",
        summary=f"{BIOMARKERS}/summary.json",
    log:
        f"{R}/logs/attribution/{{method}}.log",
    conda:
        ENV
    threads: res("default", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("default", "runtime"),
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=config["label"]["positive"],
        seed=config["seed"],
        description=lambda w: CATALOG[w.method].description,
        ig_steps=32,
    script:
        "../scripts/attribution.py"


rule biomarker_figures:
    input:
        summary=f"{BIOMARKERS}/summary.json",
        importance=f"{BIOMARKERS}/importance.tsv",
        edges=f"{BIOMARKERS}/edges.tsv",
    output:
        **{
            name: report(
                f"{BIOMARKERS}/{name}.png",
                caption=f"../report/{name}.rst",
                category="Biomarkers",
                subcategory="{method}",
            )
            for name in BIOMARKER_FIGURES
        },
    log:
        f"{R}/logs/biomarker_figures/{{method}}.log",
    conda:
        ENV
    params:
        atlas=config["atlas"],
    script:
        "../scripts/biomarker_figures.py"


rule report_figures:
    input:
        predictions=f"{R}/eval/predictions.tsv",
        per_fold=f"{R}/eval/metrics_per_fold.tsv",
        qc=f"{R}/qc/qc.tsv",
        fmri_cache=[f"{R}/cache/fmri.parquet"] if "fmri" in AVAILABLE else [],
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
        f"{R}/logs/report_figures.log",
    conda:
        ENV
    params:
        positive=config["label"]["positive"],
        fd_threshold=config["fmri"]["fd_threshold"],
    script:
        "../scripts/report_figures.py"


rule report:
    input:
        summary=f"{R}/eval/summary.tsv",
        per_fold=f"{R}/eval/metrics_per_fold.tsv",
        predictions=f"{R}/eval/predictions.tsv",
        qc=f"{R}/qc/qc.tsv",
        folds=f"{R}/folds/folds.tsv",
        fmri_cache=[f"{R}/cache/fmri.parquet"] if "fmri" in AVAILABLE else [],
        figures=list(REPORT_FIGURES.values()),
        biomarkers=expand(
            f"{BIOMARKERS}/{{file}}",
            method=ATTRIBUTED,
            file=[
                "summary.json",
                "importance.tsv",
                "edges.tsv",
                *(f"{n}.png" for n in BIOMARKER_FIGURES),
            ],
        ),
        truth=GROUND_TRUTH,
    output:
        index=report(
            f"{R}/reports/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
        pages=[
            report(
                f"{R}/reports/{m}.html",
                caption="../report/method_page.rst",
                category="Report",
                subcategory="Methods",
            )
            for m in RUN_METHODS
        ],
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    params:
        skipped=SKIPPED,
        descriptions={m: CATALOG[m].description for m in RUN_METHODS},
        stages=RUN_METHODS,
        positive=config["label"]["positive"],
        seed=config["seed"],
    script:
        "../scripts/report.py"
