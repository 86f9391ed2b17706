# One job per method x stage x fold; a stage takes the previous stage's model as input.
# Two rules write the same outputs, told apart by the method: `train_stage` trains the torch
# methods (Lightning; the rule that asks for a GPU), `fit_baseline` fits the scikit-learn
# baselines (CPU only, so a cluster profile never gives them a GPU). Both run the same script,
# with the in-fold harmonisation and confound keys: the baselines adjust their features, the
# torch methods their FC/SC matrices; the participants table is an input only when those keys
# read it.
ADJUSTED = CFG.harmonise.method != "none" or bool(CFG.confounds)


rule train_stage:
    input:
        caches=lambda w: caches_of_method(w.method),
        folds=FOLDS,
        previous=previous_stage,
        pretrained=pretrained_manifest,
        participants=[INPUTS.participants] if ADJUSTED else [],
    output:
        model=STAGE["model"],
        metrics=STAGE["metrics"],
        predictions=STAGE["predictions"],
        tables=directory(STAGE["tables"]),
        provenance=STAGE["provenance"],
    log:
        f"{LOGS}/train/{{method}}_fold-{{fold}}_{{stage}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{method}}_fold-{{fold}}_{{stage}}.tsv"
    wildcard_constraints:
        method=methods_regex("torch"),
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        modalities=lambda w: list(CATALOG.modalities_of(w.method, AVAILABLE)),
        positive=CFG.label.positive,
        seed=CFG.seed,
        method_params=lambda w: CFG.methods[w.method].params,
        extensions=CFG.extensions,
        variants=CFG.variants,
        checkpoint_dir=lambda w: CHECKPOINT_DIR.format(
            method=w.method, fold=w.fold, stage=w.stage
        ),
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
        participant_column=CFG.input.participant_column,
    script:
        "../scripts/train_stage.py"


# The baselines: the same job without `gpu` (resources are replaced as a whole here) and without
# a pre-trained encoder (input is replaced as a whole too).


use rule train_stage as fit_baseline with:
    input:
        caches=lambda w: caches_of_method(w.method),
        folds=FOLDS,
        previous=previous_stage,
        participants=[INPUTS.participants] if ADJUSTED else [],
    wildcard_constraints:
        method=methods_regex("sklearn"),
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),


# A method's pre-training run once on an unlabelled corpus (methods.<m>.pretrain_on), not per
# fold: every fold's next stage starts from its encoder.bin (previous_stage).


rule pretrain_corpus:
    input:
        corpus=lambda w: list(CORPUS[w.method].values()),
    output:
        encoder=PRETRAINED["encoder"],
        manifest=PRETRAINED["manifest"],
    log:
        f"{LOGS}/train/{{method}}_pretrained.log",
    benchmark:
        f"{BENCHMARKS}/train/{{method}}_pretrained.tsv"
    wildcard_constraints:
        # no method when no corpus is configured: a pattern that matches nothing
        method="|".join(re.escape(m) for m in CORPUS) or "(?!)",
    conda:
        ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        modalities=lambda w: list(CORPUS[w.method]),
        source=lambda w: CFG.methods[w.method].pretrain_on,
        seed=CFG.seed,
        method_params=lambda w: CFG.methods[w.method].params,
        extensions=CFG.extensions,
        variants=CFG.variants,
        checkpoint_dir=lambda w: PRETRAIN_CHECKPOINT_DIR.format(method=w.method),
        # checked again here: the planning check cannot read a corpus that a rule makes
        study_subjects=STUDY_SUBJECTS,
    script:
        "../scripts/pretrain_corpus.py"
