"""Classical baselines: scikit-learn pipelines on vectorised connectivity features.

Hyper-parameters are chosen on the fold's validation subjects only; the chosen model is then refit
on training + validation subjects and applied once to the test subjects.
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


def fit_select(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    tangent: bool = False,
    scale: bool = True,
):
    """Pick C on the validation split (balanced accuracy), refit on train + val."""
    grid = (1.0,) if kind == "majority" else C_GRID
    best_c, best = grid[0], (-np.inf, -np.inf)
    if len(grid) > 1 and len(np.unique(y_val)) > 1:
        for c in grid:
            model = make_estimator(kind, c, seed, tangent, scale).fit(x_train, y_train)
            # Tiny validation sets tie often on balanced accuracy; AUC breaks the tie.
            score = (
                balanced_accuracy_score(y_val, model.predict(x_val)),
                roc_auc_score(y_val, scores(model, x_val)),
            )
            if score > best:
                best_c, best = c, score
    final = make_estimator(kind, best_c, seed, tangent, scale).fit(
        np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    )
    return final, best_c
