"""Shortcut and leakage diagnostics on small synthetic feature sets made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.cache import Cache
from brainfuse.diagnostics import (
    COLUMNS,
    diagnose,
    diagnose_fold,
    flags,
    probe_site,
)
from brainfuse.methods.baselines.features import FEATURES
from brainfuse.report.diagnostics import adjustment_section, diagnostics_section

HARMONISE = {"method": "none", "batch": "site", "covariates": ["age"], "min_site_size": 5}
SITES = ("siteA", "siteB", "siteC")


def _samples(n_per_site: int, seed: int, confounded: bool = False) -> pd.DataFrame:
    """Subjects of three sites; the label balanced within sites, or given by the site."""
    rng = np.random.default_rng(seed)
    site = np.repeat(SITES, n_per_site)
    if confounded:  # siteA patients only, the others controls only
        label = np.where(site == "siteA", "patient", "control")
    else:
        label = np.tile(["control", "patient"], len(site) // 2)
    return pd.DataFrame(
        {
            "subject": [f"{i:03d}" for i in range(len(site))],
            "site": site,
            "label": label,
            "age": rng.normal(40, 10, len(site)).round(),
            "mean_fd": np.exp(rng.normal(-1.5, 0.4, len(site))),
        }
    )


def _features(samples: pd.DataFrame, seed: int, label_effect: float = 2.0) -> np.ndarray:
    """Noise plus an additive site shift per feature, a label effect on features 0-4 and a
    motion effect on features 5-9."""
    rng = np.random.default_rng(seed)
    n, p = len(samples), 40
    x = rng.normal(0.0, 1.0, (n, p))
    shift = {s: rng.normal(0.0, 1.5, p) for s in SITES}
    x += np.stack([shift[s] for s in samples["site"]])
    x[:, :5] += label_effect * (samples["label"] == "patient").to_numpy()[:, None]
    fd = samples["mean_fd"].to_numpy()
    x[:, 5:10] += 3.0 * ((fd - fd.mean()) / fd.std())[:, None]
    return x


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    test = np.zeros(n, dtype=bool)
    test[np.random.default_rng(seed).permutation(n)[: n // 3]] = True
    return ~test, test


def test_site_predictable_before_and_near_chance_after():
    samples = _samples(24, seed=0)
    x = _features(samples, seed=1)
    train, test = _split(len(samples), seed=2)
    probes = diagnose_fold(x, samples, train, test, HARMONISE)
    site_before, site_after = probes["site"]
    assert site_before.chance == pytest.approx(1 / 3)
    assert site_before.score > 0.9
    assert site_after.score < site_before.chance + 0.15
    # the within-site label effect and the motion effect survive harmonisation
    label_before, label_after = probes["label"]
    assert label_before.score > 0.75 and label_after.score > 0.75
    motion_before, motion_after = probes["motion"]
    assert motion_before.score > 0.8 and motion_after.score > 0.8
    assert motion_after.chance == 0.0
    # regressing mean FD out (a configured confound) removes what predicts it
    _, regressed = diagnose_fold(x, samples, train, test, HARMONISE, ["mean_fd"])["motion"]
    assert regressed.score < motion_after.score - 0.4


def test_probes_fit_on_training_subjects_only():
    samples = _samples(20, seed=3)
    x = _features(samples, seed=4)
    train, test = _split(len(samples), seed=5)
    changed = x.copy()
    changed[test] = np.random.default_rng(6).normal(5.0, 3.0, (test.sum(), x.shape[1]))
    first = diagnose_fold(x, samples, train, test, HARMONISE)
    second = diagnose_fold(changed, samples, train, test, HARMONISE)
    for target in ("site", "motion", "label"):
        for a, b in zip(first[target], second[target], strict=True):
            fitted_a, fitted_b = a.model.steps[-1][1], b.model.steps[-1][1]
            np.testing.assert_array_equal(fitted_a.coef_, fitted_b.coef_)
            np.testing.assert_array_equal(a.model.steps[0][1].mean_, b.model.steps[0][1].mean_)
    # ...while the test scores do depend on the test features
    assert first["site"][0].score != second["site"][0].score


def test_unseen_test_site_is_not_scored():
    samples = _samples(10, seed=7)
    x = _features(samples, seed=8)
    train = (samples["site"] != "siteC").to_numpy().copy()
    test = ~train
    test[:3] = True  # three siteA subjects
    train[:3] = False
    probe = probe_site(x, samples["site"].to_numpy(), train, test)
    assert probe.n_test == 3 and probe.chance == pytest.approx(0.5)


def test_label_confounded_with_site_is_flagged(monkeypatch):
    monkeypatch.setitem(FEATURES, "matrix", lambda caches: caches["fmri"].arrays["x"])
    samples = _samples(24, seed=9, confounded=True)
    x = _features(samples, seed=10, label_effect=0.0)  # the label is carried by site alone
    caches = {"fmri": Cache(samples.drop(columns="age"), {"x": x}, {})}
    participants = samples.set_index("subject")[["age"]]
    train, test = _split(len(samples), seed=11)
    folds = pd.DataFrame(
        {"subject": samples["subject"], "fold": 0, "role": np.where(test, "test", "train")}
    )
    feature_sets = {"matrix": "fmri"}
    table = diagnose(caches, folds, feature_sets, HARMONISE, participants=participants)
    assert list(table.columns) == COLUMNS and len(table) == 3
    site = table.set_index("target").loc["site"]
    label = table.set_index("target").loc["label"]
    assert site["before"] > 0.9 and label["before"] > 0.9 and label["after"] < 0.7
    (warning,) = flags(table)
    assert "confounded with site" in warning
    html = diagnostics_section(table)
    assert "confounded with site" in html and "<table" in html

    # the same features with a balanced label: site is still predictable but nothing is flagged
    balanced = _samples(24, seed=9)
    caches = {"fmri": Cache(balanced.drop(columns="age"), {"x": _features(balanced, 10)}, {})}
    table = diagnose(caches, folds, feature_sets, HARMONISE, participants=participants)
    assert table.set_index("target").loc["site", "before"] > 0.9 and not flags(table)


def test_section_reads_in_plain_words():
    rows = [("fc", "site", "balanced_accuracy", f, 0.9, 0.36, 1 / 3, 8) for f in range(2)] + [
        ("fc", "motion", "correlation", f, 0.2, -0.1, 0.0, 8) for f in range(2)
    ]
    html = diagnostics_section(pd.DataFrame(rows, columns=COLUMNS))
    assert "site is predictable from fc at 0.90 (chance 0.33); after in-fold ComBat 0.36" in html
    assert diagnostics_section(pd.DataFrame(columns=COLUMNS)) == ""


def test_the_report_says_what_the_models_were_trained_with():
    combat = {"method": "combat", "batch": "site", "covariates": ["age", "sex"], "min_site_size": 5}
    html = adjustment_section(combat, ["age", "mean_fd"])
    assert "<h2>Harmonisation and confounds</h2>" in html
    assert "ComBat (combatlearn, Fortin's model) by <code>site</code>, keeping age, sex" in html
    assert "fewer than 5 training subjects are pooled" in html
    assert "then regression of age, mean_fd" in html and "training subjects only" in html
    off = adjustment_section({**combat, "method": "none"}, [])
    assert "trained on unadjusted features" in off and "ComBat (" not in off
    assert "regression of mean_fd" in adjustment_section({**combat, "method": "none"}, ["mean_fd"])
    assert adjustment_section(None, []) == ""
