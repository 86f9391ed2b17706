"""Shortcut and leakage diagnostics: how well site, motion and the label can be predicted from
each feature set, before and after in-fold harmonisation.

In multi-site data a classifier can score by recognising the site instead of the diagnosis. For
every outer fold and every feature set the baselines use, simple linear probes are fitted on the
fold's training subjects and scored on its test subjects, once on the raw features and once after
the in-fold ComBat of :func:`brainfuse.methods.baselines.harmonise.adjust_in_fold` (the config's
``harmonise`` settings with ``method`` forced to ``combat``, then the config's ``confounds``),
which is itself fitted on the training subjects only. The probes:

- ``site``: logistic regression on standardised features, balanced accuracy; chance is one over
  the number of training sites. Test samples from a site absent from training are not scored
  (no classifier can name a site it never saw).
- ``motion``: ridge regression of mean framewise displacement (fMRI QC); the score is the
  correlation of predicted and true mean FD on the test subjects (chance 0). A correlation, not
  R^2: with a handful of test subjects R^2 is dominated by the offset of their mean.
- ``label``: logistic regression of the diagnosis, balanced accuracy; chance is one over the
  number of classes. When the label is confounded with site, this score drops after
  harmonisation while site predictability was high before: :func:`flags` names such rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from brainfuse.core.cache import Cache
from brainfuse.folds import subjects_of
from brainfuse.methods.baselines.estimators import tangent_space
from brainfuse.methods.baselines.features import feature_extractor
from brainfuse.methods.baselines.harmonise import adjust_in_fold, sample_columns

__all__ = [
    "COLUMNS",
    "Probe",
    "diagnose",
    "diagnose_fold",
    "flags",
    "probe_label",
    "probe_motion",
    "probe_site",
    "subject_mean_fd",
]

#: Columns of ``diagnostics.tsv``.
COLUMNS = ["feature_set", "target", "metric", "fold", "before", "after", "chance", "n_test"]

#: A site probe this far above chance before harmonisation marks site as a possible shortcut.
SITE_MARGIN = 0.2
#: A label score falling this much after harmonisation marks the label as carried by site.
LABEL_DROP = 0.1


@dataclass
class Probe:
    """One probe fitted on training samples and scored on test samples."""

    target: str
    metric: str
    score: float
    chance: float
    n_test: int
    model: Pipeline | None


def _classifier(seed: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed),
    )


def probe_site(
    x: np.ndarray, sites: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0
) -> Probe:
    """Site classifier fitted on ``train`` rows, balanced accuracy on the ``test`` rows whose
    site has training samples."""
    sites = np.asarray(sites, dtype=str)
    seen = np.unique(sites[train])
    chance = 1.0 / len(seen)
    scored = test & np.isin(sites, seen)
    if len(seen) < 2 or not scored.any():
        return Probe("site", "balanced_accuracy", np.nan, chance, int(scored.sum()), None)
    model = _classifier(seed).fit(x[train], sites[train])
    with warnings.catch_warnings():  # a small test fold may lack a site the model predicts
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        score = balanced_accuracy_score(sites[scored], model.predict(x[scored]))
    return Probe("site", "balanced_accuracy", float(score), chance, int(scored.sum()), model)


def probe_label(
    x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0
) -> Probe:
    """Diagnosis classifier fitted on ``train`` rows, balanced accuracy on ``test`` rows."""
    labels = np.asarray(labels, dtype=str)
    classes = np.unique(labels[train])
    chance = 1.0 / len(classes)
    if len(classes) < 2 or not test.any():
        return Probe("label", "balanced_accuracy", np.nan, chance, int(test.sum()), None)
    model = _classifier(seed).fit(x[train], labels[train])
    score = balanced_accuracy_score(labels[test], model.predict(x[test]))
    return Probe("label", "balanced_accuracy", float(score), chance, int(test.sum()), model)


def probe_motion(x: np.ndarray, fd: np.ndarray, train: np.ndarray, test: np.ndarray) -> Probe:
    """Ridge regression of mean FD (penalty by leave-one-out on ``train``); the score is the
    Pearson correlation of predicted and true values on ``test``: 0 for constant predictions,
    NaN for constant true values.

    Rows without a mean FD are left out of both sides.
    """
    fd = np.asarray(fd, dtype=float)
    known = np.isfinite(fd)
    train, test = train & known, test & known
    if train.sum() < 3 or test.sum() < 2:
        return Probe("motion", "correlation", np.nan, 0.0, int(test.sum()), None)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
    model.fit(x[train], fd[train])
    predicted = model.predict(x[test])
    score = np.nan  # true values all equal: nothing to correlate with
    if np.ptp(predicted) <= 1e-9 * (1.0 + np.abs(predicted).max()):
        score = 0.0  # features that carry nothing about FD (e.g. regressed out) give a constant
    elif np.ptp(fd[test]) > 0:
        score = float(np.corrcoef(predicted, fd[test])[0, 1])
    return Probe("motion", "correlation", score, 0.0, int(test.sum()), model)


def diagnose_fold(
    x: np.ndarray,
    samples: pd.DataFrame,
    train: np.ndarray,
    test: np.ndarray,
    harmonise: Mapping,
    confounds: Sequence[str] = (),
    participants: pd.DataFrame | None = None,
    absent_ok: Collection[str] = (),
    seed: int = 0,
) -> dict[str, tuple[Probe, Probe]]:
    """Every probe of one fold on one feature set, before and after in-fold harmonisation.

    Parameters
    ----------
    x : ndarray (n_samples, n_features)
        Features of every sample (vectors; tangent-space vectors already fitted in the fold).
    samples : DataFrame
        One row per sample: ``subject``, ``label``, the harmonisation batch column (``site``)
        and, where known, ``mean_fd``.
    train, test : ndarray of bool
        The fold's training and test samples; every fitted parameter sees ``train`` only.
    harmonise : mapping
        The config's ``harmonise`` section; ``method`` is forced to ``combat``.
    confounds, participants, absent_ok
        As in :func:`~brainfuse.methods.baselines.harmonise.adjust_in_fold`.
    seed : int
        Seed of the classifiers.

    Returns
    -------
    dict
        Target -> (probe before, probe after).
    """
    train, test = np.asarray(train, dtype=bool), np.asarray(test, dtype=bool)
    # harmonise.covariates apply to the baselines only when method is combat; a covariate named
    # in the defaults but absent from this dataset is left out here (the planning check warns)
    known = set(samples.columns) | (
        set(participants.columns) if participants is not None else set()
    )
    covariates = [c for c in harmonise["covariates"] if c in known]
    settings = {**harmonise, "method": "combat", "covariates": covariates}
    after, _ = adjust_in_fold(x, samples, train, settings, confounds, participants, absent_ok)
    table = sample_columns(samples, participants, [harmonise["batch"]])
    sites = table[harmonise["batch"]].fillna("n/a").astype(str).to_numpy()
    labels = samples["label"].astype(str).to_numpy()
    fd = (
        pd.to_numeric(samples["mean_fd"], errors="coerce").to_numpy()
        if "mean_fd" in samples.columns
        else np.full(len(samples), np.nan)
    )
    out = {}
    for target, probe in (
        ("site", lambda z: probe_site(z, sites, train, test, seed)),
        ("motion", lambda z: probe_motion(z, fd, train, test)),
        ("label", lambda z: probe_label(z, labels, train, test, seed)),
    ):
        out[target] = (probe(x), probe(after))
    return out


def subject_mean_fd(fmri: Cache | None) -> pd.Series:
    """Each subject's mean FD over its fMRI runs (empty without an fMRI cache)."""
    if fmri is None or "mean_fd" not in fmri.table.columns:
        return pd.Series(dtype=float)
    table = fmri.table.assign(mean_fd=pd.to_numeric(fmri.table["mean_fd"], errors="coerce"))
    return table.groupby(table["subject"].astype(str))["mean_fd"].mean()


def diagnose(
    caches: Mapping[str, Cache],
    folds: pd.DataFrame,
    feature_sets: Mapping[str, str],
    harmonise: Mapping,
    confounds: Sequence[str] = (),
    participants: pd.DataFrame | None = None,
    absent_ok: Collection[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """The diagnostics table over folds and feature sets.

    Parameters
    ----------
    caches : mapping
        Modality -> cache.
    folds : DataFrame
        The folds table (``brainfuse.folds``); ``train`` rows are the probes' training subjects.
    feature_sets : mapping
        Feature set (a key of ``FEATURES`` or ``"module:function"``) -> the modality it reads.
    harmonise, confounds, participants, absent_ok, seed
        As in :func:`diagnose_fold`.

    Returns
    -------
    DataFrame
        :data:`COLUMNS`, one row per feature set, target and fold.
    """
    rows = []
    mean_fd = subject_mean_fd(caches.get("fmri"))
    for name, modality in feature_sets.items():
        cache = caches[modality]
        samples = cache.table.reset_index(drop=True).copy()
        if "mean_fd" not in samples.columns:  # EEG, SC: the subject's fMRI motion
            samples["mean_fd"] = samples["subject"].astype(str).map(mean_fd)
        features = feature_extractor(name)({modality: cache})
        labelled = samples["label"].notna().to_numpy()
        for fold in sorted(folds["fold"].unique()):
            subject = samples["subject"].astype(str)
            train = subject.isin(subjects_of(folds, fold, "train")).to_numpy() & labelled
            test = subject.isin(subjects_of(folds, fold, "test")).to_numpy() & labelled
            x = features
            if name == "tangent":  # the tangent reference is fitted on training samples
                x = tangent_space().fit(list(features[train])).transform(list(features))
            probes = diagnose_fold(
                np.asarray(x, dtype=np.float64),
                samples,
                train,
                test,
                harmonise,
                confounds,
                participants,
                absent_ok,
                seed,
            )
            for target, (before, after) in probes.items():
                rows.append(
                    {
                        "feature_set": name,
                        "target": target,
                        "metric": before.metric,
                        "fold": int(fold),
                        "before": before.score,
                        "after": after.score,
                        "chance": before.chance,
                        "n_test": before.n_test,
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def flags(table: pd.DataFrame) -> list[str]:
    """Plain-words warnings: feature sets where site is a likely shortcut for the label.

    A feature set is flagged when, averaged over folds, site is predicted at least
    :data:`SITE_MARGIN` above chance before harmonisation and the label's score falls by at
    least :data:`LABEL_DROP` after it: part of the label's score came from site.
    """
    out = []
    mean = table.groupby(["feature_set", "target"])[["before", "after", "chance"]].mean()
    for name in dict.fromkeys(table["feature_set"]):
        if (name, "site") not in mean.index or (name, "label") not in mean.index:
            continue
        site, label = mean.loc[(name, "site")], mean.loc[(name, "label")]
        if site["before"] >= site["chance"] + SITE_MARGIN and (
            label["before"] - label["after"] >= LABEL_DROP
        ):
            out.append(
                f"{name}: the label looks confounded with site - site is predicted at "
                f"{site['before']:.2f} (chance {site['chance']:.2f}) and the label's score falls "
                f"from {label['before']:.2f} to {label['after']:.2f} after in-fold ComBat"
            )
    return out
