"""In-fold harmonisation and confound regression of the torch methods' FC/SC inputs
(brainfuse.methods.torch.harmonise_inputs): fitted on the training loader's subjects only,
recorded in the stage's provenance, and a no-op when switched off."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainfuse.core.cache import read_cache, write_cache
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.ssl.dfc_generative import _DFCStage, sliding_window_fc
from brainfuse.methods.torch.data import FC_AFFINE
from brainfuse.methods.torch.harmonise_inputs import adjust_matrices, split_request
from brainfuse.methods.torch.runner import prepare_data, run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.provenance import check_provenance

torch.set_num_threads(1)

CATALOG = default_catalog()
#: A short gcn_fc schedule (a few seconds on one core).
GCN = {"epochs": 3, "batch_size": 4, "num_threads": 1}
#: Added to every FC edge of siteB: a site effect far above the planted diagnosis effect.
SITE_SHIFT = 0.4
COMBAT = {"method": "combat", "batch": "site", "covariates": ["age"], "min_site_size": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Synthetic caches whose siteB FC edges are shifted by SITE_SHIFT, and a participants
    table with an age column."""
    out = tmp_path_factory.mktemp("caches")
    paths = write_synthetic_caches(out, n_subjects=24, n_nodes=12, n_timepoints=(70, 90))
    cache = read_cache(paths["fmri"])
    fc = np.array(cache.arrays["fc"], copy=True)
    site_b = (cache.table["site"] == "siteB").to_numpy()
    fc[site_b] += SITE_SHIFT * (1 - np.eye(fc.shape[-1], dtype=fc.dtype))
    write_cache(paths["fmri"], cache.table, {**cache.arrays, "fc": fc}, cache.metadata)
    subjects = sorted(set(cache.table["subject"]))
    rng = np.random.default_rng(1)
    paths["participants"] = str(out / "participants.tsv")
    pd.DataFrame(
        {"participant_id": [f"sub-{s}" for s in subjects], "age": rng.uniform(8, 40, 24)}
    ).to_csv(paths["participants"], sep="\t", index=False)
    return paths


def _request(data, out: Path, params: dict, modalities=("fmri",), method="gcn_fc") -> StageRequest:
    return StageRequest(
        method=method,
        stage="fit",
        fold=1,
        cache_paths={m: data[m] for m in modalities},
        folds_path=data["folds"],
        positive="patient",
        seed=0,
        outputs=StageOutputs(
            str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
        ),
        params=params,
        checkpoint_dir=str(out / "ckpt"),
    )


def _adjusted(data, confounds=()) -> dict:
    return {
        **GCN,
        "harmonise": COMBAT,
        "confounds": list(confounds),
        "participants": data["participants"],
        "participant_column": "participant_id",
    }


def _fold_data(request: StageRequest):
    request, adjustment = split_request(request)
    hp = CATALOG.params(request.method, request.params, request.stage)
    return prepare_data(request, CATALOG[request.method], hp, adjustment=adjustment)


def _matrices(dataset, key: str = "fc") -> np.ndarray:
    return np.stack([dataset[i][key].numpy() for i in range(len(dataset))])


def _site_gap(dataset) -> float:
    """Mean over edges of |mean(siteA) - mean(siteB)| of the served FC matrices."""
    fc = _matrices(dataset)
    upper = np.triu_indices(fc.shape[-1], k=1)
    edges = fc[:, upper[0], upper[1]]
    site_b = (dataset.table["site"] == "siteB").to_numpy()
    return float(np.abs(edges[site_b].mean(0) - edges[~site_b].mean(0)).mean())


def test_combat_equalises_site_means_of_the_training_matrices(data, tmp_path):
    raw = _fold_data(_request(data, tmp_path, GCN))
    adjusted = _fold_data(_request(data, tmp_path, _adjusted(data)))
    assert raw.adjustment is None
    before, after = _site_gap(raw.train_plain), _site_gap(adjusted.train_plain)
    assert before > 0.8 * SITE_SHIFT
    assert after < 0.1 * before
    # the whole fold is adjusted, symmetric, with the diagonal and the node masks kept
    for role in ("train", "test"):  # the 4 validation subjects train (small_validation)
        a = adjusted.full.subset(adjusted.roles[role])
        r = raw.full.subset(raw.roles[role])
        fc_a, fc_r = _matrices(a), _matrices(r)
        assert not np.allclose(fc_a, fc_r)
        np.testing.assert_array_equal(fc_a, fc_a.transpose(0, 2, 1))
        np.testing.assert_array_equal(
            np.diagonal(fc_a, axis1=1, axis2=2), np.diagonal(fc_r, axis1=1, axis2=2)
        )
        np.testing.assert_array_equal(_matrices(a, "node_mask"), _matrices(r, "node_mask"))
    record = adjusted.adjustment
    assert record["inputs"]["fc"]["combat"]["batches"] == ["siteA", "siteB"]
    assert record["fit_subjects"] == sorted(adjusted.roles["train"])


def test_a_test_subject_does_not_change_the_fit(data):
    folds = read_folds(data["folds"])
    roles = {r: subjects_of(folds, 1, r) for r in ("train", "val", "test")}
    cache = read_cache(data["fmri"])
    request, adjustment = split_request(_request(data, Path("unused"), _adjusted(data, ["age"])))
    assert adjustment is not None
    samples = cache.table.assign(row_fmri=np.arange(len(cache.table)))
    # the same fold with one test subject's matrix replaced by noise
    altered = np.array(cache.arrays["fc"], copy=True)
    test_row = int(np.flatnonzero(cache.table["subject"].isin(roles["test"]))[0])
    noise = np.random.default_rng(2).uniform(-1, 1, altered.shape[1:])
    altered[test_row] = (noise + noise.T) / 2
    other = {"fmri": type(cache)(cache.table, {**cache.arrays, "fc": altered}, cache.metadata)}
    first, record_1 = adjust_matrices({"fmri": cache}, samples, roles, adjustment)
    second, record_2 = adjust_matrices(other, samples, roles, adjustment)
    assert record_1 == record_2
    keep = np.arange(len(cache.table)) != test_row
    np.testing.assert_array_equal(
        first["fmri"].arrays["fc"][keep], second["fmri"].arrays["fc"][keep]
    )
    assert not np.allclose(first["fmri"].arrays["fc"][test_row], altered[test_row])
    assert set(record_1["fit_subjects"]) == roles["train"]


def test_sc_matrices_are_adjusted_without_the_fmri_qc_confounds(data):
    folds = read_folds(data["folds"])
    roles = {r: subjects_of(folds, 1, r) for r in ("train", "val", "test")}
    caches = {m: read_cache(data[m]) for m in ("fmri", "sc")}
    fmri = caches["fmri"]
    mean_fd = np.random.default_rng(3).uniform(0.05, 0.4, len(fmri.table))
    caches["fmri"] = type(fmri)(fmri.table.assign(mean_fd=mean_fd), fmri.arrays, fmri.metadata)
    _, adjustment = split_request(
        _request(data, Path("unused"), _adjusted(data, ["age", "mean_fd"]), ("fmri", "sc"))
    )
    assert adjustment is not None
    samples = fmri.table.assign(row_fmri=np.arange(len(fmri.table)))
    samples["row_sc"] = samples["subject"].map(
        {s: i for i, s in enumerate(caches["sc"].table["subject"])}
    )
    out, record = adjust_matrices(caches, samples, roles, adjustment)
    assert record["inputs"]["fc"]["confounds_skipped"] == []
    assert record["inputs"]["sc"]["confounds_skipped"] == ["mean_fd"]
    sc = out["sc"].arrays["sc"]
    np.testing.assert_array_equal(sc, sc.transpose(0, 2, 1))
    assert not np.allclose(sc, caches["sc"].arrays["sc"])


@pytest.mark.parametrize(
    ("augment", "unadjusted"),
    [({}, []), (None, ["timeseries"])],  # None: gcn_fc's default pseudo-FC views
)
def test_gcn_fc_stage_with_combat_records_its_fit_in_provenance(
    data, tmp_path, augment, unadjusted
):
    params = _adjusted(data, ["age"]) | ({} if augment is None else {"augment": augment})
    run_torch_stage(_request(data, tmp_path, params), CATALOG)
    manifest = json.loads((tmp_path / "provenance.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    folds = read_folds(data["folds"])
    adjustment = manifest["adjustment"]
    # fitted on exactly the training loader's subjects, none of the fold's test subjects
    assert adjustment["fit_subjects"] == manifest["subjects"]["fit"]
    # the fold's training subjects, with its 4 validation subjects (small_validation: train)
    fit = subjects_of(folds, 1, "train") | subjects_of(folds, 1, "val")
    assert set(adjustment["fit_subjects"]) == fit
    assert adjustment["harmonise"] == "combat" and adjustment["confounds"] == ["age"]
    assert manifest["inputs"]["participants"]["path"] == data["participants"]
    check_provenance(manifest, folds)
    assert metrics["adjustment"]["adjusted_inputs"] == ["fc"]
    assert metrics["adjustment"]["unadjusted_inputs"] == unadjusted
    assert np.isfinite(metrics["auc"])


def test_no_adjustment_keeps_the_predictions(data, tmp_path):
    """``harmonise.method: none`` without confounds (what the rule passes by default) trains
    exactly the stage trained without the keys."""
    off = {**GCN, "harmonise": {**COMBAT, "method": "none"}, "confounds": []}
    for name, params in (("plain", GCN), ("off", off)):
        run_torch_stage(_request(data, tmp_path / name, params), CATALOG)
    plain, off_ = (
        pd.read_csv(tmp_path / n / "predictions.tsv", sep="\t") for n in ("plain", "off")
    )
    pd.testing.assert_frame_equal(plain, off_)
    metrics = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert metrics["adjustment"] is None


def test_fc_computed_from_time_series_gets_the_fold_adjustment(data, tmp_path):
    """The per-sample slope and offset reproduce the adjusted FC from the cached FC, and the
    pseudo-FC views of the training loader are the raw views mapped by them (the same draws:
    an item's randomness depends on (seed, epoch, sample) only)."""
    raw = _fold_data(_request(data, tmp_path, GCN))  # gcn_fc's default pseudo-FC views
    adjusted = _fold_data(_request(data, tmp_path, _adjusted(data, ["age"])))
    cached_raw = raw.full._arrays["fmri"]["fc"]
    cached = adjusted.full._arrays["fmri"]
    assert FC_AFFINE not in raw.full._arrays["fmri"]
    slope, offset = cached[FC_AFFINE][:, 0], cached[FC_AFFINE][:, 1]
    np.testing.assert_allclose(
        np.nan_to_num(slope * cached_raw + offset), np.nan_to_num(cached["fc"]), atol=1e-4
    )
    assert not np.allclose(slope, 1.0)  # ComBat rescales, it does not only shift
    views = {}
    for name, fold in (("raw", raw), ("adjusted", adjusted)):
        served = fold.full.with_fields(["fc", "timeseries"])
        views[name] = served.subset(fold.roles["train"], train=True, transform=fold.augment)
    assert len(views["raw"]) == len(views["adjusted"]) > 0
    for i in range(len(views["raw"])):
        a, r = views["adjusted"][i], views["raw"][i]
        mask = a["node_mask"]
        pair = (mask[:, None] & mask[None, :]).float()
        expected = (r["fc"] * a[FC_AFFINE][0] + a[FC_AFFINE][1]) * pair
        torch.testing.assert_close(a["fc"], expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a["fc"], r["fc"])  # a view, adjusted
    # a batch's sliding-window FC gets each sample's map
    batch = {k: torch.stack([views["adjusted"][i][k] for i in range(4)]) for k in a}
    window_fc, _ = sliding_window_fc(batch["timeseries"], batch["time_mask"], 30, 5)
    upper = torch.triu_indices(batch["fc"].shape[-1], batch["fc"].shape[-1], offset=1)
    edges = batch[FC_AFFINE][:, :, upper[0], upper[1]]
    stage = types.SimpleNamespace(window=30, step=5)
    adjusted_windows, _ = _DFCStage.dfc(stage, batch)
    torch.testing.assert_close(adjusted_windows, window_fc * edges[:, None, 0] + edges[:, None, 1])


@pytest.mark.parametrize("method", ["logreg_fc", "gcn_fc"])
def test_attribution_explains_the_adjusted_inputs_the_model_was_trained_on(data, tmp_path, method):
    """With harmonise/confounds, the biomarkers of a fold are computed on its features after
    the same in-fold adjustment (refitted on the same training subjects), not on raw ones."""
    import dataclasses

    from brainfuse.explain.method import explain_method
    from brainfuse.methods.run import run_stage

    params = _adjusted(data, ["age"])
    if method == "logreg_fc":
        params = {k: v for k, v in params.items() if k not in GCN}
    request = dataclasses.replace(
        _request(data, tmp_path, params, method=method), fold=0, stage="fit"
    )
    if method == "gcn_fc":
        request = dataclasses.replace(request, stage="train")
    run_stage(request, CATALOG)
    adjustment = {k: params[k] for k in ("harmonise", "confounds", "participants")}
    adjustment["participant_column"] = "participant_id"

    def explain(adjust):
        return explain_method(
            method, [str(tmp_path / "model.bin")], [], [], {"fmri": data["fmri"]},
            data["folds"], "patient", 0, n_steps=4, catalog=CATALOG, adjustment=adjust,
        )  # fmt: skip

    raw, adjusted = explain(None), explain(adjustment)
    (name,) = adjusted.blocks
    signed_raw, signed = raw.blocks[name][0].signed, adjusted.blocks[name][0].signed
    assert np.isfinite(signed).all() and not np.allclose(signed, signed_raw)
    if method == "logreg_fc":
        import joblib

        from brainfuse.core.cache import read_cache
        from brainfuse.explain.linear import linear_blocks
        from brainfuse.methods.baselines.features import feature_extractor
        from brainfuse.methods.baselines.fit import adjust_features, joint_samples

        caches = {"fmri": read_cache(data["fmri"])}
        samples = joint_samples(caches, ("fmri",))
        folds = read_folds(data["folds"])
        subjects = samples["subject"].astype(str)
        x, _, _ = adjust_features(
            adjustment, ("fmri",), samples, feature_extractor("fc")(caches),
            subjects.isin(subjects_of(folds, 0, "train")).to_numpy(), False,
        )  # fmt: skip
        fit = subjects.isin(subjects_of(folds, 0, "train") | subjects_of(folds, 0, "val"))
        model = joblib.load(tmp_path / "model.bin")
        expected = linear_blocks(model, x[fit.to_numpy()], "fc", signed.shape[-1])["fc"]
        np.testing.assert_allclose(signed, expected.signed)
        assert "after the fold's ComBat" in adjusted.notes[-1]
