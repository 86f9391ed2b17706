"""Agreement of parcel importances across outer folds.

The mean pairwise Spearman correlation of the parcel importances and the mean pairwise
overlap of the top-10 parcels (chance 10 / N).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy import stats

from brainfuse.explain.blocks import TOP_K


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Share of the top-``k`` items of ``a`` that are among the top-``k`` of ``b``."""
    k = min(k, len(a))
    if k == 0:
        return math.nan
    ta = set(np.argsort(-a, kind="stable")[:k])
    tb = set(np.argsort(-b, kind="stable")[:k])
    return len(ta & tb) / k


def stability(per_fold: np.ndarray, k: int = TOP_K) -> dict[str, Any]:
    """Agreement of importance vectors across folds (rows of ``per_fold``).

    Returns the mean pairwise Spearman correlation, the mean pairwise top-``k`` overlap, its
    chance level ``k / n`` and the per-pair values.
    """
    per_fold = np.asarray(per_fold, dtype=float)
    n_folds, n = per_fold.shape
    pairs = list(itertools.combinations(range(n_folds), 2))
    rho, overlap = [], []
    for a, b in pairs:
        x, y = per_fold[a], per_fold[b]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            rho.append(math.nan)
        else:
            rho.append(float(stats.spearmanr(x, y).statistic))
        overlap.append(top_k_overlap(x, y, k))
    return {
        "spearman_mean": float(np.nanmean(rho)) if pairs and not np.all(np.isnan(rho)) else None,
        "top_k_overlap_mean": float(np.mean(overlap)) if pairs else None,
        "top_k": int(min(k, n)),
        "chance_overlap": float(min(k, n) / n) if n else None,
        "pairs": [
            {"folds": [int(a), int(b)], "spearman": json_float(r), "top_k_overlap": o}
            for (a, b), r, o in zip(pairs, rho, overlap, strict=True)
        ],
    }


def json_float(value: float) -> float | None:
    """``value`` as a float, None when NaN (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value
