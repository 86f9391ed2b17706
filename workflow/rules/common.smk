# The plan, made once when the workflow is parsed: the config (validated, defaults filled in), the
# methods and modalities (with the config's extensions), the discovered inputs, and which methods
# run. Unknown methods or stages, invalid values and the planning check's errors (brainfuse.check)
# stop here, before any job; its table and warnings are printed once.
import functools
import os
import re
import sys

from snakebids import bids, set_bids_spec

from brainfuse.check import check_plan
from brainfuse.config import read_config
from brainfuse.core.errors import ConfigError
from brainfuse.extensions import load_extensions

set_bids_spec("v0_15_0")

CFG = read_config(config)
CATALOG, MODALITIES = load_extensions(CFG.extensions, CFG.variants)
CATALOG.check(CFG.methods)
if unknown := sorted(set(CFG.raw["batching"]) - {"default", *MODALITIES}):
    raise ConfigError(f"batching: {unknown} are not modalities ({sorted(MODALITIES)})")
R = CFG.results_dir
ENV = "../../envs/brainfuse.yaml"
# jobs that re-read the workflow (cluster jobs) neither rescan the inputs nor repeat the table
PLAN = check_plan(CFG, MODALITIES, CATALOG, scan_roots=workflow.is_main_process)
if workflow.is_main_process:
    print(PLAN.text(), file=sys.stderr)
PLAN.raise_errors()
INPUTS = PLAN.inputs
ATLAS = CFG.atlas.name
AVAILABLE = {m for m, n in PLAN.samples.items() if n}
RUN_METHODS, SKIPPED = PLAN.run_methods, PLAN.skipped_methods
# `auto` and leave-site-out resolve to a number of folds from the discovered subjects
N_FOLDS = PLAN.n_folds
BIDS_ENTITY = {"acquisition": "acq"}


wildcard_constraints:
    subject="[a-zA-Z0-9]+",
    session="[a-zA-Z0-9]+",
    task="[a-zA-Z0-9]+",
    acquisition="[a-zA-Z0-9]+",
    run="[0-9]+",
    method="[a-z0-9_]+",
    stage="[a-z0-9_]+",
    fold="[0-9]+",


def out_pattern(input_name, datatype, **fixed):
    """BIDS-derivative output pattern with the wildcards of this input's samples."""
    entities = {BIDS_ENTITY.get(e, e): f"{{{e}}}" for e in INPUTS.entities(input_name)}
    return bids(root=R, datatype=datatype, **entities, **fixed)


def expand_samples(input_name, pattern):
    """Every sample's output path for a pattern made by out_pattern."""
    table = INPUTS.tables[input_name]
    return [
        pattern.format(**row)
        for row in table[INPUTS.entities(input_name)].to_dict("records")
    ]


def chunk_size(input_name):
    """Samples per job of a modality: ``batching.<modality>``, else ``batching.default``."""
    return CFG.raw["batching"].get(input_name, CFG.raw["batching"]["default"])


@functools.cache  # the chunk rules, the cache rules and rule all each ask for them
def sample_chunks(input_name):
    """The modality's samples (rows of its input table) in consecutive chunks, in table order."""
    table = INPUTS.tables[input_name]
    rows = [row for _, row in table.iterrows()]
    size = chunk_size(input_name)
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def chunk_rule(input_name, index):
    """Name of the rule that runs chunk ``index`` of a modality's samples."""
    return f"{input_name}_run_{index}"


def chunk_manifests(input_name):
    """The manifest of every chunk job of a modality."""
    return [
        CHUNK_MANIFEST.format(rule=chunk_rule(input_name, index))
        for index in range(len(sample_chunks(input_name)))
    ]


def missing_sample_outputs():
    """Per-sample outputs missing from a chunk that has finished (its manifest exists).

    The cache jobs wait for the chunks' manifests, not for every sample's files: Snakemake
    resolves each requested file against every rule's outputs, which took most of the planning
    time at a few thousand samples. A file deleted after its chunk ran is then no longer asked
    for by anything, and Snakemake would not remake it; rule all asks for exactly those (a
    stat per file), so the chunk reruns and the cache after it.
    """
    missing = []
    for name in AVAILABLE:
        for index, rows in enumerate(sample_chunks(name)):
            if not os.path.exists(CHUNK_MANIFEST.format(rule=chunk_rule(name, index))):
                continue
            for row in rows:
                paths = sample_paths(name, SAMPLE_OUTPUTS[name], row).values()
                missing += [p for p in paths if not os.path.exists(p)]
    return missing


def sample_entities(input_name, row):
    """The entity values of one sample (a row of its input table), as its wildcards would be."""
    return {e: str(row[e]) for e in INPUTS.entities(input_name)}


def sample_path(input_name, pattern, row):
    """One sample's path for a pattern made by out_pattern."""
    return pattern.format(**sample_entities(input_name, row))


def sample_paths(input_name, patterns, row):
    """One sample's path for each named pattern."""
    return {name: sample_path(input_name, p, row) for name, p in patterns.items()}


def chunk_files(rows, files_of):
    """Named files of a chunk job: ``s{j}_{name}`` for file ``name`` of its j-th sample
    (workflow/scripts/sample_run.py splits them back per sample)."""
    return {
        f"s{j}_{name}": path
        for j, row in enumerate(rows)
        for name, path in files_of(row).items()
    }


def res(group, key):
    """Resource ``key`` of a rule group, falling back to resources.default."""
    return CFG.resource(group, key)


def methods_regex(family):
    """A wildcard constraint matching exactly the names of one family's methods (``sklearn``,
    ``torch``): it sends each method's stages to the rule of its family."""
    return "|".join(re.escape(name) for name in CATALOG.names(family))
