"""In-fold site harmonisation (ComBat) and confound regression of the baselines' features.

Both steps are fitted on the fold's training subjects only (the fit split: not the validation
subjects, not the test subjects) and applied unchanged to every sample of the fold, so nothing a
test subject holds reaches a fitted parameter. ComBat fitted on all subjects before
cross-validation is a known leak; this module is the in-fold alternative.

ComBat is combatlearn's ``ComBatModel`` (Fortin's neuroCombat model: covariate effects kept,
empirical-Bayes site location and scale). combatlearn was chosen over neuroHarmonize because it
separates fit and transform by design, keeps its parameters on the object, and installs beside
numpy 2; neuroHarmonize 2.5.2 pins ``numpy<2`` (this project runs numpy 2) and its apply step
fails on a site absent from training (its issue #50).

Policies (each one recorded in the stage's ``metrics.json``):

- **Small sites**: a site with fewer than ``min_site_size`` training subjects joins one pooled
  batch (:data:`POOLED`); its few subjects cannot estimate a site location and scale of their
  own. If the pooled batch itself has fewer than two training samples, ComBat cannot estimate
  its variance and its samples are left unharmonised.
- **Unseen sites**: a validation or test sample from a site with no training subject is left
  unharmonised. No training subject measured that site's effect; mapping it to the pooled batch
  would apply the averaged effect of other, unrelated sites.
- **Features constant within a training batch** (parcels without coverage at a site): ComBat
  divides by each batch's variance, which is zero there, so these columns are left out of
  ComBat and passed through unchanged (never NaN or inflated).
- **Covariates and confounds**: numeric columns are used as numbers, other columns one-hot
  encoded (first level dropped); missing values are imputed with the training median (numeric)
  or most frequent level (text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from brainfuse.core.errors import ConfigError

__all__ = [
    "POOLED",
    "ConfoundRegressor",
    "CovariateEncoder",
    "SiteHarmoniser",
    "adjust_in_fold",
    "fit_in_fold",
    "sample_columns",
    "subjects_digest",
]

#: The batch of the sites with fewer than ``min_site_size`` training subjects.
POOLED = "pooled small sites"


def sample_columns(
    samples: pd.DataFrame, participants: pd.DataFrame | None, columns: Sequence[str]
) -> pd.DataFrame:
    """The named columns for each sample: from the samples table (per-sample values such as
    ``site`` or the fMRI QC field ``mean_fd``), else from the participants table by subject.

    Raises
    ------
    KeyError
        A column is in neither table.
    """
    out = pd.DataFrame(index=samples.index)
    for column in columns:
        if column in samples.columns:
            out[column] = samples[column].to_numpy()
        elif participants is not None and column in participants.columns:
            out[column] = samples["subject"].astype(str).map(participants[column]).to_numpy()
        else:
            raise KeyError(column)
    return out


class CovariateEncoder:
    """A numeric design from covariate columns, fitted on training rows.

    A column whose non-missing training values all parse as numbers is numeric (median-imputed);
    any other column is categorical (most-frequent-imputed, one-hot with the first level dropped,
    unseen levels encoded as all zeros).
    """

    def fit(self, table: pd.DataFrame) -> CovariateEncoder:
        self.numeric_ = [c for c in table.columns if _is_numeric(table[c])]
        self.categorical_ = [c for c in table.columns if c not in self.numeric_]
        categorical = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False),
        )
        self.transformer_ = ColumnTransformer(
            [
                ("numeric", SimpleImputer(strategy="median"), self.numeric_),
                ("categorical", categorical, self.categorical_),
            ]
        ).fit(self._typed(table))
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.transformer_.transform(self._typed(table)), dtype=np.float64)

    def _typed(self, table: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=table.index)
        for c in self.numeric_:
            out[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
        for c in self.categorical_:
            text = table[c].astype(object)
            out[c] = text.where(text.notna() & (text.astype(str) != "n/a"), np.nan).astype(object)
        return out


def _is_numeric(column: pd.Series) -> bool:
    present = column[column.notna() & (column.astype(str) != "n/a")]
    return bool(len(present)) and bool(pd.to_numeric(present, errors="coerce").notna().all())


class SiteHarmoniser:
    """ComBat (Fortin's model, combatlearn) with the small-site, unseen-site and
    constant-feature policies of this module.

    Parameters
    ----------
    min_site_size : int
        Sites with fewer training samples join the pooled batch.
    """

    def __init__(self, min_site_size: int = 5) -> None:
        self.min_site_size = min_site_size

    def fit(self, x: np.ndarray, sites: np.ndarray, covariates: pd.DataFrame) -> SiteHarmoniser:
        """Fit on training samples: features ``x`` (n, p), their sites and covariates."""
        from combatlearn.core import ComBatModel

        sites = np.asarray(sites, dtype=str)
        counts = pd.Series(sites).value_counts()
        self.batch_of_ = {s: (s if n >= self.min_site_size else POOLED) for s, n in counts.items()}
        batch = self._batches(sites)
        sizes = pd.Series(batch).value_counts()
        fit = np.isin(batch, sizes.index[sizes >= 2])
        self.batches_ = sorted(set(batch[fit]))
        self.pooled_sites_ = sorted(s for s, b in self.batch_of_.items() if b == POOLED)
        self.constant_ = np.zeros(x.shape[1], dtype=bool)
        self.model_ = None
        if len(self.batches_) < 2:  # one site (or none usable): there is nothing to remove
            return self
        for b in self.batches_:
            rows = x[fit & (batch == b)]
            self.constant_ |= np.ptp(rows, axis=0) <= 1e-12 * (1.0 + np.abs(rows).max(axis=0))
        # The covariates are encoded here, not by combatlearn: its own one-hot step encodes each
        # transform call's levels afresh, so a test set holding one level would lose it.
        self.encoder_ = (
            CovariateEncoder().fit(covariates.iloc[fit]) if covariates.shape[1] else None
        )
        self.model_ = ComBatModel(method="fortin").fit(
            pd.DataFrame(x[fit][:, ~self.constant_]),
            batch=batch[fit],
            continuous_covariates=self._design(covariates.iloc[fit]),
        )
        return self

    def transform(self, x: np.ndarray, sites: np.ndarray, covariates: pd.DataFrame) -> np.ndarray:
        """Harmonised copy of ``x``; rows of unseen sites (and constant columns) unchanged."""
        out = np.array(x, dtype=np.float64, copy=True)
        rows = self.harmonised_rows(sites)
        if self.model_ is None or not rows.any():
            return out
        adjusted = self.model_.transform(
            pd.DataFrame(out[rows][:, ~self.constant_]),
            batch=self._batches(np.asarray(sites, dtype=str))[rows],
            continuous_covariates=self._design(covariates.iloc[np.flatnonzero(rows)]),
        )
        out[np.ix_(rows, ~self.constant_)] = adjusted.to_numpy()
        return out

    def harmonised_rows(self, sites: np.ndarray) -> np.ndarray:
        """Which samples ComBat adjusts: those whose batch was fitted."""
        if self.model_ is None:
            return np.zeros(len(sites), dtype=bool)
        return np.isin(self._batches(np.asarray(sites, dtype=str)), self.batches_)

    def _batches(self, sites: np.ndarray) -> np.ndarray:
        # an unseen site maps to itself, which is no fitted batch
        return np.array([self.batch_of_.get(s, s) for s in sites], dtype=object)

    def _design(self, covariates: pd.DataFrame) -> pd.DataFrame | None:
        if self.encoder_ is None:
            return None
        design = self.encoder_.transform(covariates)
        return pd.DataFrame(design, index=range(len(design))) if design.shape[1] else None


class ConfoundRegressor:
    """Confounds regressed out of every feature, with coefficients fitted on training rows.

    The training mean of each feature is kept: ``x - (c - mean_train(c)) @ B``.
    """

    def fit(self, x: np.ndarray, confounds: pd.DataFrame) -> ConfoundRegressor:
        self.encoder_ = CovariateEncoder().fit(confounds)
        design = self.encoder_.transform(confounds)
        self.center_ = design.mean(axis=0)
        self.model_ = LinearRegression().fit(design, x)
        return self

    def transform(self, x: np.ndarray, confounds: pd.DataFrame) -> np.ndarray:
        design = self.encoder_.transform(confounds) - self.center_
        return np.asarray(x, dtype=np.float64) - design @ self.model_.coef_.T


def subjects_digest(subjects: Collection[str]) -> str:
    """SHA-256 of the sorted distinct subjects (one per line): a short proof of a subject set."""
    text = "\n".join(sorted({str(s) for s in subjects}))
    return hashlib.sha256(text.encode()).hexdigest()


def adjust_in_fold(
    x: np.ndarray,
    samples: pd.DataFrame,
    fit_rows: np.ndarray,
    harmonise: Mapping,
    confounds: Sequence[str],
    participants: pd.DataFrame | None = None,
    absent_ok: Collection[str] = (),
) -> tuple[np.ndarray, dict]:
    """Harmonise sites (``harmonise["method"] == "combat"``), then regress out ``confounds``,
    both fitted on the rows ``fit_rows`` and applied to every row.

    Parameters
    ----------
    x : ndarray (n_samples, n_features)
        Features of every sample of the fold.
    samples : DataFrame
        One row per sample (``subject`` and the cache's columns, e.g. ``site``, ``mean_fd``).
    fit_rows : ndarray of bool
        The training samples: the only rows any parameter is fitted on.
    harmonise : mapping
        The config's ``harmonise`` section (``method``, ``batch``, ``covariates``,
        ``min_site_size``).
    confounds : sequence of str
        The config's ``confounds``.
    participants : DataFrame, optional
        The participants table indexed by subject, for columns the samples lack.
    absent_ok : collection of str
        Confounds that may be absent from both tables: per-sample QC fields of a modality the
        method does not read (``mean_fd`` for an EEG or SC baseline). They are skipped and
        listed; any other absent column is a configuration error.

    Returns
    -------
    x_adjusted : ndarray
    record : dict
        What was fitted on which subjects, for ``metrics.json``.
    """
    adjust, record = fit_in_fold(
        x, samples, fit_rows, harmonise, confounds, participants, absent_ok
    )
    return adjust(x), record


def fit_in_fold(
    x: np.ndarray,
    samples: pd.DataFrame,
    fit_rows: np.ndarray,
    harmonise: Mapping,
    confounds: Sequence[str],
    participants: pd.DataFrame | None = None,
    absent_ok: Collection[str] = (),
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """The fitted adjustment of :func:`adjust_in_fold` as a function, and its record.

    The function maps any (n_samples, n_features) array whose rows are the rows of ``samples``
    (each row adjusted with its own sample's site and covariates). ComBat and the confound
    regression are affine in the features, so applying it to ``x + 1`` as well gives each
    sample's slope and offset per feature (the torch methods adjust FC they compute from time
    series with them).
    """
    fit_rows = np.asarray(fit_rows, dtype=bool)
    fit_subjects = sorted(set(samples.loc[fit_rows, "subject"].astype(str)))
    record: dict = {
        "harmonise": harmonise["method"],
        "confounds": list(confounds),
        "fit_subjects": fit_subjects,
        "fit_subjects_sha256": subjects_digest(fit_subjects),
        "n_fit_samples": int(fit_rows.sum()),
    }
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    fitted = np.asarray(x, dtype=np.float64)
    if harmonise["method"] == "combat":
        columns = [harmonise["batch"], *harmonise["covariates"]]
        table = _columns(samples, participants, columns, "harmonise")
        sites = table[harmonise["batch"]].fillna("n/a").astype(str).to_numpy()
        covariates = table[list(harmonise["covariates"])]
        model = SiteHarmoniser(harmonise["min_site_size"]).fit(
            fitted[fit_rows], sites[fit_rows], covariates[fit_rows]
        )
        harmonised = model.harmonised_rows(sites)
        unseen = ~np.isin(sites, list(model.batch_of_))
        record["combat"] = {
            "batches": model.batches_,
            "pooled_sites": model.pooled_sites_,
            "n_constant_features": int(model.constant_.sum()),
            "n_unseen_site_samples": int(unseen.sum()),
            "n_unharmonised_samples": int((~harmonised).sum()),
            "fitted": model.model_ is not None,
        }
        steps.append(partial(model.transform, sites=sites, covariates=covariates))
        # the confound regression is fitted on the harmonised training rows only
        fitted = fitted.copy()
        fitted[fit_rows] = model.transform(fitted[fit_rows], sites[fit_rows], covariates[fit_rows])
    if confounds:
        present = [
            c
            for c in confounds
            if c not in absent_ok
            or c in samples.columns
            or (participants is not None and c in participants.columns)
        ]
        record["confounds_skipped"] = [c for c in confounds if c not in present]
        if present:
            table = _columns(samples, participants, present, "confounds")
            regressor = ConfoundRegressor().fit(fitted[fit_rows], table[fit_rows])
            steps.append(partial(regressor.transform, confounds=table))

    def adjust(features: np.ndarray) -> np.ndarray:
        out = np.array(features, dtype=np.float64, copy=True)
        for step in steps:
            out = step(out)
        return out

    return adjust, record


def _columns(
    samples: pd.DataFrame, participants: pd.DataFrame | None, columns: Sequence[str], key: str
) -> pd.DataFrame:
    try:
        return sample_columns(samples, participants, columns)
    except KeyError as err:
        where = list(samples.columns) + (
            list(participants.columns) if participants is not None else []
        )
        raise ConfigError(
            f"{key}: column {err.args[0]!r} is neither a column of the samples nor of the "
            f"participants table (columns: {sorted(set(where))})"
        ) from None
