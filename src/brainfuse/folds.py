"""Cross-validation folds grouped by subject (or site), stratified by label, with inner validation.

Every method reads the same fold file, so all results are paired by fold. The folds are planned on
the subjects present in the caches, which hold included samples only; before splitting, the class
sizes are checked against the number of folds so that an exclusion stops with the counts to act on
instead of an error inside a fold. ``cv.n_folds: auto`` picks the largest number that works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.errors import ConfigError

#: The most folds ``cv.n_folds: auto`` plans (the schema default for an explicit number).
AUTO_MAX_FOLDS = 5


def subjects_per_class(samples: pd.DataFrame) -> dict[str, int]:
    """Distinct subjects of each label in a table with ``subject`` and ``label`` columns."""
    counts = samples.groupby(samples["label"].astype(str))["subject"].nunique()
    return {str(label): int(n) for label, n in counts.items()}


def feasible_n_folds(class_sizes: Mapping[str, int], upper: int) -> list[int]:
    """Numbers of subject-grouped folds, 2 to ``upper``, that suit every class size.

    A class of ``n`` subjects suits ``k`` folds when every fold tests one of them and the fold
    that tests the most of them (``ceil(n / k)``, by pigeonhole) still leaves two for the
    training and validation subjects. Three subjects suit three folds but not two.
    """
    return [
        k
        for k in range(2, upper + 1)
        if all(n >= k and n - math.ceil(n / k) >= 2 for n in class_sizes.values())
    ]


def _counts_text(class_sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(class_sizes.items()))


def check_feasible(samples: pd.DataFrame, n_folds: int, group_by: str = "subject") -> None:
    """Raise unless every fold can have a training and a validation subject of each class.

    Parameters
    ----------
    samples : DataFrame
        Labelled samples with ``subject``, ``label`` and ``site`` columns.
    n_folds : int
        Outer folds (not used with ``group_by="site"``: one fold per site).
    group_by : {"subject", "site"}

    Raises
    ------
    ConfigError
        With the subjects per class (per site with ``group_by="site"``) and, for subject
        folds, the largest feasible ``cv.n_folds``.
    """
    sizes = subjects_per_class(samples)
    if group_by == "site":
        per_site = {
            str(site): subjects_per_class(part)
            for site, part in samples.groupby(samples["site"].astype(str))
        }
        # Leaving a site out trains on the others: each class needs two subjects there.
        short = [
            site
            for site, here in per_site.items()
            if any(n - here.get(label, 0) < 2 for label, n in sizes.items())
        ]
        if len(per_site) < 2 or short:
            counts = "; ".join(f"site {s}: {_counts_text(c)}" for s, c in sorted(per_site.items()))
            raise ConfigError(
                "cv.group_by: site needs at least two sites and, with any one site left out, at "
                "least 2 subjects of each class in the others (training and validation); "
                f"subjects per class: {counts}. Use cv.group_by: subject"
                + (f" (leaving out site {', '.join(short)} fails)" if short else "")
            )
        return
    feasible = feasible_n_folds(sizes, upper=max(2, min(sizes.values(), default=0)))
    if n_folds not in feasible:
        largest = (
            f"the largest feasible cv.n_folds is {feasible[-1]} (or set cv.n_folds: auto)"
            if feasible
            else "no number of folds works: each class needs at least 3 subjects"
        )
        raise ConfigError(
            f"cv.n_folds={n_folds} cannot give every fold a test, a validation and a training "
            f"subject of each class; subjects per class: {_counts_text(sizes)}; {largest}"
        )


def planned_n_folds(cv: Mapping[str, Any], subjects: pd.DataFrame) -> int:
    """The number of outer folds, resolved when the workflow is planned.

    Parameters
    ----------
    cv : mapping
        The ``cv`` config section; ``n_folds`` is an integer or ``"auto"``.
    subjects : DataFrame
        The discovered samples with ``subject``, ``label`` and ``site`` (participants joined in);
        rows without a label are left out, as QC will exclude them.

    Returns
    -------
    int
        The number of sites with ``group_by: site``; else ``n_folds``, or for ``auto`` the largest
        feasible number up to ``AUTO_MAX_FOLDS``. Exclusions are only known after the caches: the
        folds job checks the number on the included subjects (``check_feasible``), so a
        configured number is not refused here and a dry run of a small dataset still plans.

    Raises
    ------
    ConfigError
        When ``auto`` finds no feasible number for the discovered subjects.
    """
    labelled = subjects[subjects["label"].notna()]
    if labelled.empty:
        if cv["n_folds"] == "auto":
            raise ConfigError("cv.n_folds: auto needs labelled subjects; none were discovered")
        return int(cv["n_folds"])
    if cv["group_by"] == "site":
        return int(labelled["site"].astype(str).nunique())
    if cv["n_folds"] == "auto":
        sizes = subjects_per_class(labelled)
        feasible = feasible_n_folds(sizes, AUTO_MAX_FOLDS)
        if not feasible:
            raise ConfigError(
                f"cv.n_folds: auto found no number of folds from 2 to {AUTO_MAX_FOLDS} that gives "
                "every fold a test, a validation and a training subject of each class; subjects "
                f"per class: {_counts_text(sizes)} (each class needs at least 3 subjects)"
            )
        return feasible[-1]
    return int(cv["n_folds"])


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

    Raises
    ------
    ConfigError
        When the classes are too small for ``n_folds`` (``check_feasible``).
    """
    # scikit-learn is imported here so that planning (planned_n_folds) stays light.
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold

    samples = samples.reset_index(drop=True)
    check_feasible(samples, n_folds, group_by)
    labels = samples["label"].astype(str).to_numpy()
    subjects = samples["subject"].astype(str).to_numpy()
    if group_by == "site":
        outer = LeaveOneGroupOut().split(samples, labels, samples["site"].astype(str).to_numpy())
    else:
        outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            samples, labels, subjects
        )
    rows = []
    n_inner = max(2, int(round(1 / val_fraction)))
    for fold, (train_idx, test_idx) in enumerate(outer):
        # Small training sets cannot fill 1/val_fraction inner folds; fewer, larger ones still
        # keep every class in the validation split.
        training = subjects_per_class(samples.iloc[train_idx])
        smallest = min(training.get(label, 0) for label in set(labels))
        if smallest < 2:
            raise ValueError(
                f"fold {fold}: a class has fewer than 2 training subjects "
                f"({_counts_text(training)}); lower cv.n_folds"
            )
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


def write_folds(
    samples_tables: list[pd.DataFrame],
    cv: Mapping[str, Any],
    seed: int,
    n_folds: int,
    out: str,
    out_summary: str,
) -> None:
    """Folds over the union of labelled samples of every cache, and a summary of how many.

    Parameters
    ----------
    samples_tables : list of DataFrame
        Each cache's ``subject``, ``label`` and ``site`` (the caches hold included samples only).
    cv : mapping
        The ``cv`` config section as written (``n_folds`` may be ``"auto"``).
    seed : int
    n_folds : int
        The number of folds planned with the workflow (``planned_n_folds``): the fold jobs are
        named after it, so it is checked here, on the included subjects, and never changed.
    out, out_summary : str
        ``folds.tsv`` and the JSON beside it: the number of folds, what was asked for, the
        included subjects per class and why (for the report).
    """
    samples = pd.concat(
        [t[["subject", "label", "site"]] for t in samples_tables if len(t)], ignore_index=True
    )
    if samples.empty:
        raise ValueError("no labelled samples in any cache: nothing to cross-validate")
    labels_per_subject = samples.groupby("subject")["label"].nunique()
    # A subject's label is constant when it comes from participants.tsv; keep one row per
    # subject-label pair so that modalities do not weight subjects unequally.
    samples = samples.drop_duplicates(["subject", "label"])
    folds = make_folds(samples, n_folds, cv["val_fraction"], seed, cv["group_by"])
    if folds["fold"].nunique() != n_folds:  # only leave-site-out can differ: a site lost
        raise ConfigError(
            f"{n_folds} folds were planned (one per discovered site) but the included subjects "
            f"come from {folds['fold'].nunique()} sites: exclusions removed a whole site; "
            "rerun to plan again, or use cv.group_by: subject"
        )
    folds["n_labels"] = folds["subject"].map(labels_per_subject).astype(int)
    atomic.write_tsv(out, folds)
    atomic.write_json(out_summary, fold_summary(samples, cv, n_folds))


def fold_summary(samples: pd.DataFrame, cv: Mapping[str, Any], n_folds: int) -> dict[str, Any]:
    """How many outer folds there are and why, in words the report can show."""
    if cv["group_by"] == "site":
        reason = f"cv.group_by: site: one fold per site ({n_folds} sites)"
    elif cv["n_folds"] == "auto":
        reason = (
            f"cv.n_folds: auto chose {n_folds}, the largest number up to {AUTO_MAX_FOLDS} that "
            "gives every fold a test, a validation and a training subject of each class"
        )
    else:
        reason = f"cv.n_folds: {n_folds} as configured"
    return {
        "n_folds": n_folds,
        "requested": cv["n_folds"],
        "group_by": cv["group_by"],
        "subjects_per_class": subjects_per_class(samples),
        "reason": reason,
    }
