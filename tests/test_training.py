"""Training framework: datasets, augmentations, encoders and one Lightning stage on tiny data."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainfuse.core.cache import read_cache
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch import augment as A
from brainfuse.methods.torch.data import BrainDataset, crop_window, eval_loader, train_loader
from brainfuse.methods.torch.encoders import (
    BrainClassifier,
    DenseGCNEncoder,
    GCNEncoder,
    build_encoder,
    sparsify,
)
from brainfuse.methods.torch.runner import run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.methods.torch.trained import TrainedStage
from brainfuse.methods.torch.weights import load_previous, read_model

torch.set_num_threads(1)

N = 100
NO_EEG = "05"  # subject written without EEG
#: Small, fast settings: ~1-3 s per stage on one core.
FAST = {"epochs": 10, "batch_size": 4, "num_threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_synthetic_caches(
        tmp_path_factory.mktemp("caches"), n_subjects=24, drop_eeg=(int(NO_EEG),), seed=0
    )


@pytest.fixture(scope="module")
def fmri(data) -> BrainDataset:
    return BrainDataset({"fmri": data["fmri"]}, "patient")


@pytest.fixture
def sample(fmri) -> dict[str, torch.Tensor]:
    """Subject 01's run: it has a masked parcel (the last one)."""
    index = int(np.flatnonzero(fmri.table["subject"] == "01")[0])
    return fmri[index]


def _run(
    data: dict[str, str],
    out: Path,
    method: str = "gcn_fc",
    params: dict | None = None,
    stage: str = "fit",
    previous: str | None = None,
    fold: int = 0,
) -> dict:
    run_torch_stage(
        StageRequest(
            method=method,
            stage=stage,
            fold=fold,
            cache_paths={"fmri": data["fmri"]},
            folds_path=data["folds"],
            positive="patient",
            seed=0,
            outputs=StageOutputs(
                str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
            ),
            params={**FAST, **(params or {})},
            previous=previous,
            checkpoint_dir=str(out / "ckpt"),
        )
    )
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- data


def test_items_and_dense_batches(fmri, sample):
    n_time = fmri.table["n_timepoints"].to_numpy()
    assert len(fmri) == 24
    assert sample["fc"].shape == (N, N) and sample["node_mask"].shape == (N,)
    assert sample["timeseries"].shape == (N, 200) and sample["time_mask"].shape == (200,)
    assert sample["fft"].shape == (N, 101)
    assert torch.isfinite(sample["fc"]).all() and torch.isfinite(sample["timeseries"]).all()
    # The masked parcel is a zero row/column, the others have a unit diagonal.
    assert not sample["node_mask"][N - 1] and sample["node_mask"][:-1].all()
    assert (sample["fc"][N - 1] == 0).all() and (sample["fc"][:, N - 1] == 0).all()
    assert torch.allclose(sample["fc"].diagonal()[:-1], torch.ones(N - 1))
    # Runs are shorter than L = 200: zero-padded after their length.
    width = int(sample["time_mask"].sum())
    assert width == n_time[int(sample["index"])] < 200
    assert (sample["timeseries"][:, width:] == 0).all()

    batch = next(iter(eval_loader(fmri, batch_size=5)))
    assert batch["fc"].shape == (5, N, N) and batch["timeseries"].shape == (5, N, 200)
    assert batch["node_mask"].dtype == torch.bool and batch["y"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_arrays_are_read_once_and_shared(data):
    cache = read_cache(data["fmri"])
    dataset = BrainDataset({"fmri": cache}, "patient")
    assert dataset._arrays["fmri"]["fc"] is cache.arrays["fc"]
    # pyarrow hands out views of its buffers, not copies
    assert not cache.arrays["timeseries"].flags.owndata
    sub = dataset.subset(["00", "01"])
    assert sub._arrays["fmri"]["timeseries"] is cache.arrays["timeseries"]
    assert set(sub.table["subject"]) == {"00", "01"}


def test_window_rule(fmri):
    short = fmri.table["n_timepoints"].min()
    assert crop_window(50, 64, train=False) == (0, 50)
    assert crop_window(100, 64, train=False) == (18, 64)
    gen = torch.Generator().manual_seed(1)
    starts = {crop_window(100, 64, train=True, generator=gen)[0] for _ in range(20)}
    assert len(starts) > 1 and all(0 <= s <= 36 for s in starts)

    evaluation = fmri.subset(fmri.table["subject"], train=False)
    evaluation.length = 64
    training = fmri.subset(fmri.table["subject"], train=True)
    training.length = 64
    a, b = training[0, 0]["timeseries"], training[0, 1]["timeseries"]
    assert torch.equal(a, training[0, 0]["timeseries"])  # a pure function of (seed, epoch, item)
    assert short > 64 and not torch.equal(a, b)  # another epoch, another window
    assert torch.equal(evaluation[0, 0]["timeseries"], evaluation[0, 5]["timeseries"])
    assert evaluation[0]["time_mask"].all()


def test_modalities_join_reports_missing_eeg(data, caplog):
    with caplog.at_level(logging.WARNING, logger="brainfuse"):
        joint = BrainDataset(data, "patient", modalities=("fmri", "eeg", "sc"), eeg_length=32)
    assert joint.missing == {"eeg": [NO_EEG]}
    assert "lack eeg data" in caplog.text and NO_EEG in caplog.text
    assert len(joint) == 23 and NO_EEG not in set(joint.table["subject"])
    item = joint[0]
    assert item["envelopes"].shape == (2, 16, 32) and item["envelope_mask"].all()
    assert item["aec"].shape == (2, 16, 16) and item["band_power"].shape == (2, 16)
    assert item["sc"].shape == (N, N) and item["fc"].shape == (N, N)
    # the first EEG recording is 55 samples long: padded and masked
    first = joint.table.index[joint.table["row_eeg"] == 0][0]
    joint.eeg_length = 64
    assert int(joint[int(first)]["envelope_mask"].sum()) == 55


def test_optional_eeg_keeps_subjects_without_it(data, caplog):
    with caplog.at_level(logging.WARNING, logger="brainfuse"):
        joint = BrainDataset(
            data, "patient", modalities=("fmri", "eeg"), eeg_length=32, optional=("eeg",)
        )
    assert joint.missing == {"eeg": [NO_EEG]} and "served without eeg" in caplog.text
    fmri_only = BrainDataset(data, "patient", modalities=("fmri",))
    assert len(joint) == len(fmri_only)  # nobody left out
    (lacking,) = np.flatnonzero(joint.table["subject"].to_numpy() == NO_EEG)
    absent, present = joint[int(lacking)], joint[int(lacking) - 1]
    assert joint.table["row_eeg"].iloc[lacking] == -1
    assert not absent["envelope_mask"].any() and not absent["envelopes"].any()
    assert absent["envelopes"].shape == present["envelopes"].shape == (2, 16, 32)
    assert absent["aec"].shape == (2, 16, 16) and not absent["aec"].any()
    assert present["envelope_mask"].any()
    # the fMRI of that subject is served as without EEG
    assert torch.equal(absent["fc"], fmri_only[int(lacking)]["fc"])
    with pytest.raises(ValueError, match="only a non-anchor EEG"):
        BrainDataset(data, "patient", modalities=("fmri", "eeg"), optional=("fmri",))


def test_fold_subsets_are_disjoint(data, fmri):
    folds = read_folds(data["folds"])
    parts = {r: fmri.subset(subjects_of(folds, 0, r)) for r in ("train", "val", "test")}
    subjects = {r: set(p.table["subject"]) for r, p in parts.items()}
    assert not subjects["train"] & subjects["test"] and not subjects["val"] & subjects["test"]
    assert sum(len(p) for p in parts.values()) == len(fmri)


def test_train_loader_shards_and_resumes(fmri):
    first = train_loader(fmri, batch_size=5, seed=3)
    epoch0 = [b["index"].tolist() for b in first]
    assert sorted(sum(epoch0, [])) == list(range(24))
    first.batch_sampler.sampler.set_epoch(1)
    assert [b["index"].tolist() for b in first] != epoch0
    resumed = train_loader(fmri, batch_size=5, seed=3)
    resumed.load_state_dict({"epoch": 0, "batches": 2})
    resumed.batch_sampler.sampler.set_epoch(0)
    assert [b["index"].tolist() for b in resumed] == epoch0[2:]
    assert resumed.state_dict() == {"epoch": 0, "batches": len(epoch0)}
    shards = [
        sum((b["index"].tolist() for b in train_loader(fmri, 4, 3, rank, 2)), []) for rank in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 12 and set(shards[0]).isdisjoint(shards[1])


# --------------------------------------------------------------------------- augmentations


def _symmetric(x: torch.Tensor) -> bool:
    return torch.allclose(x, x.T, atol=1e-6)


def _apply(aug, sample, seed=0):
    before = {k: v.clone() for k, v in sample.items()}
    out = aug(sample, torch.Generator().manual_seed(seed))
    for key, value in before.items():  # the input is never modified in place
        assert torch.equal(sample[key], value), key
    for key, value in sample.items():
        assert out[key].shape == value.shape and out[key].dtype == value.dtype, key
    again = aug(sample, torch.Generator().manual_seed(seed))
    assert all(torch.equal(out[k], again[k]) for k in out)  # seeded
    return out


def test_graph_augmentations(sample):
    fc, mask = sample["fc"], sample["node_mask"]
    out = _apply(A.NodeDrop(rate=0.3), sample)
    dropped = mask & ~out["node_mask"]
    assert 10 < int(dropped.sum()) < 50
    assert (out["fc"][dropped] == 0).all() and (out["timeseries"][dropped] == 0).all()
    assert _symmetric(out["fc"])

    out = _apply(A.EdgeDrop(rate=0.3), sample)
    removed = (out["fc"] == 0) & (fc != 0)
    assert 0.2 < removed.float().mean() < 0.4 and _symmetric(out["fc"])
    assert torch.equal(out["fc"].diagonal(), fc.diagonal())

    out = _apply(A.NodeFeatureNoise(sigma=0.1), sample)
    assert not torch.equal(out["fc"][:-1], fc[:-1]) and (out["fc"][~mask] == 0).all()

    out = _apply(A.EdgePerturbation(sigma=0.1), sample)
    assert _symmetric(out["fc"]) and out["fc"].abs().max() <= 1
    assert torch.equal(out["fc"].diagonal(), fc.diagonal()) and not torch.equal(out["fc"], fc)

    out = _apply(A.Subgraph(keep=0.5), sample)
    assert int(out["node_mask"].sum()) == math.ceil(0.5 * int(mask.sum()))
    assert _symmetric(out["fc"])


def test_pseudo_fc(sample):
    # With nothing dropped, FC of the window equals the cached FC (all points fit in L).
    same = A.pearson(sample["timeseries"][:, sample["time_mask"]], sample["node_mask"])
    assert torch.allclose(same, sample["fc"], atol=1e-4)
    out = _apply(A.TimePointDrop(rate=0.3), sample)
    pseudo, valid = out["fc"], sample["node_mask"]
    assert _symmetric(pseudo)
    assert torch.allclose(pseudo.diagonal()[valid], torch.ones(int(valid.sum())))
    assert (pseudo[~valid] == 0).all()
    assert 0.005 < (pseudo - sample["fc"]).abs().mean() < 0.2
    assert torch.equal(out["timeseries"], sample["timeseries"])


def test_time_augmentations(sample):
    x, width = sample["timeseries"], int(sample["time_mask"].sum())

    out = _apply(A.TimeNoise(sigma=0.2), sample)
    assert not torch.equal(out["timeseries"][:, :width], x[:, :width])
    assert (out["timeseries"][:, width:] == 0).all()

    out = _apply(A.TimeFlip(p=1.0), sample)
    assert torch.equal(out["timeseries"][:, :width], x[:, :width].flip(-1))

    out = _apply(A.TimeCrop(min_share=0.5), sample)
    kept = int(out["time_mask"].sum())
    assert width / 2 <= kept <= width and (out["timeseries"][:, kept:] == 0).all()

    out = _apply(A.FrequencyMask(max_share=0.2), sample)
    assert not torch.allclose(out["timeseries"], x) and (out["timeseries"][:, width:] == 0).all()
    spectrum = torch.fft.rfft(out["timeseries"][:, :width], dim=-1).abs().sum(0)
    assert (spectrum < 1e-3).any()  # a band is gone


def test_compose_and_probability(sample):
    never = _apply(A.Compose([A.EdgeDrop(rate=0.5, p=0.0), A.TimeNoise(p=0.0)]), sample)
    assert all(torch.equal(never[k], sample[k]) for k in sample)
    built = A.build_augmentations({"node_drop": {"rate": 0.2}, "pseudo_fc": {"rate": 0.2}})
    assert isinstance(built, A.Compose) and set(built.requires) == {"fc", "timeseries"}
    assert A.build_augmentations({}) is None
    with pytest.raises(ValueError, match="unknown augmentations"):
        A.build_augmentations({"mixup": {}})


def test_dataset_applies_augmentations_per_epoch(fmri):
    aug = fmri.subset(
        fmri.table["subject"], train=True, transform=A.Compose([A.EdgeDrop(rate=0.5)])
    )
    assert torch.equal(aug[3, 0]["fc"], aug[3, 0]["fc"])
    assert not torch.equal(aug[3, 0]["fc"], aug[3, 1]["fc"])


@pytest.mark.parametrize("train", [False, True])
def test_a_batch_is_its_items_stacked(data, train):
    """Batches are read, windowed and augmented at once (``__getitems__``, ``Compose.batch``);
    every item must look as it does alone, whatever batch it is in."""
    dataset = BrainDataset(
        {"fmri": data["fmri"], "eeg": data["eeg"]},
        "patient",
        length=60,
        eeg_length=40,
        train=train,
        optional=("eeg",),
        transform=A.build_augmentations(
            {"pseudo_fc": {"rate": 0.3, "p": 0.7}, "node_drop": {"rate": 0.2}, "time_crop": {}}
        ),
        seed=4,
    )
    keys = [(i, 3) for i in (5, 0, 17, 5, 2)]
    batch = dataset.__getitems__(keys)
    assert batch["fc"].shape == (5, N, N) and batch["envelopes"].shape[-1] == 40
    for b, key in enumerate(keys):
        item = dataset[key]
        assert set(item) == set(batch)
        for field, value in item.items():
            torch.testing.assert_close(batch[field][b], value, rtol=0, atol=1e-6)
    # the batched pseudo-FC view is a Pearson r of the kept time points
    plain = dataset.subset(dataset.table["subject"], transform=None).__getitems__(keys)
    changed = (batch["fc"] != plain["fc"]).any((1, 2))
    assert changed.any() and (batch["fc"].diagonal(dim1=1, dim2=2).abs() <= 1).all()
    if not train:  # no window draws: the batched augmentations match the item-wise ones
        for b, (index, epoch) in enumerate(keys):
            item = {k: v[b] for k, v in plain.items()}
            expected = dataset.transform(item, dataset.generator(index, epoch))
            torch.testing.assert_close(batch["fc"][b], expected["fc"], rtol=0, atol=1e-6)
            assert torch.equal(batch["node_mask"][b], expected["node_mask"])


# --------------------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def batch(fmri) -> dict[str, torch.Tensor]:
    return next(iter(eval_loader(fmri, batch_size=6)))


@pytest.mark.parametrize("name, kwargs", [
    ("gcn", {}), ("gat", {"heads": 2}), ("gcn_dense", {}), ("graph_transformer", {}),
    ("graph_transformer", {"readout": "mean"}), ("temporal_transformer", {}),
    ("temporal_transformer", {"tokens": "roi", "in_len": 101, "input_key": "fft"}),
])  # fmt: skip
def test_encoder_forward_backward(batch, name, kwargs):
    torch.manual_seed(0)
    encoder = build_encoder(name, N, hidden=16, d_model=16, n_heads=2, n_layers=1, **kwargs)
    model = BrainClassifier(encoder, hidden=8)
    embedding = model.embed(batch)
    assert embedding.shape == (6, encoder.out_dim) and torch.isfinite(embedding).all()
    loss = torch.nn.functional.cross_entropy(model(batch), batch["y"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_sparsify_is_symmetric_top_k(batch):
    keep = sparsify(batch["fc"], batch["node_mask"], top_k=5)
    assert torch.equal(keep, keep.transpose(1, 2))
    assert not keep.diagonal(dim1=1, dim2=2).any()
    degree = keep.sum(-1)
    assert (degree[batch["node_mask"]] >= 5).all() and (degree[~batch["node_mask"]] == 0).all()
    thresholded = sparsify(batch["fc"], None, top_k=None, threshold=0.3)
    assert (batch["fc"].abs()[thresholded] > 0.3).all()


def test_dense_and_sparse_gcn_agree(batch):
    torch.manual_seed(0)
    sparse = GCNEncoder(N, hidden=16, top_k=8).eval()
    dense = DenseGCNEncoder(N, hidden=16, top_k=8).eval()
    dense.load_state_dict(sparse.state_dict())
    a = sparse(batch["fc"], batch["node_mask"])
    b = dense(batch["fc"], batch["node_mask"])
    assert torch.allclose(a, b, atol=1e-5)


def test_load_previous_reports_keys(tmp_path):
    torch.manual_seed(0)
    source = BrainClassifier(GCNEncoder(N, hidden=16), hidden=8)
    target = BrainClassifier(GCNEncoder(N, hidden=16, n_layers=3), hidden=4)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "model.bin")
    report = load_previous(target, tmp_path / "model.bin")
    assert "encoder.convs.2.lin.weight" in report["missing"]
    assert "head.0.weight" in report["mismatched"]
    assert report["unexpected"] == []
    assert torch.equal(target.encoder.convs[0].lin.weight, source.encoder.convs[0].lin.weight)


# --------------------------------------------------------------------------- registry


def test_catalog_is_cheap_and_complete():
    code = (
        "import sys; from brainfuse.methods.catalog import default_catalog; "
        "names = default_catalog().names('torch'); "
        "assert not {'torch', 'lightning', 'sklearn'} & set(sys.modules), sys.modules.keys(); "
        "print(names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gcn_fc" in out.stdout
    from brainfuse.methods.torch.encoders import ENCODERS
    from brainfuse.methods.torch.plugins import CLASSIFIER, plugin_for

    catalog = default_catalog()
    for name in catalog.names("torch"):
        spec = catalog[name]
        assert set(spec.modalities) <= {"fmri", "sc", "eeg"}
        assert catalog.params(name)["encoder"] == spec.features
        if spec.plugin:  # stages from plugins (SC+FC fusion, self-supervised, ...)
            assert all(plugin_for(spec, stage) is not CLASSIFIER for stage in spec.stages)
        else:
            assert spec.modalities == ("fmri",) and spec.features in ENCODERS
            assert plugin_for(spec, "fit") is CLASSIFIER
    assert catalog.params("gcn_fc", {"stages": ["fit"], "lr": 0.1})["lr"] == 0.1


def test_bench_encoders_smoke(capsys):
    from brainfuse.benchmarks.encoders import main

    args = [
        "--batch-size",
        "2",
        "--nodes",
        "12",
        "--length",
        "16",
        "--top-k",
        "3",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--hidden",
        "8",
    ]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("gcn_dense=") and last.endswith("(samples/s)")
    assert all(f"{k}=" in last for k in ("gcn_sparse", "graph_transformer", "temporal_transformer"))


def test_unknown_param_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        _run(data, tmp_path, params={"hiden": 8})


# --------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def stage_run(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("stage")
    return out, _run(data, out)


def test_stage_outputs(data, stage_run):
    out, metrics = stage_run
    assert metrics["method"] == "gcn_fc" and metrics["resumed_from_step"] == 0
    assert metrics["steps"] > 0 and 1 <= metrics["epochs"] <= FAST["epochs"]
    # 4 validation subjects (< min_val_subjects): they train too, the whole schedule, the last
    # epoch
    assert metrics["monitor"] == "val_loss" and metrics["model_selection"] == "last_epoch"
    assert metrics["best_val"] is None and metrics["best_step"] == metrics["steps"]
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"subject": str})
    assert list(predictions.columns) == [
        "method",
        "fold",
        "sample_id",
        "subject",
        "label",
        "y_true",
        "y_score",
        "y_pred",
    ]
    test_subjects = subjects_of(read_folds(data["folds"]), 0, "test")
    assert set(predictions["subject"]) == test_subjects
    assert metrics["n_test"] == len(predictions)
    # model.bin rebuilds the selected model
    full = BrainDataset({"fmri": data["fmri"]}, "patient")
    model = TrainedStage.load(out / "model.bin", full).module
    dataset = full.subset(test_subjects)
    with torch.no_grad():
        scores = model.logits(next(iter(eval_loader(dataset, 64)))).softmax(-1)[:, 1].numpy()
    assert np.allclose(scores, predictions["y_score"], atol=1e-6)
    # checkpoints are cleaned up, logs stay
    assert not list((out / "ckpt").glob("*.ckpt"))
    assert (out / "ckpt" / "logs" / "version_0" / "metrics.csv").exists()


def test_stage_learns_planted_effect(stage_run):
    _, metrics = stage_run
    assert metrics["auc"] >= 0.8 and metrics["balanced_accuracy"] > 0.6


def test_stage_is_deterministic(data, stage_run, tmp_path):
    out, first = stage_run
    second = _run(data, tmp_path)
    first, second = dict(first), dict(second)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert (out / "predictions.tsv").read_text() == (tmp_path / "predictions.tsv").read_text()


def test_small_validation_split_trains_with_the_training_subjects(data, stage_run, tmp_path):
    """``small_validation: train`` (the default): the 4 validation subjects (< min_val_subjects)
    join the training subjects and the threshold is 0.5; ``threshold`` keeps them apart to
    choose the threshold. The test subjects are those of the fold either way."""
    _, merged = stage_run
    kept_apart = _run(data, tmp_path, params={"small_validation": "threshold"})
    folds = read_folds(data["folds"])
    assert len(subjects_of(folds, 0, "val")) == 4
    assert merged["n_val"] == 0 and merged["decision_threshold"] == 0.5
    assert kept_apart["n_val"] > 0
    assert merged["n_train"] == kept_apart["n_train"] + kept_apart["n_val"]
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t", dtype={"subject": str})
    assert set(predictions["subject"]) == subjects_of(folds, 0, "test")
    with pytest.raises(ValueError, match="small_validation"):
        _run(data, tmp_path / "bad", params={"small_validation": "merge"})


def test_next_stage_starts_from_previous(data, stage_run, tmp_path):
    out, _ = stage_run
    metrics = _run(
        data,
        tmp_path,
        params={"epochs": 1, "freeze_encoder": True},
        stage="probe",
        previous=str(out / "model.bin"),
    )
    assert metrics["stage"] == "probe" and metrics["previous_keys"] == {
        "missing": [],
        "unexpected": [],
        "mismatched": [],
    }
    before = read_model(out / "model.bin")["state_dict"]
    after = read_model(tmp_path / "model.bin")["state_dict"]
    assert torch.equal(before["encoder.convs.0.lin.weight"], after["encoder.convs.0.lin.weight"])


def test_stale_checkpoint_is_discarded(data, tmp_path, caplog):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.ckpt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="brainfuse"):
        metrics = _run(data, tmp_path, params={"epochs": 1})
    assert metrics["resumed_from_step"] == 0 and "starting afresh" in caplog.text


def test_ddp_two_cpu_processes(data, tmp_path):
    """DDP with the gloo backend: Lightning starts rank 1 by re-running this script."""
    script = tmp_path / "ddp_stage.py"
    script.write_text(
        textwrap.dedent(f"""
        from brainfuse.methods.request import StageOutputs, StageRequest
        from brainfuse.methods.torch.runner import run_torch_stage
        run_torch_stage(StageRequest(
            "gcn_fc", "fit", 0, {{"fmri": {data["fmri"]!r}}}, {data["folds"]!r}, "patient", 0,
            StageOutputs("model.bin", "metrics.json", "predictions.tsv"), {FAST!r},
            checkpoint_dir="ckpt", devices=2,
        ))
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["steps"] > 0
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert len(predictions) == metrics["n_test"] > 0
    assert (tmp_path / "model.bin").exists()
