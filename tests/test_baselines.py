"""Baselines: C by subject-grouped inner CV, tangent space fitted inside the fold, planted
effect."""

import numpy as np
import pytest

from brainfuse.methods.baselines.estimators import (
    fit_select,
    scores,
    select_c,
    upper_triangle,
)


@pytest.fixture
def planted():
    """Time series whose first two parcels correlate in class 1 only."""
    rng = np.random.default_rng(0)
    series, labels = [], []
    for i in range(40):
        y = i % 2
        x = rng.normal(size=(120, 8))
        if y:
            x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]
        series.append(x)
        labels.append(y)
    return series, np.array(labels)


def _split(n):
    idx = np.arange(n)
    return idx[:24], idx[24:32], idx[32:]


def test_logreg_on_fc_recovers_planted_edge(planted):
    series, y = planted
    fc = np.stack([np.corrcoef(s, rowvar=False) for s in series])
    x = upper_triangle(fc)
    train, val, test = _split(len(y))
    model, c = fit_select("logreg", x[train], y[train], x[val], y[val], seed=0)
    assert (model.predict(x[test]) == y[test]).mean() >= 0.85
    coef = model[-1].coef_[0]
    assert np.argmax(np.abs(coef)) == 0  # edge (0, 1) is the first upper-triangle entry


def test_tangent_space_pipeline(planted):
    series, y = planted
    x = np.empty(len(series), dtype=object)
    x[:] = series
    train, val, test = _split(len(y))
    model, _ = fit_select("svm", x[train], y[train], x[val], y[val], seed=0, tangent=True)
    assert (model.predict(x[test]) == y[test]).mean() >= 0.85
    assert scores(model, x[test]).shape == (len(test),)
    # the tangent reference is the mean of training + validation samples, never the test fold
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import LedoitWolf

    reference = ConnectivityMeasure(cov_estimator=LedoitWolf(store_precision=False), kind="tangent")
    reference.fit(list(x[np.r_[train, val]]))
    np.testing.assert_allclose(model[0].mean_, reference.mean_, rtol=1e-6)
    everything = ConnectivityMeasure(
        cov_estimator=LedoitWolf(store_precision=False), kind="tangent"
    )
    assert not np.allclose(model[0].mean_, everything.fit(list(x)).mean_, rtol=1e-6)


def test_majority_predicts_one_class(planted):
    series, y = planted
    x = np.zeros((len(y), 3))
    model, _ = fit_select("majority", x[:30], y[:30], x[30:], y[30:], seed=0)
    assert len(set(model.predict(x))) == 1


def test_inner_cv_keeps_each_subjects_runs_together():
    """Two identical runs per subject, labels unrelated to the features: split by run, a
    memorising model gets every held-out run whose twin it trained on (4 in 5 with 5 inner
    folds: about 0.8 after chance on the rest); split by subject, it is at chance."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 200))
    labels = np.arange(30) % 2
    x, y = np.repeat(features, 2, axis=0), np.repeat(labels, 2)
    subjects = np.repeat(np.arange(30), 2)
    _, by_run = select_c("logreg", x, y, np.arange(len(y)), seed=0)
    c, by_subject = select_c("logreg", x, y, subjects, seed=0)
    assert by_run > 0.8
    assert by_subject < 0.7
    assert c in (1.0, 0.1, 10.0, 0.01, 0.001)
