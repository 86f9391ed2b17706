"""Learning curves: every method refitted on a fraction of each fold's training subjects.

The subsample is drawn from ``folds.tsv`` alone: within each outer fold, each role (``train``,
the subjects a model is fitted on, and ``val``, those it is selected and early-stopped on) and
each label, the subjects are put in one seeded order and the first ``ceil(fraction * n)`` are
kept (at least one). The order does not depend on the fraction, so the subsamples are nested
(the 10 % subjects are among the 25 % ones), they keep the label proportions of the fold, and
validation stays inside the subsampled training subjects. Test subjects are copied unchanged and
their labels are never read. The subsampled table has the format of ``folds.tsv``, so the normal
stage jobs train on it as they do on the full folds (``workflow/rules/curves.smk``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.errors import ConfigError
from brainfuse.folds import read_folds

__all__ = [
    "CURVE_COLUMNS",
    "CurvePoint",
    "curve_methods",
    "fraction_label",
    "learning_curves",
    "subsample_folds",
    "write_subsampled_folds",
]

#: the roles that are subsampled; ``test`` is kept whole
TRAINING_ROLES = ("train", "val")
CURVE_COLUMNS = [
    "method",
    "family",
    "fraction",
    "n_train_subjects",
    "fold",
    "balanced_accuracy",
    "auc",
]


def fraction_label(fraction: float) -> str:
    """The fraction as a percentage for paths (``0.1`` -> ``"10"``, ``0.125`` -> ``"12.5"``)."""
    return f"{100 * fraction:g}"


def _order(subjects: Sequence[str], seed: int, fold: int, role: str, label: str) -> list[str]:
    """The subjects of one stratum in a seeded order that depends on the stratum only."""
    # crc32 rather than hash(): str hashes change between Python processes
    rng = np.random.default_rng(
        [seed, fold, TRAINING_ROLES.index(role), zlib.crc32(label.encode())]
    )
    ordered = sorted(subjects)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def subsample_folds(
    folds: pd.DataFrame, labels: Mapping[str, str], fraction: float, seed: int
) -> pd.DataFrame:
    """Keep ``fraction`` of each fold's training and validation subjects, stratified by label.

    Parameters
    ----------
    folds : DataFrame
        ``folds.tsv``: ``fold``, ``subject``, ``role`` (and any other columns, kept).
    labels : mapping of str to str
        The label of every training and validation subject (those of test subjects are not
        needed and not read).
    fraction : float
        In (0, 1]; each (fold, role, label) stratum keeps ``ceil(fraction * n)`` subjects, at
        least one, so every class stays in the fitted and the validation subjects.
    seed : int
        Seed of the order within each stratum.

    Returns
    -------
    DataFrame
        The rows of ``folds`` that are kept, in their order: every test row, and the kept
        training and validation rows. Smaller fractions with the same seed give subsets.

    Raises
    ------
    ValueError
        For a fraction outside (0, 1] or a training subject without a label.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a learning-curve fraction must be in (0, 1], got {fraction}")
    subjects = folds["subject"].astype(str)
    training = folds["role"].isin(TRAINING_ROLES)
    missing = sorted(set(subjects[training]) - set(labels))
    if missing:
        raise ValueError(f"no label for training subjects {missing[:5]}")
    keep = ~training
    for (fold, role), rows in folds[training].groupby(["fold", "role"]):
        members = subjects[rows.index]
        for label, stratum in members.groupby(members.map(labels)):
            order = _order(list(stratum), seed, int(fold), str(role), str(label))
            # rounded first: 0.1 * 30 is 3.0000000000000004 in floating point
            kept = set(order[: max(1, math.ceil(round(fraction * len(order), 9)))])
            keep.loc[stratum.index[stratum.isin(kept)]] = True
    return folds[keep].reset_index(drop=True)


def write_subsampled_folds(
    folds_path: str, labels: Mapping[str, str], fraction: float, seed: int, out: str
) -> None:
    """:func:`subsample_folds` of ``folds_path``, written to ``out`` in its format.

    ``labels`` may hold any subjects: only those of the training and validation subjects are
    passed on.
    """
    folds = read_folds(folds_path)
    training = set(folds.loc[folds["role"].isin(TRAINING_ROLES), "subject"].astype(str))
    known = {s: str(y) for s, y in labels.items() if str(s) in training}
    atomic.write_tsv(out, subsample_folds(folds, known, fraction, seed))


def curve_methods(
    requested: Sequence[str] | None, run_methods: Sequence[str], known: Sequence[str]
) -> list[str]:
    """The methods the curves refit: ``requested`` (None: every run method) that run.

    A known method that does not run (not under ``methods``, or its modality is absent) is
    left out, as it is from the results: a config that trims ``methods`` keeps its curves list.

    Raises
    ------
    ConfigError
        For a requested name that is no method at all (``known``: the catalog's names).
    """
    if requested is None:
        return list(run_methods)
    unknown = [m for m in requested if m not in known]
    if unknown:
        raise ConfigError(f"curves.methods: {unknown} are not methods ({sorted(known)})")
    return [m for m in requested if m in run_methods]


@dataclass(frozen=True)
class CurvePoint:
    """One method at one training fraction: its test predictions over every fold.

    Attributes
    ----------
    method, family : str
        The method and ``baseline`` or ``deep``.
    fraction : float
    folds_path : str
        The (subsampled) folds the predictions were made with.
    predictions : sequence of str
        ``predictions.tsv`` of the method's last stage, one per fold.
    """

    method: str
    family: str
    fraction: float
    folds_path: str
    predictions: Sequence[str]


def learning_curves(points: Sequence[CurvePoint]) -> pd.DataFrame:
    """Balanced accuracy and AUC of every point on every fold (:data:`CURVE_COLUMNS`).

    ``n_train_subjects`` counts the fold's training and validation subjects at that fraction:
    all the subjects the model learnt from.
    """
    # imported here: the Snakefile imports this module while planning, which stays light
    from brainfuse.core.metrics import binary_metrics

    rows = []
    for point in points:
        folds = read_folds(point.folds_path)
        n_train = folds[folds["role"].isin(TRAINING_ROLES)].groupby("fold")["subject"].nunique()
        for path in point.predictions:
            predictions = pd.read_csv(path, sep="\t", dtype={"subject": str})
            for fold, group in predictions.groupby("fold"):
                metrics = binary_metrics(group["y_true"], group["y_pred"], group["y_score"])
                rows.append(
                    {
                        "method": point.method,
                        "family": point.family,
                        "fraction": point.fraction,
                        "n_train_subjects": int(n_train[fold]),
                        "fold": int(fold),
                        "balanced_accuracy": metrics["balanced_accuracy"],
                        "auc": metrics["auc"],
                    }
                )
    table = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return table.sort_values(["method", "fraction", "fold"], kind="stable").reset_index(drop=True)
