"""Paired differences to the best baseline, per-site metrics and permutation tests of every
method, on small synthetic out-of-fold predictions made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.metrics import summarise
from brainfuse.evaluate import (
    best_baseline,
    evaluate,
    paired_deltas,
    per_site_metrics,
    site_spread,
    subject_sites,
)
from brainfuse.report.permutation import permutation_tests

N_SUBJECTS = 120


def _method(name: str, y: np.ndarray, score: np.ndarray, subjects: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": name,
            "fold": np.arange(len(y)) % 5,
            "sample_id": [f"sub-{s}" for s in subjects],
            "subject": subjects,
            "y_true": y,
            "y_score": score,
            "y_pred": (score >= 0.5).astype(int),
        }
    )


def _scores(rng: np.random.Generator, y: np.ndarray, signal: float) -> np.ndarray:
    """Probabilities whose separation of the classes grows with ``signal``."""
    return 1 / (1 + np.exp(-(signal * (y - 0.5) * 2 + rng.normal(0, 1, len(y)))))


@pytest.fixture(scope="module")
def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    subjects = [f"{i:03d}" for i in range(N_SUBJECTS)]
    y = np.array([i % 2 for i in range(N_SUBJECTS)])
    baseline = _scores(rng, y, 1.0)
    frames = [
        _method("majority", y, np.zeros(N_SUBJECTS), subjects),
        _method("logreg_fc", y, baseline, subjects),
        _method("svm_fc", y, _scores(rng, y, 0.6), subjects),
        # planted: separates the classes far better than any baseline
        _method("deep_better", y, _scores(rng, y, 4.0), subjects),
        # the best baseline's own predictions under another name
        _method("deep_copy", y, baseline, subjects),
        # random scores: worse than the baseline
        _method("deep_worse", y, rng.uniform(0, 1, N_SUBJECTS), subjects),
    ]
    return pd.concat(frames, ignore_index=True)


def _summary(predictions: pd.DataFrame) -> pd.DataFrame:
    from brainfuse.core.metrics import binary_metrics

    per_fold = pd.DataFrame(
        [
            {
                "method": m,
                "fold": f,
                **binary_metrics(g["y_true"], g["y_pred"], g["y_score"]),
            }
            for (m, f), g in predictions.groupby(["method", "fold"], sort=False)
        ]
    )
    return summarise(per_fold, predictions, n_resamples=200)


BASELINES = ("logreg_fc", "svm_fc")


def _deltas(predictions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    return paired_deltas(
        predictions, _summary(predictions), BASELINES, n_resamples=500, seed=seed
    ).set_index(["method", "metric"])


def test_best_baseline_is_the_best_classical_method(predictions):
    summary = _summary(predictions)
    assert best_baseline(summary, BASELINES) == "logreg_fc"
    assert best_baseline(summary, ()) is None


def test_verdicts_follow_planted_differences(predictions):
    deltas = _deltas(predictions)
    assert set(deltas["baseline"]) == {"logreg_fc"}
    for metric in ("balanced_accuracy", "auc"):
        better = deltas.loc[("deep_better", metric)]
        assert better["verdict"] == "better" and better["ci_low"] > 0 < better["delta"]
        copy = deltas.loc[("deep_copy", metric)]
        assert copy["verdict"] == "not distinguishable"
        assert copy["delta"] == 0 and copy["ci_low"] <= 0 <= copy["ci_high"]
        worse = deltas.loc[("deep_worse", metric)]
        assert worse["verdict"] == "worse" and worse["ci_high"] < 0 > worse["delta"]
    assert deltas.loc[("majority", "balanced_accuracy"), "verdict"] == "worse"
    assert (deltas["n_subjects"] == N_SUBJECTS).all()


def test_intervals_are_paired(predictions):
    """The same subjects are drawn for both methods: an unpaired bootstrap of a copy of the
    baseline would give an interval around 0 as wide as two independent intervals."""
    deltas = _deltas(predictions)
    summary = _summary(predictions).set_index("method")
    for metric in ("balanced_accuracy", "auc"):
        copy = deltas.loc[("deep_copy", metric)]
        unpaired = summary.loc["logreg_fc", [f"{metric}_ci_low", f"{metric}_ci_high"]]
        # only re-picking the baseline per resample (svm_fc rarely wins) moves it from 0
        assert copy["ci_high"] - copy["ci_low"] < 0.2 * (unpaired.iloc[1] - unpaired.iloc[0])
    # picked by balanced accuracy, the baseline is never below the copy on that metric
    assert deltas.loc[("deep_copy", "balanced_accuracy"), "ci_high"] == 0
    # a method predicted on half the subjects is compared on those subjects only
    half = predictions[(predictions["method"] != "deep_better") | (predictions["subject"] < "060")]
    assert (_deltas(half).loc["deep_better", "n_subjects"] == 60).all()


def test_intervals_are_seeded(predictions):
    pd.testing.assert_frame_equal(_deltas(predictions, seed=3), _deltas(predictions, seed=3))
    assert not _deltas(predictions, seed=3)["ci_low"].equals(_deltas(predictions, seed=4)["ci_low"])


def _leave_site_out() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four sites, one test fold each; the model works at sites A-C and fails at site D."""
    rng = np.random.default_rng(1)
    rows, qc = [], []
    for fold, (site, signal) in enumerate((("A", 3.0), ("B", 3.0), ("C", 3.0), ("D", -3.0))):
        subjects = [f"{site}{i:02d}" for i in range(20)]
        y = np.array([i % 2 for i in range(20)])
        frame = _method("logreg_fc", y, _scores(rng, y, signal), subjects)
        rows.append(frame.assign(fold=fold))
        qc += [{"subject": s, "site": site, "sample_id": f"sub-{s}"} for s in subjects]
    return pd.concat(rows, ignore_index=True), pd.DataFrame(qc)


def test_per_site_metrics_on_leave_site_out():
    predictions, qc = _leave_site_out()
    per_site = per_site_metrics(predictions, subject_sites(qc)).set_index("site")
    assert list(per_site.index) == ["A", "B", "C", "D"]
    assert (per_site["n_subjects"] == 20).all() and (per_site["n_positive"] == 10).all()
    assert (per_site.loc[["A", "B", "C"], "balanced_accuracy"] > 0.8).all()
    assert per_site.loc["D", "balanced_accuracy"] < 0.2 and per_site.loc["D", "auc"] < 0.2
    spread = site_spread(per_site.reset_index()).iloc[0]
    assert spread["sites"] == 4 and spread["balanced_accuracy_sites"] == 4
    assert spread["balanced_accuracy_min"] == per_site["balanced_accuracy"].min()
    assert spread["balanced_accuracy_sd"] > 0.3


def test_per_site_metrics_undefined_on_a_one_class_site():
    predictions, qc = _leave_site_out()
    one_class = predictions[(predictions["subject"].str[0] != "A") | (predictions["y_true"] == 1)]
    row = per_site_metrics(one_class, subject_sites(qc)).set_index("site").loc["A"]
    assert np.isnan(row["balanced_accuracy"]) and np.isnan(row["auc"])
    assert row["n_negative"] == 0 and 0 <= row["accuracy"] <= 1


def test_evaluate_writes_deltas_and_per_site(tmp_path):
    predictions, qc = _leave_site_out()
    rng = np.random.default_rng(2)
    other = predictions.assign(method="svm_fc", y_score=rng.uniform(0, 1, len(predictions)))
    other["y_pred"] = (other["y_score"] >= 0.5).astype(int)
    files = []
    for name, frame in (("logreg", predictions), ("svm", other)):
        files.append(str(tmp_path / f"{name}.tsv"))
        frame.to_csv(files[-1], sep="\t", index=False)
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    out = {k: str(tmp_path / f"{k}.tsv") for k in ("pred", "fold", "summary", "deltas", "site")}
    evaluate(
        files,
        out["pred"],
        out["fold"],
        out["summary"],
        baselines=["logreg_fc", "svm_fc"],
        qc_path=str(tmp_path / "qc.tsv"),
        out_deltas=out["deltas"],
        out_per_site=out["site"],
        n_resamples=100,
    )
    deltas = pd.read_csv(out["deltas"], sep="\t")
    assert list(deltas.columns[:7]) == [
        "method",
        "baseline",
        "metric",
        "delta",
        "ci_low",
        "ci_high",
        "verdict",
    ]
    assert set(deltas["method"]) == {"logreg_fc", "svm_fc"}
    assert len(pd.read_csv(out["site"], sep="\t")) == 8  # 2 methods x 4 sites


def test_permutation_p_values_for_every_method(predictions):
    tests = permutation_tests(
        predictions, ["logreg_fc", "deep_better", "deep_worse"], n_permutations=999
    )
    assert tests["available"] and tests["methods_compared"] == sorted(
        ["logreg_fc", "deep_better", "deep_worse"]
    )
    planted, random = tests["methods"]["deep_better"], tests["methods"]["deep_worse"]
    assert planted["auc"]["p"] < 0.01 and planted["balanced_accuracy"]["p_max"] < 0.01
    assert random["auc"]["p"] > 0.05 and random["balanced_accuracy"]["p_max"] > 0.05
    for result in tests["methods"].values():
        for statistic in ("balanced_accuracy", "auc"):
            assert result[statistic]["p_max"] >= result[statistic]["p"]
    # same seed, same p-values
    again = permutation_tests(
        predictions, ["logreg_fc", "deep_better", "deep_worse"], n_permutations=999
    )
    assert again == tests


def test_permutation_within_subjects_keeps_each_subject_labels():
    """With the label an entity (rest and task runs of everyone), labels move only within a
    subject, and a model that tells the runs apart is detected."""
    rng = np.random.default_rng(4)
    rows = []
    for i in range(30):
        for task, y in (("rest", 0), ("task", 1)):
            score = 1 / (1 + np.exp(-(3 * (y - 0.5) * 2 + rng.normal(0, 1))))
            rows.append(
                {
                    "method": "m",
                    "subject": f"{i:02d}",
                    "sample_id": f"sub-{i:02d}_task-{task}",
                    "y_true": y,
                    "y_score": score,
                    "y_pred": int(score >= 0.5),
                }
            )
    tests = permutation_tests(pd.DataFrame(rows), ["m"], n_permutations=499)
    assert tests["permuted"] == "within subjects"
    assert tests["methods"]["m"]["auc"]["p"] < 0.01
    assert abs(tests["methods"]["m"]["auc"]["null_mean"] - 0.5) < 0.05


def test_frozen_encoder_probes_are_rows_beside_the_fine_tuned_method(predictions, tmp_path):
    """A pre-training stage's linear-probe predictions of a method are scored as
    "<method> (frozen)", with its own metrics and delta to the best baseline."""
    fine_tuned = predictions[predictions["method"] == "deep_better"]
    rng = np.random.default_rng(5)
    probe = fine_tuned.assign(y_score=rng.uniform(0, 1, len(fine_tuned)))  # no signal
    probe["y_pred"] = (probe["y_score"] >= 0.5).astype(int)
    files = {}
    for name, frame in (("baseline", predictions[predictions["method"] == "logreg_fc"]),
                        ("finetune", fine_tuned), ("pretrain", probe)):  # fmt: skip
        files[name] = str(tmp_path / f"{name}.tsv")
        frame.to_csv(files[name], sep="\t", index=False)
    out = {k: str(tmp_path / f"out_{k}.tsv") for k in ("pred", "fold", "summary", "deltas")}
    evaluate(
        [files["baseline"], files["finetune"]],
        out["pred"],
        out["fold"],
        out["summary"],
        baselines=["logreg_fc"],
        out_deltas=out["deltas"],
        n_resamples=100,
        probe_files=[files["pretrain"]],
    )
    summary = pd.read_csv(out["summary"], sep="\t").set_index("method")
    assert set(summary.index) == {"logreg_fc", "deep_better", "deep_better (frozen)"}
    assert summary.loc["deep_better", "auc_mean"] > 0.9
    assert abs(summary.loc["deep_better (frozen)", "auc_mean"] - 0.5) < 0.15
    deltas = pd.read_csv(out["deltas"], sep="\t")
    assert "deep_better (frozen)" in set(deltas["method"])
