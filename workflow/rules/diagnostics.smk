# Leakage and shortcut diagnostics: site, motion and label probes on each feature set the
# baselines use, before and after in-fold ComBat (brainfuse.diagnostics). Cheap: sklearn only.
DEFAULT_FEATURE_SETS = {"fc": "fmri", "eeg": "eeg", "sc": "sc"}
# feature set -> the modality it reads: every available modality's default set, plus the sets
# of the configured one-modality baselines (tangent, an extension's "module:function")
DIAGNOSED = {name: m for name, m in DEFAULT_FEATURE_SETS.items() if m in AVAILABLE} | {
    CATALOG[m].features: CATALOG[m].modalities[0]
    for m in RUN_METHODS
    if CATALOG[m].family == "sklearn"
    and CATALOG[m].estimator != "majority"
    and len(CATALOG[m].modalities) == 1
    and CATALOG[m].modalities[0] in AVAILABLE
}
DIAGNOSED_MODALITIES = sorted(set(DIAGNOSED.values()))


rule diagnostics:
    input:
        caches=[cache_of(m) for m in DIAGNOSED_MODALITIES],
        folds=FOLDS,
        participants=[INPUTS.participants],
    output:
        EVAL["diagnostics"],
    log:
        f"{LOGS}/diagnostics.log",
    conda:
        ENV
    resources:
        mem_mb=res("default", "mem_mb"),
        runtime=res("default", "runtime"),
    params:
        modalities=DIAGNOSED_MODALITIES,
        feature_sets=DIAGNOSED,
        harmonise=CFG.raw["harmonise"],
        confounds=list(CFG.confounds),
        participant_column=CFG.input.participant_column,
        seed=CFG.seed,
    script:
        "../scripts/diagnostics.py"
