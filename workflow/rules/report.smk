# Evaluation over folds and the HTML report.
FINAL_PREDICTIONS = [
    f"{R}/models/{method}/fold-{fold}/{stages[-1]}/predictions.tsv"
    for method, stages in RUN_METHODS.items()
    for fold in range(N_FOLDS)
]


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


rule report:
    input:
        summary=f"{R}/eval/summary.tsv",
        per_fold=f"{R}/eval/metrics_per_fold.tsv",
        qc=f"{R}/qc/qc.tsv",
        folds=f"{R}/folds/folds.tsv",
        fmri_cache=[f"{R}/cache/fmri.parquet"] if "fmri" in AVAILABLE else [],
    output:
        report(
            f"{R}/reports/index.html", caption="../report/index.rst", category="Report"
        ),
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    params:
        skipped=SKIPPED,
        descriptions={m: METHODS[m].description for m in RUN_METHODS},
    script:
        "../scripts/report.py"
