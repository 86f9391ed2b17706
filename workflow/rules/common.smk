# The plan, made once when the workflow is parsed: the config (validated, defaults filled in), the
# methods and modalities (with the config's extensions), the discovered inputs, and which methods
# run. Unknown methods or stages, invalid values and the planning check's errors (brainfuse.check)
# stop here, before any job; its table and warnings are printed once.
import re
import sys

from snakebids import bids, set_bids_spec

from brainfuse.check import check_plan
from brainfuse.config import read_config
from brainfuse.extensions import load_extensions

set_bids_spec("v0_15_0")

CFG = read_config(config)
CATALOG, MODALITIES = load_extensions(CFG.extensions)
CATALOG.check(CFG.methods)
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


def entities_of(input_name, wildcards):
    """The entity values of the sample named by ``wildcards``."""
    return {e: getattr(wildcards, e) for e in INPUTS.entities(input_name)}


def res(group, key):
    """Resource ``key`` of a rule group, falling back to resources.default."""
    return CFG.resource(group, key)


def methods_regex(family):
    """A wildcard constraint matching exactly the names of one family's methods (``sklearn``,
    ``torch``): it sends each method's stages to the rule of its family."""
    return "|".join(re.escape(name) for name in CATALOG.names(family))
