from brainfuse.methods import pretrained

# Every file the workflow writes, named once. Rule files and input functions use these names;
# a rule's inputs are always outputs named here (or discovered input files), so every file a
# job reads is declared.
from pathlib import Path

from brainfuse.curves import curve_methods, fraction_label

# per-sample derivatives: modality -> output name -> pattern with the sample's wildcards;
# outputs in the `figures` folder are QC pictures, made only under qc.run_figures
SAMPLE_OUTPUTS = {
    name: {
        output: out_pattern(name, datatype, **entities)
        for output, (datatype, entities) in modality.sample_outputs(ATLAS).items()
        if datatype != "figures" or CFG.raw["qc"]["run_figures"]
    }
    for name, modality in MODALITIES.items()
}
SAMPLE_LOG = {
    name: out_pattern(name, "logs", suffix=f"{name}.log") for name in MODALITIES
}
# one per chunk job of a modality's samples (rule {name}_run_{chunk}); the manifest, written
# when every sample of the chunk is done, is what the modality's cache job waits for
CHUNK_BENCHMARK = f"{R}/benchmarks/{{rule}}.tsv"
CHUNK_MANIFEST = f"{R}/chunks/{{rule}}.json"

# dataset level
CACHE = f"{R}/cache/{{modality}}.parquet"
MODALITY_QC = f"{R}/qc/{{modality}}_qc.tsv"
QC_TABLE = f"{R}/qc/qc.tsv"
FOLDS = f"{R}/folds/folds.tsv"
FOLDS_SUMMARY = f"{R}/folds/folds.json"
DATASET_DESCRIPTION = f"{R}/dataset_description.json"
DEMO_ROOT = f"{R}/demo_bids"
GROUND_TRUTH = f"{DEMO_ROOT}/ground_truth.json"

# one stage of one method on one fold; `tables` holds a stage's extra per-sample tables,
# `provenance` the subjects each role of the stage read (brainfuse.provenance)
STAGE_DIR = f"{R}/models/{{method}}/fold-{{fold}}/{{stage}}"
STAGE = {
    "model": f"{STAGE_DIR}/model.bin",
    "metrics": f"{STAGE_DIR}/metrics.json",
    "predictions": f"{STAGE_DIR}/predictions.tsv",
    "tables": f"{STAGE_DIR}/tables",
    "provenance": f"{STAGE_DIR}/provenance.json",
}
# Lightning's resumable checkpoints: deliberately not a declared output
CHECKPOINT_DIR = f"{R}/checkpoints/{{method}}/fold-{{fold}}/{{stage}}"

# a method's pre-training run once on a corpus (methods.<m>.pretrain_on), for every fold
PRETRAINED_DIR = f"{R}/pretrained/{{method}}"
PRETRAINED = {
    "encoder": f"{PRETRAINED_DIR}/{pretrained.ENCODER}",
    "manifest": f"{PRETRAINED_DIR}/{pretrained.MANIFEST}",
}
PRETRAIN_CHECKPOINT_DIR = f"{R}/checkpoints/{{method}}/pretrained"
# method -> its corpus caches (modality -> path)
# the demo's unlabelled corpus (workflow/rules/demo.smk), for pretrain_on: demo_corpus
DEMO_CORPUS = f"{R}/demo_corpus/fmri.parquet"
CORPUS = {
    m: pretrained.method_corpus(
        CATALOG[m], CFG.methods[m].pretrain_on, DEMO_CORPUS if CFG.input.demo else None
    )
    for m in RUN_METHODS
    if CFG.methods[m].pretrain_on
}
# every subject the study's inputs hold (a corpus must hold none of them)
STUDY_SUBJECTS = sorted(
    {str(s) for table in INPUTS.tables.values() for s in table.get("subject", [])}
)
# method -> the encoder.bin every fold's first stage starts from (pretrain_on or init)
ENCODERS = {
    **{m: PRETRAINED["encoder"].format(method=m) for m in CORPUS},
    **{m: CFG.methods[m].init for m in RUN_METHODS if CFG.methods[m].init},
}

# evaluation, biomarkers, report
EVAL = {
    "predictions": f"{R}/eval/predictions.tsv",
    "per_fold": f"{R}/eval/metrics_per_fold.tsv",
    "summary": f"{R}/eval/summary.tsv",
    "deltas": f"{R}/eval/deltas.tsv",
    "per_site": f"{R}/eval/per_site.tsv",
    "diagnostics": f"{R}/eval/diagnostics.tsv",
}
# learning curves (the opt-in `curves` target): each fraction's subsampled folds, and the stage
# jobs of every method on them, under curves/; the table beside the other evaluation tables
CURVES_DIR = f"{R}/curves"
CURVE_FOLDS = f"{CURVES_DIR}/folds/frac-{{percent}}.tsv"
CURVE_STAGE_DIR = (
    f"{CURVES_DIR}/models/{{method}}/frac-{{percent}}/fold-{{fold}}/{{stage}}"
)
CURVE_STAGE = {
    kind: path.replace(STAGE_DIR, CURVE_STAGE_DIR) for kind, path in STAGE.items()
}
CURVE_CHECKPOINT_DIR = (
    f"{CURVES_DIR}/checkpoints/{{method}}/frac-{{percent}}/fold-{{fold}}/{{stage}}"
)
CURVES = {
    "table": f"{R}/eval/curves.tsv",
    "figure": f"{R}/reports/figures/curves.png",
}
BIOMARKERS = f"{R}/biomarkers/{{method}}"
BIOMARKER_TABLES = {
    "importance": f"{BIOMARKERS}/importance.tsv",
    "edges": f"{BIOMARKERS}/edges.tsv",
    "summary": f"{BIOMARKERS}/summary.json",
}
BIOMARKER_FIGURES = {
    name: f"{BIOMARKERS}/{name}.png"
    for name in ("top_parcels", "top_edges", "networks")
}
REPORT_FIGURES = {
    name: f"{R}/reports/figures/{name}.png"
    for name in ("roc", "fold_spread", "fc_difference", "fd_distribution", "exclusions")
}
REPORT_INDEX = f"{R}/reports/index.html"
REPORT_PAGE = f"{R}/reports/{{method}}.html"
LOGS = f"{R}/logs"
BENCHMARKS = f"{R}/benchmarks"


def cache_of(modality):
    return CACHE.format(modality=modality)


def caches_of_method(method):
    """The caches a method reads, in the order of its modalities."""
    return [cache_of(m) for m in CATALOG.modalities_of(method, AVAILABLE)]


def stage_file(kind, method, fold, stage):
    return STAGE[kind].format(method=method, fold=fold, stage=stage)


def final_stage_files(kind, method):
    """A file of the method's last configured stage, for every fold in fold order."""
    return [
        stage_file(kind, method, fold, RUN_METHODS[method][-1])
        for fold in range(N_FOLDS)
    ]


def all_stage_files(kind):
    """A file of every configured stage of every method on every fold."""
    return [
        stage_file(kind, method, fold, stage)
        for method, stages in RUN_METHODS.items()
        for fold in range(N_FOLDS)
        for stage in stages
    ]


def previous_model(method, fold, stage):
    """The model.bin a stage starts from: the previous stage's, the encoder pre-trained once
    for the first stage (pretrain_on, init), or none."""
    stages = RUN_METHODS[method]
    i = stages.index(stage)
    if i > 0:
        return [stage_file("model", method, fold, stages[i - 1])]
    return [ENCODERS[method]] if method in ENCODERS else []


def stage_before_final(method):
    """The model.bin the last stage starts from, for every fold (empty when none)."""
    return [
        path
        for fold in range(N_FOLDS)
        for path in previous_model(method, fold, RUN_METHODS[method][-1])
    ]


def previous_stage(w):
    """The model.bin a stage job starts from (none for a first stage trained from scratch)."""
    return previous_model(w.method, w.fold, w.stage)


def pretrained_manifest(w):
    """The manifest.json of the encoder a first stage starts from (pretrain_on, init)."""
    if w.method not in ENCODERS or RUN_METHODS[w.method].index(w.stage) > 0:
        return []
    return [str(pretrained.manifest_of(ENCODERS[w.method]))]


# The learning curves' plan (workflow/rules/curves.smk): fractions by their path label, the ones
# below 100 % that have their own folds and stage jobs, and the methods refitted.
CURVE_FRACTIONS = {
    fraction_label(f): f for f in sorted(set(CFG.raw["curves"]["fractions"]))
}
SUBSAMPLED = {percent: f for percent, f in CURVE_FRACTIONS.items() if f < 1}
if CFG.input.demo and CFG.raw["curves"]["methods"] is None:
    # the demo's short list: those of its methods that this config runs
    CURVE_METHODS = [m for m in CFG.raw["curves"]["demo_methods"] if m in RUN_METHODS]
else:
    CURVE_METHODS = curve_methods(
        CFG.raw["curves"]["methods"], list(RUN_METHODS), CATALOG.names()
    )
# The report shows the curves when curves.in_report asks the default target for them, else once
# `snakemake curves` made them (the report still builds without them).
CURVES_IN_DEFAULT_RUN = CFG.raw["curves"]["in_report"] is True or (
    CFG.raw["curves"]["in_report"] == "demo" and CFG.input.demo
)
CURVES_IN_REPORT = (
    list(CURVES.values())
    if CURVES_IN_DEFAULT_RUN or Path(CURVES["table"]).exists()
    else []
)


def curve_stage_file(kind, method, percent, fold, stage):
    return CURVE_STAGE[kind].format(
        method=method, percent=percent, fold=fold, stage=stage
    )


def curve_previous_stage(w):
    """The previous stage's model.bin of a curve stage job, at the same fraction."""
    stages = RUN_METHODS[w.method]
    i = stages.index(w.stage)
    # the encoder pre-trained once (pretrain_on, init) is the same at every fraction
    if i == 0:
        return [ENCODERS[w.method]] if w.method in ENCODERS else []
    return [curve_stage_file("model", w.method, w.percent, w.fold, stages[i - 1])]


def curve_predictions(method, percent):
    """The last stage's predictions of a method at a fraction, for every fold in order."""
    if percent not in SUBSAMPLED:
        return final_stage_files("predictions", method)
    last = RUN_METHODS[method][-1]
    return [
        curve_stage_file("predictions", method, percent, fold, last)
        for fold in range(N_FOLDS)
    ]


def curve_manifests(percent):
    """The provenance.json of every stage of every curve method at a subsampled fraction."""
    return [
        curve_stage_file("provenance", method, percent, fold, stage)
        for method in CURVE_METHODS
        for fold in range(N_FOLDS)
        for stage in RUN_METHODS[method]
    ]


def curve_folds_file(percent):
    return CURVE_FOLDS.format(percent=percent) if percent in SUBSAMPLED else FOLDS


def curve_family(method):
    return "baseline" if CATALOG[method].family == "sklearn" else "deep"
