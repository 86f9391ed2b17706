"""Aggregate test-fold predictions of every method into per-fold metrics and a summary table."""

from __future__ import annotations

import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.metrics import CI_LEVEL, METRICS, N_RESAMPLES, binary_metrics, summarise


def evaluate(
    prediction_files: list[str],
    out_predictions: str,
    out_per_fold: str,
    out_summary: str,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> None:
    """Write all predictions, metrics per method and fold, and ``summary.tsv``.

    ``summary.tsv`` holds the mean and SD of each metric over folds and a percentile interval
    from a subject-level bootstrap of the pooled out-of-fold predictions (``n_resamples``
    resamples drawn with ``seed``, coverage ``level``), named in its ``ci_method`` column.
    """
    predictions = pd.concat(
        [pd.read_csv(p, sep="\t", dtype={"subject": str}) for p in prediction_files],
        ignore_index=True,
    )
    rows = []
    for (method, fold), group in predictions.groupby(["method", "fold"], sort=False):
        rows.append(
            {
                "method": method,
                "fold": fold,
                "n_test": len(group),
                **binary_metrics(group["y_true"], group["y_pred"], group["y_score"]),
            }
        )
    per_fold = pd.DataFrame(rows, columns=["method", "fold", "n_test", *METRICS])
    summary = summarise(per_fold, predictions, n_resamples=n_resamples, seed=seed, level=level)
    atomic.write_tsv(out_predictions, predictions)
    atomic.write_tsv(out_per_fold, per_fold)
    atomic.write_tsv(out_summary, summary)
