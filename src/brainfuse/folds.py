"""Cross-validation folds grouped by subject (or site), stratified by label, with inner validation.

Every method reads the same fold file, so all results are paired by fold.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

from brainfuse.core import atomic


def make_folds(
    samples: pd.DataFrame, n_folds: int, val_fraction: float, seed: int, group_by: str = "subject"
) -> pd.DataFrame:
    """Assign each subject a role (train/val/test) in each outer fold.

    Parameters
    ----------
    samples : DataFrame
        One row per labelled sample with ``subject``, ``label`` and ``site`` columns (several rows
        per subject are allowed: runs, sessions or tasks).
    n_folds : int
        Outer folds (ignored for ``group_by="site"``: one fold per site).
    val_fraction : float
        Share of each fold's training subjects held out for early stopping and model selection.
    group_by : {"subject", "site"}
        ``site`` gives leave-one-site-out outer folds.

    Returns
    -------
    DataFrame with columns ``fold``, ``subject``, ``role``.
    """
    samples = samples.reset_index(drop=True)
    labels = samples["label"].astype(str).to_numpy()
    subjects = samples["subject"].astype(str).to_numpy()
    if group_by == "site":
        outer = LeaveOneGroupOut().split(samples, labels, samples["site"].astype(str).to_numpy())
    else:
        n_subjects_min = samples.groupby("label")["subject"].nunique().min()
        if n_subjects_min < n_folds:
            raise ValueError(
                f"cv.n_folds={n_folds} but the smallest class has {n_subjects_min} subjects"
            )
        outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            samples, labels, subjects
        )
    rows = []
    n_inner = max(2, int(round(1 / val_fraction)))
    for fold, (train_idx, test_idx) in enumerate(outer):
        # Small training sets cannot fill 1/val_fraction inner folds; fewer, larger ones still
        # keep every class in the validation split.
        smallest = min(
            len(set(subjects[train_idx][labels[train_idx] == c])) for c in set(labels[train_idx])
        )
        if smallest < 2:
            raise ValueError(f"fold {fold}: a class has fewer than 2 training subjects")
        inner = StratifiedGroupKFold(
            n_splits=min(n_inner, smallest), shuffle=True, random_state=seed + fold
        )
        fit_idx, val_idx = next(inner.split(train_idx, labels[train_idx], subjects[train_idx]))
        roles = {
            "train": subjects[train_idx][fit_idx],
            "val": subjects[train_idx][val_idx],
            "test": subjects[test_idx],
        }
        for role, members in roles.items():
            rows += [{"fold": fold, "subject": s, "role": role} for s in sorted(set(members))]
    folds = pd.DataFrame(rows)
    _check_disjoint(folds)
    return folds


def _check_disjoint(folds: pd.DataFrame) -> None:
    per_fold = folds.groupby(["fold", "subject"])["role"].nunique()
    if (per_fold > 1).any():
        bad = per_fold[per_fold > 1].index.tolist()[:3]
        raise AssertionError(f"subjects in two roles within a fold: {bad}")


def subjects_of(folds: pd.DataFrame, fold: int, role: str) -> set[str]:
    """Subjects with ``role`` in outer ``fold``."""
    sel = (folds["fold"] == fold) & (folds["role"] == role)
    return set(folds.loc[sel, "subject"].astype(str))


def read_folds(path: str) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str})


def write_folds(samples_tables: list[pd.DataFrame], cv: dict, seed: int, out: str) -> None:
    """Folds over the union of labelled samples of every cache."""
    samples = pd.concat(
        [t[["subject", "label", "site"]] for t in samples_tables if len(t)], ignore_index=True
    )
    if samples.empty:
        raise ValueError("no labelled samples in any cache: nothing to cross-validate")
    labels_per_subject = samples.groupby("subject")["label"].nunique()
    # A subject's label is constant when it comes from participants.tsv; keep one row per
    # subject-label pair so that modalities do not weight subjects unequally.
    samples = samples.drop_duplicates(["subject", "label"])
    folds = make_folds(samples, cv["n_folds"], cv["val_fraction"], seed, cv["group_by"])
    folds["n_labels"] = folds["subject"].map(labels_per_subject).astype(int)
    atomic.write_tsv(out, folds)
