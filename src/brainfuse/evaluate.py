"""Aggregate test-fold predictions of every method into per-fold metrics and a summary table,
paired differences to the best classical baseline, and metrics per site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.metrics import (
    _CHUNK_CELLS,
    CI_LEVEL,
    METRICS,
    MIN_SUBJECTS_PER_CLASS,
    N_RESAMPLES,
    _subject_counts,
    _weighted_metrics,
    binary_metrics,
    summarise,
)
from brainfuse.methods.pretrained import FROZEN_SUFFIX

#: metrics whose difference to the best baseline is reported
DELTA_METRICS = ("balanced_accuracy", "auc")
#: metric that picks the best baseline (in the summary and in every bootstrap resample)
SELECTION_METRIC = "balanced_accuracy"
DELTA_COLUMNS = [
    "method",
    "baseline",
    "metric",
    "delta",
    "ci_low",
    "ci_high",
    "verdict",
    "n_subjects",
    "ci_method",
]
PER_SITE_COLUMNS = [
    "method",
    "site",
    "n_subjects",
    "n_samples",
    "n_positive",
    "n_negative",
    "accuracy",
    "balanced_accuracy",
    "auc",
]


def evaluate(
    prediction_files: list[str],
    out_predictions: str,
    out_per_fold: str,
    out_summary: str,
    *,
    baselines: Sequence[str] = (),
    qc_path: str | None = None,
    out_deltas: str | None = None,
    out_per_site: str | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
    probe_files: Sequence[str] = (),
) -> None:
    """Write all predictions, metrics per method and fold, and ``summary.tsv``.

    ``probe_files`` are the test predictions of self-supervised pre-training stages (a linear
    probe on the frozen encoder, fitted on the fold's training subjects); each method's are
    scored as the method ``<method> (frozen)`` (:data:`FROZEN_SUFFIX`), beside its fine-tuned
    row.

    ``summary.tsv`` holds the mean and SD of each metric over folds and a percentile interval
    from a subject-level bootstrap of the pooled out-of-fold predictions (``n_resamples``
    resamples drawn with ``seed``, coverage ``level``), named in its ``ci_method`` column.

    With ``out_deltas``, ``deltas.tsv`` holds every method's paired difference to the best of
    the classical ``baselines`` (:func:`paired_deltas`); with ``out_per_site`` and ``qc_path``
    (whose ``site`` column gives each subject's site), ``per_site.tsv`` holds the metrics of
    each method on each site's test subjects (:func:`per_site_metrics`).
    """
    probes = [pd.read_csv(p, sep="\t", dtype={"subject": str}) for p in probe_files]
    predictions = pd.concat(
        [pd.read_csv(p, sep="\t", dtype={"subject": str}) for p in prediction_files]
        + [probe.assign(method=probe["method"] + FROZEN_SUFFIX) for probe in probes],
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
    if out_deltas is not None:
        deltas = paired_deltas(
            predictions, summary, baselines, n_resamples=n_resamples, seed=seed, level=level
        )
        atomic.write_tsv(out_deltas, deltas)
    if out_per_site is not None:
        if qc_path is None:
            raise ValueError("per-site metrics need qc_path (the sites of the subjects)")
        qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
        atomic.write_tsv(out_per_site, per_site_metrics(predictions, subject_sites(qc)))


def best_baseline(summary: pd.DataFrame, baselines: Sequence[str]) -> str | None:
    """The classical baseline with the highest mean balanced accuracy over folds (then AUC).

    ``baselines`` are the candidate methods (scikit-learn family, the majority baseline left
    out by the caller); None when none of them is in ``summary``.
    """
    candidates = summary[summary["method"].isin(list(baselines))]
    if candidates.empty:
        return None
    ordered = candidates.assign(
        _b=candidates[f"{SELECTION_METRIC}_mean"].fillna(-1),
        _a=candidates["auc_mean"].fillna(-1),
    ).sort_values(["_b", "_a"], ascending=False, kind="stable")
    return str(ordered["method"].iloc[0])


def delta_ci_method(n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL) -> str:
    """The sentence that names the interval of :func:`paired_deltas`."""
    return (
        "paired subject bootstrap of pooled out-of-fold predictions (the same resampled "
        f"subjects for the method and the baselines), stratified by label, {n_resamples} "
        f"resamples, {level:.0%} percentile; the best baseline is picked again by "
        f"{SELECTION_METRIC.replace('_', ' ')} in every resample"
    )


def verdict(ci_low: float, ci_high: float) -> str:
    """Plain words for a difference interval: above 0, below 0 or containing 0."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "not estimable"
    if ci_low > 0:
        return "better"
    if ci_high < 0:
        return "worse"
    return "not distinguishable"


def paired_deltas(
    predictions: pd.DataFrame,
    summary: pd.DataFrame,
    baselines: Sequence[str],
    *,
    metrics: Sequence[str] = DELTA_METRICS,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> pd.DataFrame:
    """Every method's difference to the best classical baseline, with a paired interval.

    The baseline is :func:`best_baseline` of ``summary`` (picked on the same test folds, so it
    is itself a selection). The point estimate is the method's metric on its pooled
    out-of-fold predictions minus the baseline's, on the subjects both predicted. The interval
    comes from a subject-level bootstrap stratified by label (as for ``summary.tsv``): in each
    resample the same drawn subjects weight the predictions of the method and of every
    candidate baseline, and the best baseline is picked again by balanced accuracy in that
    resample, so the interval carries the uncertainty of picking it (the difference is taken
    to whichever baseline looks best, which makes "better" harder to reach, not easier).

    Parameters
    ----------
    predictions : DataFrame
        Columns ``method``, ``subject``, ``y_true``, ``y_pred``, ``y_score``; one row per test
        sample of every method.
    summary : DataFrame
        ``summary.tsv`` (``<metric>_mean`` columns), to name the best baseline.
    baselines : sequence of str
        The candidate baselines.
    metrics : sequence of str
        Metrics of :data:`~brainfuse.core.metrics.METRICS` to compare.
    n_resamples, seed, level : int, int, float
        Bootstrap resamples, their seed (same seed and inputs, same intervals) and coverage.

    Returns
    -------
    DataFrame
        One row per method and metric (:data:`DELTA_COLUMNS`); ``verdict`` is ``better``
        (interval above 0), ``worse`` (below 0), ``not distinguishable`` or ``not estimable``.
        Empty when no baseline ran.
    """
    best = best_baseline(summary, baselines)
    if best is None:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    candidates = [b for b in dict.fromkeys(baselines) if b in set(predictions["method"])]
    frames = {m: f for m, f in predictions.groupby("method", sort=False)}
    text = delta_ci_method(n_resamples, level)
    compared = list(dict.fromkeys([best, *candidates]))
    memo: _Memo = {}
    rows = []
    for method in summary["method"]:
        if method not in frames:
            continue
        paired = _paired_resamples(
            {m: frames[m] for m in dict.fromkeys([method, *compared])}, n_resamples, seed, memo
        )
        for metric in metrics:
            delta = paired.observed[metric][method] - paired.observed[metric][best]
            low, high = np.nan, np.nan
            if paired.resampled is not None:
                picked = _best_per_resample(
                    paired.resampled[metric], paired.resampled[SELECTION_METRIC], compared
                )
                diffs = paired.resampled[metric][method] - picked
                diffs = diffs[np.isfinite(diffs)]
                if len(diffs):
                    tail = (1 - level) / 2 * 100
                    low, high = np.percentile(diffs, [tail, 100 - tail])
            rows.append(
                {
                    "method": method,
                    "baseline": best,
                    "metric": metric,
                    "delta": float(delta),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "verdict": verdict(float(low), float(high)),
                    "n_subjects": paired.n_subjects,
                    "ci_method": text,
                }
            )
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _best_per_resample(
    resampled: dict[str, np.ndarray], selection: dict[str, np.ndarray], baselines: Sequence[str]
) -> np.ndarray:
    """Each resample's metric of the baseline that scores best there by the selection metric
    (the first listed wins ties, so with equal scores the summary's best is kept)."""
    chosen = np.argmax(np.stack([np.nan_to_num(selection[b], nan=-1) for b in baselines]), axis=0)
    stacked = np.stack([resampled[b] for b in baselines])
    return stacked[chosen, np.arange(stacked.shape[1])]


@dataclass
class _Paired:
    """Metrics of several methods on the same subjects: ``observed[metric][method]`` once and
    ``resampled[metric][method]`` per bootstrap resample (None: too few subjects per class)."""

    observed: dict[str, dict[str, float]]
    resampled: dict[str, dict[str, np.ndarray]] | None
    n_subjects: int


#: a method's observed and resampled metrics on a set of subjects (the baselines' are reused
#: for every method predicted on the same subjects)
_Memo = dict[tuple[str, tuple[str, ...]], tuple[dict[str, float], dict[str, np.ndarray] | None]]


def _paired_resamples(
    frames: dict[str, pd.DataFrame], n_resamples: int, seed: int, memo: _Memo
) -> _Paired:
    """Observed metrics and the same bootstrap resamples for several methods.

    Only subjects every method predicted are kept, so each resample weights the same subjects
    in every method; resampling is stratified by label as in ``summary.tsv``. The same subjects
    and seed give the same resamples, so ``memo`` keeps each method's metrics per subject set.
    """
    common = sorted(set.intersection(*(set(f["subject"].astype(str)) for f in frames.values())))
    first = next(iter(frames.values()))
    labels = (
        first.assign(subject=first["subject"].astype(str))
        .drop_duplicates("subject")
        .set_index("subject")
        .loc[common, "y_true"]
        .to_numpy()
        .astype(int)
    )
    position = {s: i for i, s in enumerate(common)}
    enough = len(common) > 0 and np.unique(labels, return_counts=True)[1].min() >= (
        MIN_SUBJECTS_PER_CLASS
    )
    counts = _subject_counts(labels, n_resamples, np.random.default_rng(seed)) if enough else None
    observed: dict[str, dict[str, float]] = {metric: {} for metric in METRICS}
    resampled: dict[str, dict[str, np.ndarray]] = {metric: {} for metric in METRICS}
    for method, frame in frames.items():
        key = (method, tuple(common))
        if key not in memo:
            memo[key] = _method_resamples(frame, position, counts, n_resamples)
        once, many = memo[key]
        for metric in METRICS:
            observed[metric][method] = once[metric]
            if many is not None:
                resampled[metric][method] = many[metric]
    return _Paired(observed, resampled if counts is not None else None, len(common))


def _method_resamples(
    frame: pd.DataFrame, position: dict[str, int], counts: np.ndarray | None, n_resamples: int
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """One method's metrics on the subjects of ``position``: once, and per row of ``counts``
    (how often each subject is drawn in each resample; None: no resamples)."""
    kept = frame[frame["subject"].astype(str).isin(position)]
    sample_subject = kept["subject"].astype(str).map(position).to_numpy()
    y = (
        kept["y_true"].to_numpy().astype(int),
        kept["y_pred"].to_numpy().astype(int),
        kept["y_score"].to_numpy(dtype=float),
    )
    # the observed value: every subject once, through the same weighted formulas
    once = {m: float(v[0]) for m, v in _weighted_metrics(np.ones((1, len(kept))), *y).items()}
    if counts is None:
        return once, None
    # resamples in chunks: bounds the weight matrix as in summary.tsv's intervals
    chunk = max(1, _CHUNK_CELLS // max(1, len(kept)))
    parts = [
        _weighted_metrics(counts[begin : begin + chunk][:, sample_subject], *y)
        for begin in range(0, n_resamples, chunk)
    ]
    return once, {m: np.concatenate([part[m] for part in parts]) for m in METRICS}


def subject_sites(qc: pd.DataFrame) -> pd.Series:
    """Each subject's site from ``qc.tsv`` (its first row with a site); empty without sites."""
    if "site" not in qc.columns:
        return pd.Series(dtype=str)
    rows = qc[qc["site"].astype(str) != ""].drop_duplicates("subject")
    return pd.Series(
        rows["site"].astype(str).to_numpy(), index=rows["subject"].astype(str).to_numpy()
    )


def per_site_metrics(predictions: pd.DataFrame, sites: pd.Series) -> pd.DataFrame:
    """Metrics of every method on the pooled test predictions of each site's subjects.

    Parameters
    ----------
    predictions : DataFrame
        Columns ``method``, ``subject``, ``y_true``, ``y_pred``, ``y_score``.
    sites : Series
        Site of each subject (index: subject), e.g. :func:`subject_sites`.

    Returns
    -------
    DataFrame
        One row per method and site (:data:`PER_SITE_COLUMNS`), sites sorted. Balanced
        accuracy and AUC are NaN on a site whose test subjects are all of one class (both are
        undefined there); accuracy is always defined. Empty when no subject has a site.
    """
    site_of = predictions["subject"].astype(str).map(sites)
    rows = []
    for (method, site), group in (
        predictions.assign(_site=site_of)
        .dropna(subset="_site")
        .groupby(["method", "_site"], sort=True)
    ):
        y_true = group["y_true"].to_numpy().astype(int)
        both = len(np.unique(y_true)) == 2
        metrics = (
            binary_metrics(y_true, group["y_pred"], group["y_score"])
            if both
            else {"accuracy": float((group["y_pred"].to_numpy().astype(int) == y_true).mean())}
        )
        rows.append(
            {
                "method": method,
                "site": site,
                "n_subjects": group["subject"].nunique(),
                "n_samples": len(group),
                "n_positive": int(group.loc[group["y_true"] == 1, "subject"].nunique()),
                "n_negative": int(group.loc[group["y_true"] == 0, "subject"].nunique()),
                "accuracy": metrics["accuracy"],
                "balanced_accuracy": metrics.get("balanced_accuracy", np.nan),
                "auc": metrics.get("auc", np.nan),
            }
        )
    return pd.DataFrame(rows, columns=PER_SITE_COLUMNS)


def site_spread(per_site: pd.DataFrame) -> pd.DataFrame:
    """Per method: number of sites, and mean, SD, min and max over sites of balanced accuracy
    and AUC (sites where a metric is undefined left out of its statistics)."""
    rows = []
    for method, group in per_site.groupby("method", sort=False):
        row: dict[str, object] = {"method": method, "sites": len(group)}
        for metric in DELTA_METRICS:
            values = group[metric].dropna().to_numpy(dtype=float)
            row |= {
                f"{metric}_sites": len(values),
                f"{metric}_mean": values.mean() if len(values) else np.nan,
                f"{metric}_sd": values.std(ddof=1) if len(values) > 1 else np.nan,
                f"{metric}_min": values.min() if len(values) else np.nan,
                f"{metric}_max": values.max() if len(values) else np.nan,
            }
        rows.append(row)
    return pd.DataFrame(rows)
