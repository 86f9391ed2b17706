"""Classical baselines: scikit-learn pipelines on vectorised connectivity features.

Hyper-parameters are chosen inside the fold's training + validation subjects (subject-grouped
inner cross-validation, :func:`select_c`); the chosen model is then refit on all of them and
applied once to the test subjects.
"""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from brainfuse.core.connectivity import upper_triangle  # noqa: F401  (re-exported)

# In order of preference: ties on the validation split keep the earlier (moderate) value.
C_GRID = (1.0, 0.1, 10.0, 0.01, 0.001)


def make_estimator(kind: str, c: float, seed: int, tangent: bool = False, scale: bool = True):
    """An unfitted pipeline of the named kind.

    With ``tangent``, the inputs are per-sample time series and the pipeline starts with nilearn's
    tangent-space embedding (Ledoit-Wolf covariances), whose reference mean is fitted on the
    training samples only, as part of the model. ``scale`` standardises each feature; leave it off
    for connectivity vectors, whose entries share one unit and where standardising gives the many
    null edges as much weight as the informative ones.
    """
    if kind == "majority":
        return DummyClassifier(strategy="most_frequent")
    steps = [tangent_space()] if tangent else []
    if scale:
        steps.append(StandardScaler())
    if kind == "logreg":
        classifier = LogisticRegression(
            C=c, class_weight="balanced", max_iter=5000, random_state=seed
        )
    elif kind == "svm":
        classifier = LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=seed)
    else:
        raise ValueError(f"unknown baseline kind {kind!r}")
    return make_pipeline(*steps, classifier)


def tangent_space():
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import LedoitWolf

    return ConnectivityMeasure(
        cov_estimator=LedoitWolf(store_precision=False),
        kind="tangent",
        vectorize=True,
        discard_diagonal=True,
    )


def scores(model, x: np.ndarray) -> np.ndarray:
    """Continuous score for the positive class (probability or decision value)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)[:, 1]
    return model.decision_function(x)


def select_c(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    tangent: bool = False,
    scale: bool = True,
    n_splits: int = 5,
) -> tuple[float, float]:
    """The ``C`` of :data:`C_GRID` with the best subject-grouped inner cross-validation score.

    The fold's validation split alone is a handful of subjects on small studies (4 on the
    24-subject demo): a ``C`` chosen on them is mostly chance (the demo's probes picked 0.01-10
    across folds, one with AUC 1.0 and balanced accuracy 0.5). Here every training and
    validation subject is held out once: stratified group K-fold (``n_splits``, fewer when the
    smaller class has fewer subjects), the out-of-fold predictions of all of them pooled, scored
    by balanced accuracy with AUC breaking ties; earlier grid values win remaining ties.

    Parameters
    ----------
    kind : {"logreg", "svm", "majority"}
        The estimator (:func:`make_estimator`).
    x, y : ndarray
        Features and 0/1 labels of the training + validation samples.
    groups : ndarray
        Subject of each sample (samples of one subject stay on one side of a split).
    seed : int
        Seed of the splits and the estimators.
    tangent, scale : bool
        As :func:`make_estimator`.
    n_splits : int
        Inner folds at most.

    Returns
    -------
    c : float
        The chosen ``C`` (the first of the grid when no split is possible).
    balanced_accuracy : float
        Its pooled inner cross-validation balanced accuracy (NaN without a split).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.asarray(groups)
    per_class = [len(np.unique(groups[y == k])) for k in (0, 1)]
    k = min(n_splits, *per_class)
    if kind == "majority" or k < 2:
        return C_GRID[0], float("nan")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(splitter.split(x, y, groups))
    best_c, best = C_GRID[0], (-np.inf, -np.inf)
    for c in C_GRID:
        pred, score = np.zeros(len(y), dtype=int), np.zeros(len(y))
        for inner_train, inner_test in splits:
            model = make_estimator(kind, c, seed, tangent, scale)
            model.fit(x[inner_train], y[inner_train])
            pred[inner_test] = model.predict(x[inner_test])
            score[inner_test] = scores(model, x[inner_test])
        result = (balanced_accuracy_score(y, pred), roc_auc_score(y, score))
        if result > best:
            best_c, best = c, result
    return best_c, float(best[0])


def fit_select(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    tangent: bool = False,
    scale: bool = True,
    groups_train: np.ndarray | None = None,
    groups_val: np.ndarray | None = None,
):
    """Pick C by :func:`select_c` on train + val (each sample its own subject when no groups
    are given), refit on train + val."""
    x = np.concatenate([x_train, x_val])
    y = np.concatenate([y_train, y_val])
    groups = _groups(groups_train, groups_val, len(y_train), len(y_val))
    best_c, _ = select_c(kind, x, y, groups, seed, tangent, scale)
    return make_estimator(kind, best_c, seed, tangent, scale).fit(x, y), best_c


def _groups(train: np.ndarray | None, val: np.ndarray | None, n_train: int, n_val: int):
    if train is None or val is None:
        return np.arange(n_train + n_val)
    return np.concatenate([np.asarray(train, dtype=str), np.asarray(val, dtype=str)])
