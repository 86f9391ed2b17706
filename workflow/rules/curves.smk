# Learning curves, the `curves` target (part of `all` with curves.in_report): every method refitted on a
# fraction of each fold's training subjects and scored on the same test subjects. A fraction below
# 100 % is a subsampled copy of folds.tsv (brainfuse.curves: stratified, nested, seeded, test
# subjects untouched) that the normal stage jobs train on, under curves/; 100 % is the main run.
rule curve_folds:
    input:
        folds=FOLDS,
        # the labels of the training subjects, for the stratification
        caches=[cache_of(m) for m in sorted(AVAILABLE)],
    output:
        CURVE_FOLDS,
    log:
        f"{LOGS}/curves/folds_frac-{{percent}}.log",
    wildcard_constraints:
        percent=r"[0-9]+(\.[0-9]+)?",
    conda:
        ENV
    params:
        fraction=lambda w: SUBSAMPLED[w.percent],
        seed=CFG.raw["curves"]["seed"],
    script:
        "../scripts/curve_folds.py"


# The stage jobs of train.smk on the subsampled folds; params are replaced as a whole, so they
# repeat train.smk's with the checkpoints of the curves.
use rule train_stage as curve_train_stage with:
    input:
        caches=lambda w: caches_of_method(w.method),
        folds=CURVE_FOLDS,
        previous=curve_previous_stage,
        pretrained=pretrained_manifest,
        participants=[INPUTS.participants] if ADJUSTED else [],
    output:
        model=CURVE_STAGE["model"],
        metrics=CURVE_STAGE["metrics"],
        predictions=CURVE_STAGE["predictions"],
        provenance=CURVE_STAGE["provenance"],
        tables=directory(CURVE_STAGE["tables"]),
    log:
        f"{LOGS}/curves/{{method}}_frac-{{percent}}_fold-{{fold}}_{{stage}}.log",
    benchmark:
        f"{BENCHMARKS}/curves/{{method}}_frac-{{percent}}_fold-{{fold}}_{{stage}}.tsv"
    wildcard_constraints:
        method=methods_regex("torch"),
        percent=r"[0-9]+(\.[0-9]+)?",
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=CFG.label.positive,
        seed=CFG.seed,
        method_params=lambda w: CFG.methods[w.method].params,
        extensions=CFG.extensions,
        variants=CFG.variants,
        checkpoint_dir=lambda w: CURVE_CHECKPOINT_DIR.format(
            method=w.method, percent=w.percent, fold=w.fold, stage=w.stage
        ),
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
        participant_column=CFG.input.participant_column,


use rule fit_baseline as curve_fit_baseline with:
    input:
        caches=lambda w: caches_of_method(w.method),
        folds=CURVE_FOLDS,
        previous=curve_previous_stage,
        participants=[INPUTS.participants] if ADJUSTED else [],
    output:
        model=CURVE_STAGE["model"],
        metrics=CURVE_STAGE["metrics"],
        predictions=CURVE_STAGE["predictions"],
        provenance=CURVE_STAGE["provenance"],
        tables=directory(CURVE_STAGE["tables"]),
    log:
        f"{LOGS}/curves/{{method}}_frac-{{percent}}_fold-{{fold}}_{{stage}}.log",
    benchmark:
        f"{BENCHMARKS}/curves/{{method}}_frac-{{percent}}_fold-{{fold}}_{{stage}}.tsv"
    wildcard_constraints:
        method=methods_regex("sklearn"),
        percent=r"[0-9]+(\.[0-9]+)?",
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=CFG.label.positive,
        seed=CFG.seed,
        method_params=lambda w: CFG.methods[w.method].params,
        extensions=CFG.extensions,
        variants=CFG.variants,
        checkpoint_dir=lambda w: CURVE_CHECKPOINT_DIR.format(
            method=w.method, percent=w.percent, fold=w.fold, stage=w.stage
        ),
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
        participant_column=CFG.input.participant_column,


rule curves_evaluate:
    input:
        predictions=[
            p
            for method in CURVE_METHODS
            for percent in CURVE_FRACTIONS
            for p in curve_predictions(method, percent)
        ],
        folds=[curve_folds_file(percent) for percent in CURVE_FRACTIONS],
        # the subsampled stages' manifests, checked against their folds before scoring
        provenance=[p for percent in SUBSAMPLED for p in curve_manifests(percent)],
    output:
        table=CURVES["table"],
        figure=report(
            CURVES["figure"], caption="../report/curves.rst", category="Evaluation"
        ),
    log:
        f"{LOGS}/curves/evaluate.log",
    conda:
        ENV
    params:
        manifests={percent: curve_manifests(percent) for percent in SUBSAMPLED},
        folds_files={percent: curve_folds_file(percent) for percent in SUBSAMPLED},
        # one point per method and fraction: its folds file and last-stage predictions
        points=[
            {
                "method": method,
                "family": curve_family(method),
                "fraction": fraction,
                "folds_path": curve_folds_file(percent),
                "predictions": curve_predictions(method, percent),
            }
            for method in CURVE_METHODS
            for percent, fraction in CURVE_FRACTIONS.items()
        ],
    script:
        "../scripts/curves.py"


rule curves:
    input:
        **CURVES,
