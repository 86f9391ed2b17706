"""Classification metrics per fold and their aggregation over folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")


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


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """One row per method: ``<metric>_mean``, ``_sd`` and a 95% t-interval over folds."""
    rows = []
    for method, group in per_fold.groupby("method", sort=False):
        row = {"method": method, "n_folds": len(group)}
        for metric in METRICS:
            values = group[metric].dropna().to_numpy()
            mean = values.mean() if len(values) else np.nan
            sd = values.std(ddof=1) if len(values) > 1 else np.nan
            half = (
                stats.t.ppf(0.975, len(values) - 1) * sd / np.sqrt(len(values))
                if len(values) > 1
                else np.nan
            )
            row |= {
                f"{metric}_mean": mean,
                f"{metric}_sd": sd,
                f"{metric}_ci_low": mean - half,
                f"{metric}_ci_high": mean + half,
            }
        rows.append(row)
    return pd.DataFrame(rows)
