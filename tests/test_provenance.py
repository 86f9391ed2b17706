"""Provenance manifests: each stage lists the subjects each role read, and no test subject of a
fold reaches a stage of that fold (brainfuse.provenance)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainfuse.core.provenance import config_hash
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.baselines.fit import fit_baseline
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch.runner import run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.provenance import (
    FORMAT,
    ROLES,
    LeakageError,
    check_manifests,
    check_provenance,
)

torch.set_num_threads(1)

CATALOG = default_catalog()
#: A short gcn_fc schedule (a few seconds on one core).
GCN = {"epochs": 3, "batch_size": 4, "num_threads": 1}
#: A tiny BrainMAE pre-training stage (as in test_ssl_methods).
MAE = {
    "num_threads": 1,
    "d_model": 16,
    "d_embed": 8,
    "n_heads": 2,
    "n_layers": 1,
    "dim_feedforward": 32,
    "length": 60,
    "segment": 10,
    "decoder_dim": 8,
    "decoder_heads": 2,
    "per_stage": {"pretrain": {"epochs": 2, "batch_size": 8}},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_synthetic_caches(
        tmp_path_factory.mktemp("caches"), n_subjects=24, n_nodes=20, n_timepoints=(70, 90)
    )


@pytest.fixture(scope="module")
def folds(data) -> pd.DataFrame:
    return read_folds(data["folds"])


def _request(data, out: Path, method: str, stage: str, params: dict, **kw) -> StageRequest:
    return StageRequest(
        method=method,
        stage=stage,
        fold=1,
        cache_paths={"fmri": data["fmri"]},
        folds_path=data["folds"],
        positive="patient",
        seed=0,
        outputs=StageOutputs(
            str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
        ),
        params=params,
        checkpoint_dir=str(out / "ckpt"),
        **kw,
    )


def _manifest(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def supervised(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gcn")
    run_torch_stage(_request(data, out, "gcn_fc", "fit", GCN), CATALOG)
    return _manifest(out)


def test_torch_stage_manifest_lists_the_fold_roles(supervised, data, folds):
    m = supervised
    role = {r: subjects_of(folds, 1, r) for r in ("train", "val", "test")}
    assert m["format"] == FORMAT and (m["method"], m["stage"], m["fold"]) == ("gcn_fc", "fit", 1)
    assert set(m["subjects"]) == set(ROLES)
    # fewer validation subjects than min_val_subjects: they train with the training subjects
    assert len(role["val"]) < CATALOG.params("gcn_fc", GCN, "fit")["min_val_subjects"]
    assert set(m["subjects"]["fit"]) == role["train"] | role["val"]
    assert m["subjects"]["validation"] == []
    assert set(m["subjects"]["test"]) == role["test"]
    assert m["subjects"]["unlabelled_pretraining"] == []
    assert not (set(m["subjects"]["fit"]) | set(m["subjects"]["validation"])) & role["test"]
    assert m["inputs"]["caches"]["fmri"]["sha256"] == _sha256(data["fmri"])
    assert m["inputs"]["folds"]["sha256"] == _sha256(data["folds"])
    assert m["inputs"]["previous"] is None and m["adjustment"] is None
    params = CATALOG.params("gcn_fc", GCN, "fit")
    for key in ("num_threads", "num_workers", "keep_checkpoints", "checkpoint_every_n_steps"):
        params.pop(key)  # operational: they do not change what is trained
    assert m["config_hash"] == config_hash({"params": params, "seed": 0})
    check_provenance(m, folds)


def test_pretraining_manifest_lists_what_it_read(data, folds, tmp_path):
    out = tmp_path / "pretrain"
    run_torch_stage(_request(data, out, "brainmae", "pretrain", MAE), CATALOG)
    m = _manifest(out)
    # the 4 validation subjects (< min_val_subjects) train with the training subjects
    train = subjects_of(folds, 1, "train") | subjects_of(folds, 1, "val")
    test = subjects_of(folds, 1, "test")
    assert set(m["subjects"]["unlabelled_pretraining"]) == train and not train & test
    assert set(m["subjects"]["fit"]) == train  # the linear probe
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pretrain"] == len(train)  # one run per subject
    check_provenance(m, folds)

    # A following stage records the model it started from.
    finetune = tmp_path / "finetune"
    params = {**MAE, "per_stage": {"finetune": {"epochs": 2}}}
    previous = str(out / "model.bin")
    run_torch_stage(
        _request(data, finetune, "brainmae", "finetune", params, previous=previous), CATALOG
    )
    chained = _manifest(finetune)
    assert chained["inputs"]["previous"] == {"path": previous, "sha256": _sha256(previous)}
    assert chained["subjects"]["unlabelled_pretraining"] == []
    assert check_manifests([out / "provenance.json", finetune / "provenance.json"], data["folds"])


def test_harmonised_baseline_fits_on_training_subjects_only(data, folds, tmp_path):
    rng = np.random.default_rng(0)
    subjects = sorted(set(folds["subject"]))
    participants = tmp_path / "participants.tsv"
    pd.DataFrame(
        {
            "participant_id": [f"sub-{s}" for s in subjects],
            "age": rng.uniform(8, 40, len(subjects)).round(1),
            "sex": rng.choice(["F", "M"], len(subjects)),
        }
    ).to_csv(participants, sep="\t", index=False)
    out = tmp_path / "logreg"
    request = _request(
        data,
        out,
        "logreg_fc",
        "fit",
        {
            "harmonise": {
                "method": "combat",
                "batch": "site",
                "covariates": ["age", "sex"],
                "min_site_size": 3,
            },
            "confounds": ["age", "sex"],
            "participants": str(participants),
            "participant_column": "participant_id",
        },
    )
    fit_baseline(request, CATALOG["logreg_fc"])
    m = _manifest(out)
    train = sorted(subjects_of(folds, 1, "train"))
    assert m["adjustment"]["harmonise"] == "combat" and m["adjustment"]["confounds"] == [
        "age",
        "sex",
    ]
    assert m["adjustment"]["fit_subjects"] == train == m["subjects"]["fit"]
    assert m["adjustment"]["combat"]["fitted"]
    assert set(m["subjects"]["test"]) == subjects_of(folds, 1, "test")
    assert m["inputs"]["participants"]["sha256"] == _sha256(str(participants))
    check_provenance(m, folds)


@pytest.mark.parametrize("role", ["fit", "validation", "unlabelled_pretraining", "adjustment"])
def test_planted_leak_is_caught(supervised, folds, role, tmp_path):
    leaked = copy.deepcopy(supervised)
    intruder = sorted(subjects_of(folds, 1, "test"))[0]
    if role == "adjustment":
        leaked["adjustment"] = {"harmonise": "combat", "fit_subjects": [intruder]}
    else:
        leaked["subjects"][role].append(intruder)
    with pytest.raises(LeakageError, match=intruder):
        check_provenance(leaked, folds)
    path = tmp_path / "provenance.json"
    path.write_text(json.dumps(leaked))
    with pytest.raises(LeakageError, match="provenance.json"):
        check_manifests([path], folds_path=_folds_file(folds, tmp_path))


def test_scoring_a_non_test_subject_is_caught(supervised, folds):
    wrong = copy.deepcopy(supervised)
    wrong["subjects"]["test"].append(sorted(subjects_of(folds, 1, "train"))[0])
    with pytest.raises(LeakageError, match="not test subjects"):
        check_provenance(wrong, folds)


def test_a_test_subject_of_another_fold_is_no_leak(supervised, folds):
    other = subjects_of(folds, 0, "test") - subjects_of(folds, 1, "test")
    assert other <= set(supervised["subjects"]["fit"]) | set(supervised["subjects"]["validation"])
    check_provenance(supervised, folds)


def _folds_file(folds: pd.DataFrame, tmp_path: Path) -> str:
    path = tmp_path / "folds.tsv"
    folds.to_csv(path, sep="\t", index=False)
    return str(path)
