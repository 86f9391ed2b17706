# Input discovery, output name patterns and resources, shared by every rule file.
import re

from snakebids import bids, set_bids_spec

from brainfuse.inputs import discover
from brainfuse.methods.catalog import METHODS, modalities_of, plan
from brainfuse.modalities import builtin_modalities

set_bids_spec("v0_15_0")

R = config["results_dir"]
ENV = "../../envs/brainfuse.yaml"
MODALITIES = builtin_modalities()
INPUTS = discover(config, MODALITIES)
ATLAS = config["atlas"]["name"]
AVAILABLE = {m for m, t in INPUTS.tables.items() if len(t)}
RUN_METHODS, SKIPPED = plan(config["methods"], AVAILABLE)
N_FOLDS = config["cv"]["n_folds"]
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


def res(section, key):
    """Resource ``key`` of a rule group, falling back to resources.default."""
    resources = config["resources"]
    return resources.get(section, {}).get(key, resources["default"].get(key))


def previous_stage(w):
    stages = RUN_METHODS[w.method]
    i = stages.index(w.stage)
    return (
        []
        if i == 0
        else [f"{R}/models/{w.method}/fold-{w.fold}/{stages[i - 1]}/model.bin"]
    )


def methods_regex(family):
    """A wildcard constraint matching exactly the names of one family's methods (``sklearn``,
    ``torch``): it sends each method's stages to the rule of its family."""
    names = sorted(name for name, spec in METHODS.items() if spec.family == family)
    return "|".join(re.escape(name) for name in names)
