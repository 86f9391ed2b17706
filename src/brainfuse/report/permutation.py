"""Label-permutation tests of every method against chance, with a correction for testing (and
picking the best of) several methods."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: the statistics recomputed under each permutation
STATISTICS = ("balanced_accuracy", "auc")


def permutation_tests(
    predictions: pd.DataFrame,
    methods: Sequence[str],
    n_permutations: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Label-permutation test of every method's pooled test predictions against chance.

    Subjects' labels are permuted (all samples of a subject move together, so several runs of
    one subject do not count as independent evidence); where the label varies within subjects
    (e.g. rest and task recordings of everyone), the labels of each subject's samples are
    permuted among themselves instead, since pooling them over subjects would leave one class.
    Every method's pooled balanced accuracy (of ``y_pred``) and AUC (of ``y_score``) are
    recomputed under the same permutations. Per method, ``p`` compares its statistic with its
    own null distribution; ``p_max`` with the distribution of the maximum over all methods
    tested (single-step max-statistic correction: it controls the family-wise error over the
    methods and accounts for having picked the best one). ``p = (1 + #{null >= observed}) /
    (1 + n_permutations)``.

    Returns
    -------
    dict
        ``available`` (False with a ``reason`` when no test is possible), ``n_permutations``,
        ``permuted`` (between or within subjects), ``methods_compared`` and ``methods``: method
        -> ``n_subjects``, ``n_samples`` and, per statistic, ``observed``, ``null_mean`` (None
        where no permutation gave both classes), ``p`` and ``p_max``. Methods whose
        predictions hold one class only are left out.
    """
    by_subject = predictions.assign(subject=predictions["subject"].astype(str))
    within = by_subject.groupby("subject")["y_true"].nunique().max() > 1
    if within and "sample_id" not in by_subject:
        return {"available": False, "reason": "labels vary within subjects"}
    unit = "sample_id" if within else "subject"
    units = by_subject.drop_duplicates(unit).sort_values(unit, kind="stable")
    labels = units["y_true"].to_numpy().astype(int)
    blocks = units["subject"].to_numpy() if within else np.zeros(len(units))
    perms = permuted_labels(labels, blocks, n_permutations, np.random.default_rng(seed))
    position = {s: i for i, s in enumerate(units[unit].astype(str))}
    observed: dict[str, tuple[float, float]] = {}
    null: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for method in dict.fromkeys(methods):
        frame = by_subject[by_subject["method"] == method]
        if frame.empty or frame["y_true"].nunique() < 2:
            continue
        idx = np.array([position[s] for s in frame[unit].astype(str)])
        y = frame["y_true"].to_numpy().astype(int)
        pred = frame["y_pred"].to_numpy().astype(int)
        ranks = stats.rankdata(frame["y_score"].to_numpy(dtype=float))
        observed[method] = (_bacc(y[None], pred)[0], _auc(y[None], ranks)[0])
        yp = perms[:, idx]
        null[method] = (_bacc(yp, pred), _auc(yp, ranks))
        sizes[method] = (frame["subject"].nunique(), len(frame))
    if not null:
        return {"available": False, "reason": "no method has test predictions of both classes"}
    # fmax ignores NaN (a permutation leaving one class) without numpy's All-NaN warning
    maxed = [np.fmax.reduce(np.stack([null[m][k] for m in null]), axis=0) for k in (0, 1)]
    results: dict[str, dict[str, Any]] = {}
    for method in null:
        results[method] = {"n_subjects": int(sizes[method][0]), "n_samples": int(sizes[method][1])}
        for k, name in enumerate(STATISTICS):
            obs, own = observed[method][k], null[method][k]
            finite = own[np.isfinite(own)]
            results[method][name] = {
                "observed": float(obs),
                # None where no permutation gave both classes: chance could not be estimated
                "null_mean": float(finite.mean()) if finite.size else None,
                "p": _p_value(own, obs, n_permutations),
                "p_max": _p_value(maxed[k], obs, n_permutations),
            }
    return {
        "available": True,
        "n_permutations": int(n_permutations),
        "permuted": "within subjects" if within else "between subjects",
        "methods_compared": sorted(null),
        "methods": results,
    }


def permutation_test(
    predictions: pd.DataFrame,
    best: str,
    methods: Sequence[str] | None = None,
    n_permutations: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """The test of :func:`permutation_tests` for ``best``, its ``p_max`` corrected over
    ``methods``: ``method``, ``available``, ``n_permutations``, ``n_subjects``, ``n_samples``,
    ``methods_compared``, ``permuted`` and, per statistic, ``observed``, ``null_mean``, ``p``,
    ``p_max``."""
    tests = permutation_tests(
        predictions, [best, *(methods or [])], n_permutations=n_permutations, seed=seed
    )
    if not tests["available"] or best not in tests["methods"]:
        return {"method": best, "available": False, "reason": tests.get("reason")}
    return {
        "method": best,
        **{k: v for k, v in tests.items() if k != "methods"},
        **tests["methods"][best],
    }


def permuted_labels(
    labels: np.ndarray, blocks: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_permutations`` rows of ``labels`` permuted within each block (one block: a plain
    permutation), drawn at once.

    Sorting random keys offset by the block number lists every block's members in a random
    order, blocks one after the other; ``slots`` lists them in their own order, so the i-th
    slot receives the label of the i-th randomly ordered member of the same block.
    """
    codes = np.unique(blocks, return_inverse=True)[1]
    keys = rng.random((n_permutations, len(labels))) + codes[None, :]
    shuffled = np.argsort(keys, axis=1, kind="stable")
    slots = np.argsort(codes, kind="stable")
    out = np.empty((n_permutations, len(labels)), dtype=labels.dtype)
    out[:, slots] = labels[shuffled]
    return out


def _p_value(null: np.ndarray, observed: float, n_permutations: int) -> float:
    """``(1 + #{null >= observed}) / (1 + n)``; a NaN null value (one class) never counts."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))


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
