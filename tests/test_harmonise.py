"""In-fold ComBat and confound regression of the baselines' features (synthetic data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from brainfuse.core.errors import ConfigError
from brainfuse.methods.baselines.harmonise import POOLED, SiteHarmoniser, adjust_in_fold

COMBAT = {"method": "combat", "batch": "site", "covariates": ["age", "sex"], "min_site_size": 5}


def _dataset(
    seed=0, n_sites=4, per_site=30, n_features=40, site_shift=3.0, label_effect=1.0, confounded=True
):
    """Samples whose features carry a site shift and scale and a label effect.

    With ``confounded`` the label's rate rises with the site index; else every site has both
    classes in equal measure."""
    rng = np.random.default_rng(seed)
    site = np.repeat([f"S{i}" for i in range(n_sites)], per_site)
    site_index = np.repeat(np.arange(n_sites), per_site)
    n = len(site)
    if confounded:
        label = (rng.random(n) < 0.2 + 0.6 * site_index / max(1, n_sites - 1)).astype(int)
    else:
        label = np.concatenate([rng.permutation(np.arange(per_site) % 2) for _ in range(n_sites)])
    age = rng.uniform(8, 40, n)
    sex = rng.choice(["F", "M"], n)
    shift = rng.normal(0, site_shift, (n_sites, n_features))
    scale = rng.uniform(0.5, 2.0, (n_sites, n_features))
    x = rng.normal(size=(n, n_features)) * scale[site_index] + shift[site_index]
    x[:, :5] += label_effect * label[:, None] * 2.0
    samples = pd.DataFrame(
        {
            "subject": [f"{i:03d}" for i in range(n)],
            "site": site,
            "label": label,
            "age": age,
            "sex": sex,
        }
    )
    return x, samples


def _split(samples, seed=0, test_fraction=0.3):
    rng = np.random.default_rng(seed)
    return rng.random(len(samples)) >= test_fraction  # True: training


def _site_accuracy(x, sites, train):
    clf = LogisticRegression(max_iter=5000).fit(x[train], sites[train])
    return balanced_accuracy_score(sites[~train], clf.predict(x[~train]))


def test_combat_parameters_come_from_training_subjects_only():
    x, samples = _dataset()
    train = _split(samples)
    out, record = adjust_in_fold(x, samples, train, COMBAT, [])
    changed = x.copy()
    changed[~train] = np.random.default_rng(9).normal(50, 10, changed[~train].shape)
    samples_changed = samples.copy()
    samples_changed.loc[~train, "age"] = 99.0
    out_changed, record_changed = adjust_in_fold(changed, samples_changed, train, COMBAT, [])
    np.testing.assert_allclose(out_changed[train], out[train])
    assert record_changed == record
    test_subjects = set(samples.loc[~train, "subject"])
    assert not test_subjects & set(record["fit_subjects"])
    assert record["n_fit_samples"] == train.sum()


def _label_accuracy(x, labels, train):
    clf = LogisticRegression(max_iter=5000).fit(x[train][:, :5], labels[train])
    return balanced_accuracy_score(labels[~train], clf.predict(x[~train][:, :5]))


def test_site_predictability_drops_and_label_effect_survives():
    """The label is never a covariate (test labels would enter the test features); a label
    effect present within every site survives ComBat."""
    x, samples = _dataset(seed=1, confounded=False)
    train = _split(samples, seed=1)
    sites = samples["site"].to_numpy()
    before = _site_accuracy(x, sites, train)
    out, _ = adjust_in_fold(x, samples, train, COMBAT, [])
    after = _site_accuracy(out, sites, train)
    chance = 1 / 4
    assert before > 0.9
    assert after < chance + 0.1
    assert _label_accuracy(out, samples["label"].to_numpy(), train) > 0.75


def test_a_label_confounded_with_site_loses_what_site_explains():
    """Where the label rides on site, harmonising removes the site-borne part: the harmonised
    score drops - the reason a multi-site number needs in-fold harmonisation beside it."""
    x, samples = _dataset(seed=2, label_effect=0.0)  # no label effect: only site carries it
    train = _split(samples, seed=2)
    labels = samples["label"].to_numpy()
    before = LogisticRegression(max_iter=5000).fit(x[train], labels[train])
    score_before = balanced_accuracy_score(labels[~train], before.predict(x[~train]))
    out, _ = adjust_in_fold(x, samples, train, COMBAT, [])
    after = LogisticRegression(max_iter=5000).fit(out[train], labels[train])
    score_after = balanced_accuracy_score(labels[~train], after.predict(out[~train]))
    assert score_before > 0.65
    assert score_after < 0.6 and score_after < score_before - 0.1


@pytest.mark.parametrize(
    ("key", "value"), [("covariates", ["age", "group"]), ("confounds", ["label"])]
)
def test_the_label_is_refused_as_covariate_or_confound(key, value):
    from brainfuse.config import read_config

    config = {"methods": {"logreg_fc": {"stages": ["fit"]}}}
    if key == "covariates":
        config["harmonise"] = {"method": "combat", "covariates": value}
    else:
        config["confounds"] = value
    with pytest.raises(ConfigError, match="is the label"):
        read_config(config)


def test_small_site_is_pooled_and_unseen_site_left_unharmonised():
    x, samples = _dataset(n_sites=4, per_site=20)
    train = np.ones(len(samples), dtype=bool)
    # S2 keeps 3 training subjects (pooled, with S3's 3); S1 has none (unseen)
    s1 = np.flatnonzero(samples["site"] == "S1")
    s2 = np.flatnonzero(samples["site"] == "S2")
    s3 = np.flatnonzero(samples["site"] == "S3")
    train[s1] = False
    train[s2[3:]] = False
    train[s3[3:]] = False
    out, record = adjust_in_fold(x, samples, train, COMBAT, [])
    assert record["combat"]["pooled_sites"] == ["S2", "S3"]
    assert record["combat"]["batches"] == sorted(["S0", POOLED])
    assert record["combat"]["n_unseen_site_samples"] == len(s1)
    np.testing.assert_array_equal(out[s1], x[s1])  # policy: unseen site left as measured
    assert not np.allclose(out[s2], x[s2])  # pooled site harmonised
    assert np.isfinite(out).all()


def test_features_constant_within_a_site_stay_finite_and_unchanged():
    x, samples = _dataset()
    train = _split(samples)
    s0 = (samples["site"] == "S0").to_numpy()
    x[s0, 7] = 0.0  # a parcel without coverage at S0
    out, record = adjust_in_fold(x, samples, train, COMBAT, [])
    assert np.isfinite(out).all()
    assert record["combat"]["n_constant_features"] == 1
    np.testing.assert_array_equal(out[:, 7], x[:, 7])
    assert not np.allclose(out[:, 8], x[:, 8])


def test_one_site_leaves_the_features_unchanged():
    x, samples = _dataset(n_sites=1)
    out, record = adjust_in_fold(x, samples, _split(samples), COMBAT, [])
    np.testing.assert_array_equal(out, x)
    assert record["combat"]["fitted"] is False


def test_confound_regression_removes_age_and_is_fitted_on_training_subjects():
    rng = np.random.default_rng(3)
    n = 200
    samples = pd.DataFrame(
        {
            "subject": [f"{i:03d}" for i in range(n)],
            "sex": rng.choice(["F", "M"], n),
            "mean_fd": rng.gamma(2, 0.1, n),
        }
    )
    participants = pd.DataFrame({"age": rng.uniform(8, 40, n)}, index=samples["subject"].to_numpy())
    age = participants["age"].to_numpy()
    x = rng.normal(size=(n, 6))
    x[:, 0] += 0.5 * age
    x[:, 1] += 3.0 * (samples["sex"] == "M")
    train = _split(samples, seed=3)
    confounds = ["age", "sex", "mean_fd"]
    out, record = adjust_in_fold(x, samples, train, {"method": "none"}, confounds, participants)
    assert abs(np.corrcoef(x[~train, 0], age[~train])[0, 1]) > 0.9
    assert abs(np.corrcoef(out[~train, 0], age[~train])[0, 1]) < 0.2
    male = (samples["sex"] == "M").to_numpy()
    assert abs(out[~train & male, 1].mean() - out[~train & ~male, 1].mean()) < 0.6
    assert record["confounds_skipped"] == []
    changed = x.copy()
    changed[~train] += rng.normal(0, 100, changed[~train].shape)
    out_changed, _ = adjust_in_fold(
        changed, samples, train, {"method": "none"}, confounds, participants
    )
    np.testing.assert_allclose(out_changed[train], out[train])


def test_absent_confound_is_skipped_only_when_allowed():
    x, samples = _dataset()
    train = _split(samples)
    out, record = adjust_in_fold(
        x, samples, train, {"method": "none"}, ["age", "mean_fd"], absent_ok={"mean_fd"}
    )
    assert record["confounds_skipped"] == ["mean_fd"]
    with pytest.raises(ConfigError, match="mean_fd"):
        adjust_in_fold(x, samples, train, {"method": "none"}, ["age", "mean_fd"])


def test_harmoniser_maps_sites_to_batches():
    x, samples = _dataset(n_sites=3, per_site=6)
    sites = samples["site"].to_numpy()
    model = SiteHarmoniser(min_site_size=7).fit(x, sites, samples[["age"]])
    assert model.pooled_sites_ == ["S0", "S1", "S2"]
    assert model.model_ is None  # everything pooled: one batch, nothing to remove


@pytest.mark.parametrize("method", ["logreg_fc", "logreg_tangent"])
def test_baseline_stage_records_training_subjects_only(tmp_path, method):
    import json

    from brainfuse.core.cache import write_cache
    from brainfuse.folds import make_folds, subjects_of
    from brainfuse.methods.baselines.fit import fit_baseline
    from brainfuse.methods.catalog import default_catalog
    from brainfuse.methods.request import StageOutputs, StageRequest

    rng = np.random.default_rng(4)
    n, nodes, t = 60, 6, 40
    site = np.repeat(["A", "B", "C"], n // 3)
    series = rng.normal(size=(n, t, nodes)) + (site == "B")[:, None, None] * rng.normal(size=nodes)
    fc = np.stack([np.corrcoef(s.T) * 0.9 for s in series])
    table = pd.DataFrame(
        {
            "sample_id": [f"sub-{i:03d}" for i in range(n)],
            "subject": [f"{i:03d}" for i in range(n)],
            "site": site,
            "label": rng.choice(["ctl", "pat"], n),
            "mean_fd": rng.gamma(2, 0.1, n),
            "n_timepoints": t,
        }
    )
    write_cache(
        tmp_path / "fmri.parquet", table, {"fc": fc, "timeseries": series.transpose(0, 2, 1)}, {}
    )
    folds = make_folds(table, n_folds=3, val_fraction=0.2, seed=0)
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "participant_id": [f"sub-{s}" for s in table["subject"]],
            "age": rng.uniform(8, 40, n).round(1),
            "sex": rng.choice(["F", "M"], n),
        }
    ).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    request = StageRequest(
        method=method,
        stage="fit",
        fold=0,
        cache_paths={"fmri": str(tmp_path / "fmri.parquet")},
        folds_path=str(tmp_path / "folds.tsv"),
        positive="pat",
        seed=0,
        outputs=StageOutputs(
            model=str(out / "model.bin"),
            metrics=str(out / "metrics.json"),
            predictions=str(out / "predictions.tsv"),
        ),
        params={
            "harmonise": {**COMBAT, "min_site_size": 3},
            "confounds": ["age", "sex", "mean_fd"],
            "participants": str(tmp_path / "participants.tsv"),
            "participant_column": "participant_id",
        },
    )
    fit_baseline(request, default_catalog()[method])
    record = json.loads((out / "metrics.json").read_text())["adjustment"]
    assert record["fit_subjects"] == sorted(subjects_of(folds, 0, "train"))
    assert not set(record["fit_subjects"]) & subjects_of(folds, 0, "test")
    assert record["combat"]["batches"] == ["A", "B", "C"]
    assert record["confounds_skipped"] == []
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert np.isfinite(predictions["y_score"]).all()
    if method == "logreg_tangent":  # model.bin still maps time series (tangent step first)
        import joblib

        model = joblib.load(out / "model.bin")
        assert len(model.predict([s for s in series[:3]])) == 3
