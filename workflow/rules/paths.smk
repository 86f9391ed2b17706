# Every file the workflow writes, named once. Rule files and input functions use these names;
# a rule's inputs are always outputs named here (or discovered input files), so every file a
# job reads is declared.

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
# the per-sample deliverable of each modality (rule all asks for it)
PER_SAMPLE_OUTPUTS = {
    name: SAMPLE_OUTPUTS[name][modality.cache_inputs["data"]]
    for name, modality in MODALITIES.items()
}
SAMPLE_LOG = {
    name: out_pattern(name, "logs", suffix=f"{name}.log") for name in MODALITIES
}
# one per chunk job of a modality's samples (rule {name}_run_{chunk})
CHUNK_BENCHMARK = f"{R}/benchmarks/{{rule}}.tsv"

# dataset level
CACHE = f"{R}/cache/{{modality}}.parquet"
MODALITY_QC = f"{R}/qc/{{modality}}_qc.tsv"
QC_TABLE = f"{R}/qc/qc.tsv"
FOLDS = f"{R}/folds/folds.tsv"
FOLDS_SUMMARY = f"{R}/folds/folds.json"
DATASET_DESCRIPTION = f"{R}/dataset_description.json"
DEMO_ROOT = f"{R}/demo_bids"
GROUND_TRUTH = f"{DEMO_ROOT}/ground_truth.json"

# one stage of one method on one fold; `tables` holds a stage's extra per-sample tables
STAGE_DIR = f"{R}/models/{{method}}/fold-{{fold}}/{{stage}}"
STAGE = {
    "model": f"{STAGE_DIR}/model.bin",
    "metrics": f"{STAGE_DIR}/metrics.json",
    "predictions": f"{STAGE_DIR}/predictions.tsv",
    "tables": f"{STAGE_DIR}/tables",
}
# Lightning's resumable checkpoints: deliberately not a declared output
CHECKPOINT_DIR = f"{R}/checkpoints/{{method}}/fold-{{fold}}/{{stage}}"

# evaluation, biomarkers, report
EVAL = {
    "predictions": f"{R}/eval/predictions.tsv",
    "per_fold": f"{R}/eval/metrics_per_fold.tsv",
    "summary": f"{R}/eval/summary.tsv",
    "deltas": f"{R}/eval/deltas.tsv",
    "per_site": f"{R}/eval/per_site.tsv",
    "diagnostics": f"{R}/eval/diagnostics.tsv",
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


def stage_before_final(method):
    """The model.bin of the stage before the last, for every fold (empty for one stage)."""
    stages = RUN_METHODS[method]
    if len(stages) < 2:
        return []
    return [stage_file("model", method, fold, stages[-2]) for fold in range(N_FOLDS)]


def previous_stage(w):
    """The previous stage's model.bin of a stage job (none for the first stage)."""
    stages = RUN_METHODS[w.method]
    i = stages.index(w.stage)
    return [] if i == 0 else [stage_file("model", w.method, w.fold, stages[i - 1])]
