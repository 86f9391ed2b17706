"""Classification metrics per fold, and their summary: fold mean and SD, bootstrap interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")

N_RESAMPLES = 2000
CI_LEVEL = 0.95
MIN_SUBJECTS_PER_CLASS = 2
# resamples processed at once: bounds memory at about this many float64 per work array
_CHUNK_CELLS = 2_000_000


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """Metrics of one fold; ``y_true``/``y_pred`` are 0/1 with 1 the positive class.

    AUC is NaN when the fold holds one class only (it is undefined, not 0.5).
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    positives, negatives = y_true == 1, y_true == 0
    out = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "auc": roc_auc_score(y_true, y_score) if positives.any() and negatives.any() else np.nan,
        "sensitivity": (y_pred[positives] == 1).mean() if positives.any() else np.nan,
        "specificity": (y_pred[negatives] == 0).mean() if negatives.any() else np.nan,
        "f1": f1_score(y_true, y_pred, zero_division=0),
    }
    return {k: float(v) for k, v in out.items()}


def validation_threshold(y_true: np.ndarray, y_score: np.ndarray, default: float = 0.5) -> float:
    """The decision threshold on positive-class probabilities that validation subjects support.

    A network trained to zero loss on a few dozen subjects often ranks new subjects well but
    shifts all their scores to one side of 0.5 (demo: validation AUC 1.0 at balanced accuracy
    0.5, every test subject predicted one class). The threshold moves from ``default`` only when
    another one separates the validation samples strictly better (balanced accuracy) and better
    than chance: then to the midpoint between adjacent validation scores that does so and lies
    closest to ``default``. With one class among the validation samples it stays at
    ``default``.

    Parameters
    ----------
    y_true : ndarray
        0/1 labels of the validation samples.
    y_score : ndarray
        Their positive-class probabilities.
    default : float
        The threshold kept unless the validation samples say otherwise.
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    if len(np.unique(y_true)) < 2:
        return float(default)

    def score(t: float) -> float:
        return balanced_accuracy_score(y_true, (y_score >= t).astype(int))

    values = np.unique(y_score)
    if len(values) < 2:
        return float(default)
    candidates = (values[:-1] + values[1:]) / 2  # each predicts both classes
    scores = np.array([score(t) for t in candidates])
    best = scores.max()
    if best <= max(score(default), 0.5):  # a ranking no better than chance says nothing
        return float(default)
    winners = candidates[scores == best]
    return float(winners[np.argmin(np.abs(winners - default))])


def ci_method(n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL) -> str:
    """The sentence that names the interval of :func:`bootstrap_intervals`."""
    return (
        f"subject bootstrap of pooled out-of-fold predictions, stratified by label, "
        f"{n_resamples} resamples, {level:.0%} percentile"
    )


def _subject_counts(
    subject_label: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """How often each subject is drawn in each resample, shape ``(n_resamples, n_subjects)``.

    Subjects are drawn with replacement within each label, as many as the label has, so every
    resample holds both classes in their original numbers.
    """
    n_subjects = len(subject_label)
    counts = np.zeros(n_resamples * n_subjects)
    row_offset = (np.arange(n_resamples) * n_subjects)[:, None]
    for label in np.unique(subject_label):
        members = np.flatnonzero(subject_label == label)
        drawn = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
        counts += np.bincount((row_offset + drawn).ravel(), minlength=counts.size)
    return counts.reshape(n_resamples, n_subjects)


def _weighted_metrics(
    weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` once per row of ``weights`` (one weight per sample).

    A weight is how often the sample's subject was drawn, so each row is one resample's pooled
    predictions. A metric undefined in a row (a class absent) is NaN there.
    """
    pos, neg = y_true == 1, y_true == 0
    tp = weights @ (pos & (y_pred == 1))
    fn = weights @ (pos & (y_pred == 0))
    tn = weights @ (neg & (y_pred == 0))
    fp = weights @ (neg & (y_pred == 1))
    n_pos, n_neg = tp + fn, tn + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(n_pos > 0, tp / n_pos, np.nan)
        specificity = np.where(n_neg > 0, tn / n_neg, np.nan)
        f1_denominator = 2 * tp + fp + fn
        # same convention as binary_metrics (sklearn's zero_division=0)
        f1 = np.where(f1_denominator > 0, 2 * tp / f1_denominator, 0.0)
        accuracy = (tp + tn) / (n_pos + n_neg)

        # Mann-Whitney AUC with weights: positives score above negatives, ties count one half.
        # Samples are sorted by score and summed per distinct score, so ties share one column.
        order = np.argsort(y_score, kind="stable")
        sorted_score = y_score[order]
        starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        w_sorted = weights[:, order]
        pos_at = np.add.reduceat(w_sorted * pos[order], starts, axis=1)
        neg_at = np.add.reduceat(w_sorted * neg[order], starts, axis=1)
        neg_below = np.cumsum(neg_at, axis=1) - neg_at
        pairs_won = (pos_at * (neg_below + 0.5 * neg_at)).sum(axis=1)
        auc = np.where((n_pos > 0) & (n_neg > 0), pairs_won / (n_pos * n_neg), np.nan)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "auc": auc,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": f1,
    }


def bootstrap_intervals(
    subject: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_score: np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of every metric by a subject-level (cluster) bootstrap.

    Subjects are resampled with replacement, stratified by label; each resample's metrics are
    computed on the pooled out-of-fold predictions of the drawn subjects (all samples of a subject
    travel together). As every resampled value lies in the metric's range, so does the interval.

    Parameters
    ----------
    subject, y_true, y_pred, y_score : ndarray
        One entry per out-of-fold prediction; ``y_true``/``y_pred`` are 0/1. A subject's label is
        the ``y_true`` of its first sample.
    n_resamples : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling; the same seed and inputs give the same intervals.
    level : float
        Coverage of the two-sided percentile interval.

    Returns
    -------
    dict
        ``metric -> (low, high)``. Resamples in which a metric is undefined are skipped; the
        interval is NaN when no resample defines it, or when a class present has fewer than
        :data:`MIN_SUBJECTS_PER_CLASS` subjects (too few to resample).
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    # sorted subject ids, so the intervals do not depend on the order of the rows
    subjects, sample_subject = np.unique(np.asarray(subject).astype(str), return_inverse=True)
    first_sample = np.unique(sample_subject, return_index=True)[1]
    subject_label = y_true[first_sample]
    nan_interval = {metric: (np.nan, np.nan) for metric in METRICS}
    if len(subjects) == 0 or np.unique(subject_label, return_counts=True)[1].min() < (
        MIN_SUBJECTS_PER_CLASS
    ):
        return nan_interval

    counts = _subject_counts(subject_label, n_resamples, np.random.default_rng(seed))
    chunk = max(1, _CHUNK_CELLS // len(y_true))
    values: dict[str, list[np.ndarray]] = {metric: [] for metric in METRICS}
    for begin in range(0, n_resamples, chunk):
        weights = counts[begin : begin + chunk][:, sample_subject]
        for metric, value in _weighted_metrics(weights, y_true, y_pred, y_score).items():
            values[metric].append(value)

    tail = (1 - level) / 2 * 100
    intervals = {}
    for metric in METRICS:
        defined = np.concatenate(values[metric])
        defined = defined[~np.isnan(defined)]
        if len(defined) == 0:
            intervals[metric] = (np.nan, np.nan)
            continue
        low, high = np.percentile(defined, [tail, 100 - tail])
        intervals[metric] = (float(low), float(high))
    return intervals


def summarise(
    per_fold: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> pd.DataFrame:
    """One row per method: ``<metric>_mean`` and ``_sd`` over folds, and a bootstrap interval.

    ``<metric>_ci_low``/``_ci_high`` come from :func:`bootstrap_intervals` on the method's pooled
    out-of-fold ``predictions`` (columns ``method``, ``subject``, ``y_true``, ``y_pred``,
    ``y_score``); ``ci_method`` says what the interval is.
    """
    by_method = dict(tuple(predictions.groupby("method", sort=False)))
    method_text = ci_method(n_resamples, level)
    rows = []
    for method, group in per_fold.groupby("method", sort=False):
        oof = by_method[method]
        intervals = bootstrap_intervals(
            oof["subject"].to_numpy(),
            oof["y_true"].to_numpy(),
            oof["y_pred"].to_numpy(),
            oof["y_score"].to_numpy(),
            n_resamples=n_resamples,
            seed=seed,
            level=level,
        )
        row = {"method": method, "n_folds": len(group)}
        for metric in METRICS:
            values = group[metric].dropna().to_numpy()
            row |= {
                f"{metric}_mean": values.mean() if len(values) else np.nan,
                f"{metric}_sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                f"{metric}_ci_low": intervals[metric][0],
                f"{metric}_ci_high": intervals[metric][1],
            }
        row["ci_method"] = method_text
        rows.append(row)
    return pd.DataFrame(rows)
