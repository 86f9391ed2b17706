"""Label-permutation test of the best model against chance, corrected for choosing the best."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


def permutation_test(
    predictions: pd.DataFrame,
    best: str,
    methods: Sequence[str] | None = None,
    n_permutations: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Label-permutation test of pooled test predictions against chance.

    Subjects' labels are permuted (all samples of a subject move together, so several runs of
    one subject do not count as independent evidence); where the label varies within subjects
    (e.g. rest and task recordings of everyone), the labels of each subject's samples are
    permuted among themselves instead, since pooling them over subjects would leave one class.
    Then the pooled balanced accuracy (of
    ``y_pred``) and AUC (of ``y_score``) are recomputed for ``best`` and for every method in
    ``methods`` under the same permutation. ``p`` compares ``best``'s statistic with its own
    null distribution; ``p_max`` with the distribution of the maximum over ``methods``, which
    accounts for having picked the best of several methods. ``p = (1 + #{null >= observed}) /
    (1 + n_permutations)``.
    """
    methods = list(dict.fromkeys([best, *(methods or [])]))
    by_subject = predictions.assign(subject=predictions["subject"].astype(str))
    within = by_subject.groupby("subject")["y_true"].nunique().max() > 1
    if within and "sample_id" not in by_subject:
        return {"method": best, "available": False, "reason": "labels vary within subjects"}
    unit = "sample_id" if within else "subject"
    units = by_subject.drop_duplicates(unit).sort_values(unit, kind="stable")
    labels = units["y_true"].to_numpy().astype(int)
    blocks = units["subject"].to_numpy() if within else np.zeros(len(units))
    rng = np.random.default_rng(seed)
    perms = np.stack([_permute_within(labels, blocks, rng) for _ in range(n_permutations)])
    position = {s: i for i, s in enumerate(units[unit].astype(str))}
    observed, null = {}, {}
    for method in methods:
        frame = predictions[predictions["method"] == method]
        if frame.empty or frame["y_true"].nunique() < 2:
            continue
        idx = np.array([position[s] for s in frame[unit].astype(str)])
        y = frame["y_true"].to_numpy().astype(int)
        pred = frame["y_pred"].to_numpy().astype(int)
        ranks = stats.rankdata(frame["y_score"].to_numpy(dtype=float))
        observed[method] = (_bacc(y[None], pred)[0], _auc(y[None], ranks)[0])
        yp = perms[:, idx]
        null[method] = (_bacc(yp, pred), _auc(yp, ranks))
    if best not in observed:
        return {"method": best, "available": False}
    out: dict[str, Any] = {
        "method": best,
        "available": True,
        "n_permutations": int(n_permutations),
        "n_subjects": int(by_subject.loc[by_subject["method"] == best, "subject"].nunique()),
        "n_samples": int((predictions["method"] == best).sum()),
        "methods_compared": sorted(null),
        "permuted": "within subjects" if within else "between subjects",
    }
    for k, name in enumerate(("balanced_accuracy", "auc")):
        obs = observed[best][k]
        own = null[best][k]
        # fmax ignores NaN (a permutation leaving one class) without numpy's All-NaN warning
        maxed = np.fmax.reduce(np.stack([null[m][k] for m in null]), axis=0)
        finite = own[np.isfinite(own)]
        out[name] = {
            "observed": float(obs),
            # None where no permutation gave both classes: chance could not be estimated
            "null_mean": float(finite.mean()) if finite.size else None,
            "p": float((1 + np.sum(own >= obs - 1e-12)) / (1 + n_permutations)),
            "p_max": float((1 + np.sum(maxed >= obs - 1e-12)) / (1 + n_permutations)),
        }
    return out


def _permute_within(labels: np.ndarray, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` permuted within each block (one block: a plain permutation)."""
    out = labels.copy()
    for block in np.unique(blocks):
        rows = np.flatnonzero(blocks == block)
        out[rows] = labels[rng.permutation(rows)]
    return out


def _bacc(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Balanced accuracy of fixed predictions against each row of label matrix ``y``."""
    pos = y.sum(1)
    neg = y.shape[1] - pos
    tp = (y * pred).sum(1)
    tn = ((1 - y) * (1 - pred)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (tp / pos + tn / neg) / 2


def _auc(y: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of fixed score ranks against each row of label matrix ``y``."""
    pos = y.sum(1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((y * ranks).sum(1) - pos * (pos + 1) / 2) / (pos * neg)
