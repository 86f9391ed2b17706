# The plan, made once when the workflow is parsed: the config (validated, defaults filled in), the
# methods and modalities (with the config's extensions), the discovered inputs, and which methods
# run. Unknown methods or stages and invalid values stop here, before any job.
import re

from snakebids import bids, set_bids_spec

from brainfuse.config import read_config
from brainfuse.extensions import load_extensions
from brainfuse.folds import planned_n_folds
from brainfuse.inputs import discover, planning_subjects

set_bids_spec("v0_15_0")

CFG = read_config(config)
CATALOG, MODALITIES = load_extensions(CFG.extensions)
CATALOG.check(CFG.methods)
R = CFG.results_dir
ENV = "../../envs/brainfuse.yaml"
INPUTS = discover(CFG.raw, MODALITIES)
ATLAS = CFG.atlas.name
AVAILABLE = {m for m, t in INPUTS.tables.items() if len(t)}
RUN_METHODS, SKIPPED = CATALOG.plan(CFG.methods, AVAILABLE)
# `auto` and leave-site-out resolve to a number of folds from the discovered subjects
N_FOLDS = planned_n_folds(CFG.raw["cv"], planning_subjects(INPUTS, CFG.raw))
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
