"""The method catalog: which methods run on the modalities a dataset has, config checks and
parameters; labels from participants.tsv or a BIDS entity."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from brainfuse.core.errors import ConfigError
from brainfuse.core.samples import attach_labels
from brainfuse.methods.catalog import Catalog, MethodSpec, default_catalog
from brainfuse.methods.ssl.specs import PAPER_PARAMS

CATALOG = default_catalog()


def test_plan_skips_methods_without_their_modality():
    methods = {m: {"stages": ["fit"]} for m in ("majority", "logreg_fc", "logreg_eeg", "logreg_sc")}
    run, skipped = CATALOG.plan(methods, {"eeg"})
    assert set(run) == {"majority", "logreg_eeg"}
    assert "fmri" in skipped["logreg_fc"] and "sc" in skipped["logreg_sc"]
    assert CATALOG.modalities_of("majority", {"eeg"}) == ("eeg",)
    assert CATALOG.modalities_of("majority", {"sc", "fmri"}) == ("fmri",)


def test_fusion_needs_both_modalities():
    stages = {"m3d_bfs": {"stages": ["encoders", "pretrain", "finetune"]}}
    run, skipped = CATALOG.plan(stages, {"fmri"})
    assert not run and "sc" in skipped["m3d_bfs"]


def test_check_refuses_unknown_stage():
    unknown = r"methods\.logreg_fc\.stages: unknown stage 'fitt'"
    with pytest.raises(ConfigError, match=unknown) as err:
        CATALOG.check({"logreg_fc": {"stages": ["fitt"]}})
    assert "logreg_fc has stages ['fit']" in str(err.value)
    with pytest.raises(ConfigError, match="not in the order"):
        CATALOG.check({"mcsp": {"stages": ["finetune", "pretrain"]}})
    CATALOG.check({"mcsp_fmri_only": {"stages": ["pretrain", "finetune"]}})  # a prefix is fine
    typed = {"logreg_fc": SimpleNamespace(stages=("fitt",))}  # as brainfuse.config reads it
    with pytest.raises(ConfigError, match=unknown):
        CATALOG.check(typed)


def test_check_refuses_unknown_method():
    with pytest.raises(ConfigError, match=r"methods\.logreg_fcc: unknown method") as err:
        CATALOG.check({"logreg_fcc": {"stages": ["fit"]}})
    assert "'logreg_fc'" in str(err.value) and "'gcn_fc'" in str(err.value)
    with pytest.raises(KeyError, match="unknown method 'logreg_fcc'; known"):
        CATALOG["logreg_fcc"]


def test_catalog_takes_methods_from_outside():
    catalog = default_catalog()
    spec = MethodSpec(
        name="toy",
        family="torch",
        modalities=("fmri",),
        stages=("train",),
        description="a toy",
        params={"hidden": 8, "per_stage": {"train": {"epochs": 2}}},
        plugin="my_pkg.toy",
    )
    catalog.add(spec)
    assert "toy" in catalog and "toy" not in CATALOG and "toy" in catalog.names("torch")
    resolved = catalog.params("toy", {"lr": 0.5}, "train")
    assert resolved["hidden"] == 8 and resolved["epochs"] == 2 and resolved["lr"] == 0.5
    assert resolved["batch_size"] == 8  # the torch family's common parameters
    with pytest.raises(ValueError, match="already in the catalog"):
        catalog.add(spec)
    resolved["augment"]["x"] = 1  # callers own their copy
    assert catalog.params("toy")["augment"] == {} and len(Catalog()) == 0


def test_params_are_those_recorded():
    """Every torch method's resolved parameters, per stage, with and without overrides, equal
    those recorded in tests/data/method_params.json (values and key order): first those of the
    former ``torch_registry.method_params``, since then the deliberate changes of
    docs/methods_deep.md (graph encoders' defaults, ``min_val_subjects``). A default changes
    only together with that file."""
    expected = json.loads((Path(__file__).parent / "data" / "method_params.json").read_text())
    assert {key.split("/")[0] for key in expected} == set(CATALOG.names("torch"))
    for key, want in expected.items():
        method, stage, *kind = key.split("/")
        stage = stage or None
        if kind == ["override"]:
            overrides = {"stages": [stage], "lr": 0.5, "per_stage": {stage: {"epochs": 3}}}
        elif kind == ["paper"]:
            overrides = PAPER_PARAMS[method]
        else:
            overrides = None
        got = json.loads(json.dumps(CATALOG.params(method, overrides, stage)))
        assert got == want and list(got) == list(want), key


def test_labels_from_column_or_entity():
    participants = pd.DataFrame(
        {"group": ["patient", "control"], "site": ["A", "B"]},
        index=pd.Index(["01", "02"], name="subject"),
    )
    samples = pd.DataFrame(
        {"subject": ["01", "01", "02", "03"], "task": ["rest", "nback", "rest", "rest"]}
    )
    by_column = attach_labels(samples, participants, {"column": "group"})
    assert by_column["label"].tolist()[:3] == ["patient", "patient", "control"]
    assert pd.isna(by_column["label"].iloc[3])  # unknown subject: excluded later with a reason
    by_task = attach_labels(samples, participants, {"column": "group", "entity": "task"})
    assert by_task["label"].tolist() == ["rest", "nback", "rest", "rest"]
    assert by_task["site"].tolist() == ["A", "A", "B", "n/a"]
