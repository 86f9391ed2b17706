"""Bootstrap intervals of results/eval/summary.tsv: in range, covering, seeded, subject-level."""

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.metrics import METRICS, bootstrap_intervals, ci_method
from brainfuse.evaluate import evaluate


def _predictions(rng, n_subjects, n_folds, kind, runs_per_subject=1):
    """Out-of-fold predictions of one method; ``kind`` is random, perfect or chance."""
    rows = []
    for i in range(n_subjects):
        y = i % 2
        for run in range(runs_per_subject):
            if kind == "perfect":
                score = 0.2 + 0.6 * y
            elif kind == "chance":
                score = 0.5  # a constant score, as the majority baseline gives
            else:
                score = rng.uniform()
            rows.append(
                {
                    "method": kind,
                    "fold": (i // 2) % n_folds,  # both classes in every fold
                    "sample_id": f"sub-{i:03d}_run-{run}",
                    "subject": f"{i:03d}",
                    "y_true": y,
                    "y_score": score,
                    "y_pred": int(score > 0.5),
                }
            )
    return pd.DataFrame(rows)


def _summary(tmp_path, predictions, **kwargs):
    files = []
    for (method, fold), frame in predictions.groupby(["method", "fold"]):
        path = tmp_path / f"{method}_{fold}.tsv"
        frame.to_csv(path, sep="\t", index=False)
        files.append(str(path))
    out = tmp_path / "eval"
    evaluate(
        files,
        str(out / "predictions.tsv"),
        str(out / "per_fold.tsv"),
        str(out / "summary.tsv"),
        n_resamples=300,
        **kwargs,
    )
    return pd.read_csv(out / "summary.tsv", sep="\t")


@pytest.mark.parametrize(("n_subjects", "n_folds"), [(6, 2), (8, 2), (24, 3), (60, 5)])
def test_intervals_lie_in_the_metric_range(tmp_path, n_subjects, n_folds):
    rng = np.random.default_rng(n_subjects)
    predictions = pd.concat(
        [_predictions(rng, n_subjects, n_folds, k) for k in ("random", "perfect", "chance")]
    )
    summary = _summary(tmp_path, predictions).set_index("method")
    for metric in METRICS:
        low, high = summary[f"{metric}_ci_low"], summary[f"{metric}_ci_high"]
        assert low.notna().all() and high.notna().all(), metric
        assert ((low >= 0) & (low <= high) & (high <= 1)).all(), metric
    assert summary.loc["perfect", [f"{m}_ci_low" for m in METRICS]].eq(1).all()
    assert summary.loc["chance", "auc_ci_low"] == summary.loc["chance", "auc_ci_high"] == 0.5
    assert summary["ci_method"].eq(ci_method(300)).all()
    assert "subject bootstrap" in summary["ci_method"].iloc[0]


def test_fold_mean_and_sd_are_kept(tmp_path):
    predictions = _predictions(np.random.default_rng(0), 12, 3, "random")
    summary = _summary(tmp_path, predictions)
    per_fold = pd.read_csv(tmp_path / "eval" / "per_fold.tsv", sep="\t")
    assert summary["accuracy_mean"].iloc[0] == pytest.approx(per_fold["accuracy"].mean())
    assert summary["accuracy_sd"].iloc[0] == pytest.approx(per_fold["accuracy"].std(ddof=1))
    assert summary["n_folds"].iloc[0] == 3


def test_interval_covers_the_true_accuracy():
    """A classifier right with probability 0.75: the 95% interval holds 0.75 in most runs."""
    rng = np.random.default_rng(42)
    n_subjects, true_accuracy, covered = 60, 0.75, 0
    for repetition in range(50):
        y = np.arange(n_subjects) % 2
        correct = rng.uniform(size=n_subjects) < true_accuracy
        y_pred = np.where(correct, y, 1 - y)
        low, high = bootstrap_intervals(
            np.arange(n_subjects), y, y_pred, y_pred.astype(float), n_resamples=500, seed=repetition
        )["accuracy"]
        covered += low <= true_accuracy <= high
    assert covered >= 43  # nominal 47.5 of 50


def test_same_seed_same_interval():
    predictions = _predictions(np.random.default_rng(3), 20, 4, "random")
    args = [predictions[c].to_numpy() for c in ("subject", "y_true", "y_pred", "y_score")]
    first = bootstrap_intervals(*args, n_resamples=200, seed=7)
    assert bootstrap_intervals(*args, n_resamples=200, seed=7) == first
    shuffled = predictions.sample(frac=1, random_state=1)
    args = [shuffled[c].to_numpy() for c in ("subject", "y_true", "y_pred", "y_score")]
    assert bootstrap_intervals(*args, n_resamples=200, seed=7) == first
    assert bootstrap_intervals(*args, n_resamples=200, seed=8) != first


def test_subjects_are_resampled_as_units():
    """Three identical runs per subject give the interval of one run per subject: a subject is
    drawn with all its runs. Resampling runs one by one would narrow it."""
    rng = np.random.default_rng(5)
    one = _predictions(rng, 16, 2, "random")
    three = one.loc[one.index.repeat(3)].reset_index(drop=True)
    three["sample_id"] += "_copy-" + three.groupby("sample_id").cumcount().astype(str)
    columns = ("subject", "y_true", "y_pred", "y_score")
    by_subject = bootstrap_intervals(*[one[c].to_numpy() for c in columns], seed=1)
    by_subject_runs = bootstrap_intervals(*[three[c].to_numpy() for c in columns], seed=1)
    for metric in METRICS:
        assert by_subject_runs[metric] == pytest.approx(by_subject[metric])
    by_run = bootstrap_intervals(
        *[three[c].to_numpy() for c in ("sample_id", "y_true", "y_pred", "y_score")], seed=1
    )
    width = by_subject["accuracy"][1] - by_subject["accuracy"][0]
    assert by_run["accuracy"][1] - by_run["accuracy"][0] < width


def test_too_few_subjects_or_one_class_give_nan():
    # one subject in a class: nothing to resample
    intervals = bootstrap_intervals(["a", "b", "c"], [0, 0, 1], [0, 1, 1], [0.1, 0.6, 0.9])
    assert all(np.isnan(low) and np.isnan(high) for low, high in intervals.values())
    # one class only: the metrics that need both classes are undefined, the others are not
    intervals = bootstrap_intervals(["a", "b", "c"], [0, 0, 0], [0, 1, 0], [0.1, 0.6, 0.2])
    assert np.isnan(intervals["auc"][0]) and np.isnan(intervals["sensitivity"][0])
    assert 0 <= intervals["specificity"][0] <= intervals["specificity"][1] <= 1
