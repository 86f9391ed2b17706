"""The deep FC methods learn a planted effect with their default training schedule.

Regression tests of issue 19: on the demo, ``gcn_fc`` and ``graph_transformer_fc`` predicted one
class for every test subject (an untrained epoch picked by early stopping on 4 validation
subjects, a majority-class bias, too few optimiser steps). Each run here is one fold of a small
synthetic cache with a clear planted FC effect, trained with the method's defaults (only the
thread count is set); it fails if the model collapses to one class or ranks training or held-out
subjects at chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.run import run_stage
from brainfuse.methods.torch.data import BrainDataset
from brainfuse.methods.torch.runner import predict_proba
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.methods.torch.trained import TrainedStage

torch.set_num_threads(1)

#: The methods whose defaults were fixed for issue 19.
FIXED = ("gcn_fc", "gat_fc", "graph_transformer_fc", "connex_fc_only")


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, str]:
    # 30 parcels keep a run at a few seconds; 3 folds leave 4 validation subjects, as on the demo.
    return write_synthetic_caches(
        tmp_path_factory.mktemp("planted"), n_subjects=24, n_nodes=30, n_planted=6, effect=0.4
    )


def _train(caches: dict[str, str], method: str, out: Path, params: dict | None = None) -> dict:
    outputs = StageOutputs(
        str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
    )
    run_stage(
        StageRequest(
            method=method,
            stage="train",
            fold=0,
            cache_paths={"fmri": caches["fmri"]},
            folds_path=caches["folds"],
            positive="patient",
            seed=0,
            outputs=outputs,
            params={"num_threads": 1, **(params or {})},
            checkpoint_dir=str(out / "ckpt"),
        ),
        default_catalog(),
    )
    return json.loads(Path(outputs.metrics).read_text())


@pytest.mark.parametrize("method", FIXED)
def test_learns_planted_effect_without_collapse(caches, method, tmp_path):
    metrics = _train(caches, method, tmp_path)
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert predictions["y_pred"].nunique() == 2, "every test subject predicted one class"
    assert metrics["auc"] >= 0.8 and metrics["balanced_accuracy"] >= 0.7
    # The training subjects are ranked by the learnt effect too (not a lucky test fold).
    full = BrainDataset({"fmri": caches["fmri"]}, "patient")
    train = full.subset(subjects_of(read_folds(caches["folds"]), 0, "train"))
    model = TrainedStage.load(tmp_path / "model.bin", full).module
    assert roc_auc_score(train.labels, predict_proba(model, train, 64)) >= 0.9


def test_few_validation_subjects_select_no_epoch(caches, tmp_path):
    """4 validation subjects (< min_val_subjects): the whole schedule, the last epoch kept."""
    n_val = len(subjects_of(read_folds(caches["folds"]), 0, "val"))
    assert 0 < n_val < default_catalog().params("gcn_fc", {}, "train")["min_val_subjects"]
    fast = {"epochs": 3}
    last = _train(caches, "gcn_fc", tmp_path / "last", fast)
    assert last["model_selection"] == "last_epoch" and last["best_val"] is None
    assert last["epochs"] == 3 and last["best_step"] == last["steps"]
    selected = _train(caches, "gcn_fc", tmp_path / "val", {**fast, "min_val_subjects": n_val})
    assert selected["model_selection"] == "validation" and selected["best_val"] is not None
    assert np.isfinite(selected["best_val"])


def test_bench_methods_smoke(capsys):
    from brainfuse.benchmarks.methods import main

    argv = ["--methods", "logreg_fc", "gcn_fc", "--seeds", "0", "--subjects", "12"]
    assert main([*argv, "--nodes", "20", "--folds", "2", "--epochs", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    pairs = dict(item.split("=") for item in last.split())
    assert set(pairs) == {"logreg_fc", "logreg_fc_min", "gcn_fc", "gcn_fc_min"}
    assert all(0.0 <= float(v) <= 1.0 for v in pairs.values())


def test_bench_methods_reads_pipeline_results_folders(tmp_path, capsys):
    """``--results``: each folder's cache/*.parquet and folds/folds.tsv, trained with the seed
    given at its position."""
    import shutil

    from brainfuse.benchmarks.methods import main, write_caches

    paths = write_caches(tmp_path / "made", 12, 20, 0.3, 2, 0.2, seed=0)
    results = tmp_path / "results"
    (results / "cache").mkdir(parents=True)
    (results / "folds").mkdir()
    shutil.copy(paths["fmri"], results / "cache" / "fmri.parquet")
    shutil.copy(paths["folds"], results / "folds" / "folds.tsv")
    argv = ["--methods", "logreg_fc", "--seeds", "3", "--results", str(results)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seed 3 logreg_fc" in out and "of 2 folds" in out
    assert float(out.strip().splitlines()[-1].split()[0].split("=")[1]) > 0.5


def test_bench_methods_adjusts_in_the_fold(tmp_path, capsys):
    """``--adjust``: the in-fold adjustment reaches every method as the pipeline passes it,
    the harmonise keys it omits taking the config's defaults."""
    import json

    from brainfuse.benchmarks.methods import main

    adjust = {"harmonise": {"method": "combat", "covariates": [], "min_site_size": 2}}
    argv = ["--methods", "logreg_fc", "--seeds", "0", "--subjects", "16", "--nodes", "20"]
    argv += ["--folds", "2", "--workdir", str(tmp_path), "--adjust", json.dumps(adjust)]
    assert main(argv) == 0
    for fold in (0, 1):
        metrics = tmp_path / "seed-0" / "logreg_fc" / f"fold-{fold}" / "fit" / "metrics.json"
        record = json.loads(metrics.read_text())["adjustment"]
        assert record["harmonise"] == "combat" and record["combat"]["fitted"]
        assert set(record["fit_subjects"]).isdisjoint(_test_subjects(tmp_path, fold))


def _test_subjects(workdir, fold):
    import pandas as pd

    folds = pd.read_csv(workdir / "seed-0" / "caches" / "folds.tsv", sep="\t", dtype=str)
    return set(folds.loc[(folds["fold"] == str(fold)) & (folds["role"] == "test"), "subject"])


def test_test_predictions_use_the_stage_decision_threshold(caches, tmp_path):
    """A fixed ``decision_threshold`` cuts the test scores there (the default reads the
    validation subjects); the threshold is recorded; a misspelt setting names the key."""
    import pandas as pd

    fast = {"epochs": 1, "decision_threshold": 0.3}
    metrics = _train(caches, "gcn_fc", tmp_path / "fixed", fast)
    predictions = pd.read_csv(tmp_path / "fixed" / "predictions.tsv", sep="\t")
    assert metrics["decision_threshold"] == 0.3
    assert (predictions["y_pred"] == (predictions["y_score"] >= 0.3)).all()
    default = _train(caches, "gcn_fc", tmp_path / "default", {"epochs": 1})
    assert 0.0 < default["decision_threshold"] < 1.0
    with pytest.raises(ValueError, match="decision_threshold='valid'"):
        _train(caches, "gcn_fc", tmp_path / "bad", {"epochs": 1, "decision_threshold": "valid"})
