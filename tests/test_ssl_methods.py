"""Self-supervised methods (MCSP, BrainMass, BrainMAE, dFC generative): building blocks and a
short multi-stage run of each method over one fold of synthetic fMRI + EEG caches."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainfuse.core.connectivity import sliding_window_fc as numpy_dfc
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.ssl import brainmae, brainmass, common, dfc_generative, mcsp
from brainfuse.methods.ssl.specs import SPECS as SSL_SPECS
from brainfuse.methods.ssl.synthetic import write_multimodal_caches
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.plugins import (
    StageContext,
    embeddings,
    fit_linear_probe,
    plugin_for,
)
from brainfuse.methods.torch.runner import check_params, predict_proba, run_torch_stage

CATALOG = default_catalog()
SSL_METHODS = {spec.name: spec for spec in SSL_SPECS}

torch.set_num_threads(1)

NO_EEG = 5  # subject written without EEG
#: Small networks and short schedules: about 1-6 s per stage on one core.
TINY: dict[str, dict] = {
    "mcsp": {
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
        "dim_feedforward": 64,
        "proj_hidden": 32,
        "proj_dim": 16,
        "length": 100,
        "eeg_length": 100,
        "lr": 2e-3,
        "per_stage": {
            "pretrain": {"epochs": 2, "batch_size": 8},
            "finetune": {"epochs": 15},
            "distill": {"epochs": 4},
        },
    },
    "brainmass": {
        "n_layers": 1,
        "dim_feedforward": 64,
        "proj_hidden": 64,
        "proj_dim": 32,
        "length": 100,
        "few_shot": [2, 4],
        "few_shot_repeats": 3,
        "per_stage": {
            "pretrain": {"epochs": 4, "batch_size": 8},
            "finetune": {"epochs": 25, "patience": 25},
        },
    },
    "brainmae": {
        "d_model": 32,
        "d_embed": 16,
        "n_heads": 2,
        "n_layers": 1,
        "dim_feedforward": 64,
        "length": 100,
        "segment": 10,
        "decoder_dim": 16,
        "decoder_heads": 2,
        "encoder_dropout": 0.0,
        "per_stage": {
            "pretrain": {"epochs": 3, "batch_size": 8},
            "finetune": {"epochs": 15, "lr": 3e-3, "patience": 15},
        },
    },
    "dfc_generative": {
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
        "dim_feedforward": 64,
        "length": 100,
        "per_stage": {"pretrain": {"epochs": 4, "batch_size": 8}, "finetune": {"epochs": 15}},
    },
}
TINY["mcsp_fmri_only"] = TINY["mcsp"]
#: Stages run per method (mcsp_fmri_only's distillation is the code mcsp runs).
RUN_STAGES = {
    **{name: spec.stages for name, spec in SSL_METHODS.items()},
    "mcsp_fmri_only": ("pretrain", "finetune"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_multimodal_caches(
        tmp_path_factory.mktemp("ssl_caches"),
        n_subjects=32,
        effect=0.6,
        eeg_effect=0.6,
        drop_eeg=(NO_EEG,),
        seed=0,
    )


@pytest.fixture(scope="module")
def fmri(data) -> BrainDataset:
    return BrainDataset({"fmri": data["fmri"]}, "patient", length=100)


def _batch(dataset: BrainDataset, n: int = 4) -> dict[str, torch.Tensor]:
    return next(iter(eval_loader(dataset, n)))


def _context(method: str, stage: str, dataset: BrainDataset, data: dict, **params) -> StageContext:
    hp = CATALOG.params(method, {**TINY[method], **params}, stage)
    folds = read_folds(data["folds"])
    return StageContext(
        method=method,
        stage=stage,
        fold=0,
        seed=0,
        hp=hp,
        dataset=dataset,
        train_set=dataset.subset(subjects_of(folds, 0, "train")),
    )


# --------------------------------------------------------------------------- registry


def test_catalog_and_plugins():
    for method, spec in SSL_METHODS.items():
        assert CATALOG[method] == spec
        for stage in spec.stages:
            plugin = plugin_for(spec, stage)
            assert plugin.supervised == (stage != "pretrain")
            hp = CATALOG.params(method, None, stage)
            check_params(CATALOG, method, hp, plugin.supervised)  # every default is a known key
    assert SSL_METHODS["mcsp"].modalities == ("fmri", "eeg")
    assert SSL_METHODS["mcsp_fmri_only"].modalities == ("fmri",)
    assert SSL_METHODS["mcsp"].params["alpha"] == 0.8
    assert SSL_METHODS["brainmass"].params["momentum"] == 0.996
    with pytest.raises(ValueError, match="unknown keys"):
        hp = CATALOG.params("brainmae", {"mask_ration": 0.5}, "pretrain")
        check_params(CATALOG, "brainmae", hp)


# --------------------------------------------------------------------------- building blocks


def test_masked_pearson_and_pseudo_fc():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 40, generator=gen)
    keep = torch.rand(2, 40, generator=gen) < 0.7
    node_mask = torch.ones(2, 6, dtype=torch.bool)
    node_mask[1, 5] = False
    r = common.masked_pearson(x, keep, node_mask)
    for b in range(2):
        valid = node_mask[b].numpy()
        expected = np.corrcoef(x[b][:, keep[b]].numpy()[valid])
        assert np.allclose(r[b].numpy()[np.ix_(valid, valid)], expected, atol=1e-5)
    assert torch.all(r[1, 5] == 0) and torch.all(r[1, :, 5] == 0)
    time_mask = torch.zeros(2, 40, dtype=torch.bool)
    time_mask[0, :30], time_mask[1, :40] = True, True
    view = common.pseudo_fc(x, time_mask, None, 0.2)
    assert view.shape == (2, 6, 6)
    assert torch.allclose(view.diagonal(dim1=1, dim2=2), torch.ones(2, 6))
    assert not torch.allclose(view, common.masked_pearson(x, time_mask))  # points dropped


def test_sliding_window_fc_matches_cache_definition():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 60, generator=gen, dtype=torch.float64)
    time_mask = torch.ones(2, 60, dtype=torch.bool)
    time_mask[1, 50:] = False
    dfc, valid = dfc_generative.sliding_window_fc(x, time_mask, window=20, step=5)
    expected = numpy_dfc(x[0].numpy().T, 20, 5)
    assert dfc.shape == (2, dfc_generative.n_windows(60, 20, 5), 10)
    assert np.allclose(dfc[0].numpy(), expected, atol=1e-6)
    assert valid[0].all() and valid[1].sum() == dfc_generative.n_windows(50, 20, 5)


def test_region_aware_adjacency_has_no_self_loops():
    attention = brainmae.RegionAwareAttention(d_model=8, d_embed=4)
    adj = attention.adjacency(torch.randn(7, 4))
    assert torch.allclose(adj.sum(-1), torch.ones(7))
    assert torch.all(adj.diagonal() == 0) and torch.all(adj >= 0)


def test_brainmae_encoder_ignores_hidden_patches():
    torch.manual_seed(0)
    encoder = brainmae.BrainMAEEncoder(6, length=40, segment=10, d_model=16, d_embed=8, n_heads=2)
    encoder.eval()
    x, time_mask = torch.randn(1, 6, 40), torch.ones(1, 40, dtype=torch.bool)
    node_mask = torch.ones(1, 6, dtype=torch.bool)
    hidden = torch.zeros(1, 6, 4, dtype=torch.bool)
    hidden[0, 2, 1] = hidden[0, 4, 3] = True
    changed = x.clone()
    changed[0, 2, 10:20] += 5.0  # the content of a hidden patch
    a, visible = encoder.tokens(x, time_mask, node_mask, hidden)
    b, _ = encoder.tokens(changed, time_mask, node_mask, hidden)
    assert torch.allclose(a[visible], b[visible], atol=1e-6)
    c, _ = encoder.tokens(changed, time_mask, node_mask)
    assert not torch.allclose(a[visible], c[visible])


def test_brainmass_mask_rois_hides_rows_and_columns():
    torch.manual_seed(0)
    fc = torch.rand(2, 8, 8)
    node_mask = torch.ones(2, 8, dtype=torch.bool)
    node_mask[1, 7] = False
    token = torch.full((8,), 9.0)
    out, masked = brainmass.mask_rois(fc, node_mask, 0.25, token)
    assert masked.sum(-1).tolist() == [2, 2]
    assert not masked[1, 7]
    for b in range(2):
        hidden = masked[b]
        assert torch.all(out[b][hidden] == 9.0)
        assert torch.all(out[b][~hidden][:, hidden] == 0)
        assert torch.equal(out[b][~hidden][:, ~hidden], fc[b][~hidden][:, ~hidden])


def test_zero_residual_init_starts_encoders_as_their_input_tokens():
    """Issue 19: with ``residual_init: zero`` every residual branch starts as a constant (its
    last weight matrix is zero, its bias kept), so BrainMass's encoder starts as the
    layer-normed FC rows (plus the ROI embedding and that constant) and MCSP's graph
    transformer as the mean of its layer-normed token embeddings; gradients still reach the
    zeroed weights."""
    from brainfuse.methods.torch.encoders import GraphTransformer, masked_mean

    def branch_bias(transformer: torch.nn.TransformerEncoder) -> torch.Tensor:
        return sum(
            layer.linear2.bias + layer.self_attn.out_proj.bias for layer in transformer.layers
        )

    torch.manual_seed(0)
    fc = torch.rand(3, 8, 8)
    encoder = brainmass.BrainMassEncoder(8, n_heads=2, dropout=0.0, residual_init="zero").eval()
    constant = branch_bias(encoder.transformer)
    expected = encoder.norm(fc + encoder.node_embedding + constant)
    assert torch.allclose(encoder.states(fc), expected, atol=1e-5)
    default = brainmass.BrainMassEncoder(8, n_heads=2, dropout=0.0, residual_init="default")
    constant = branch_bias(default.transformer)
    unmixed = default.norm(fc + default.node_embedding + constant)
    assert not torch.allclose(default.eval().states(fc), unmixed, atol=1e-3)
    graph = GraphTransformer(8, d_model=16, dropout=0.0, readout="mean", residual_init="zero")
    mask = torch.ones(3, 8, dtype=torch.bool)
    tokens = graph.norm(graph.embed(fc) + graph.node_embedding + branch_bias(graph.transformer))
    assert torch.allclose(graph.eval()(fc, mask), masked_mean(tokens, mask), atol=1e-5)
    encoder.train()(fc).sum().backward()
    assert encoder.transformer.layers[0].linear2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="residual_init"):
        brainmass.BrainMassEncoder(8, n_heads=2, residual_init="small")


def test_mcsp_uses_fmri_alone_without_eeg(data):
    both = BrainDataset(
        {"fmri": data["fmri"], "eeg": data["eeg"]}, "patient", length=100, eeg_length=100
    )
    module = mcsp.MCSPFinetune(_context("mcsp", "finetune", both, data)).eval()
    batch = _batch(both.with_fields(module.input_keys))
    without = dict(batch)
    without["envelope_mask"] = torch.zeros_like(batch["envelope_mask"])
    fmri_only = {k: v for k, v in batch.items() if k not in mcsp.EEG_KEYS}
    with torch.no_grad():
        fused = module.fused_embedding(batch)
        lacking = module.fused_embedding(without)
        alone = module.fused_embedding(fmri_only)
        fmri_part = module.network.domain_embeddings(mcsp.domain_inputs(batch, "fmri"))
    assert torch.allclose(lacking, alone)
    assert torch.allclose(alone, torch.cat([fmri_part[k] for k in mcsp.DOMAINS], -1))
    assert not torch.allclose(fused, alone)
    assert module.logits(batch).shape == (4, 2)


def test_relative_log_amplitude():
    # log10 power: +2 (x100 power, x10 amplitude) on parcel 0; parcel 3 is masked.
    power = torch.tensor([[2.0, 0.0, 0.0, -30.0]])
    node_mask = torch.tensor([[True, True, True, False]])
    out = mcsp.relative_log_amplitude(power, node_mask)
    assert out[0, 3] == 0 and out[0, :3].sum().abs() < 1e-6
    assert (out[0, 0] - out[0, 1]).item() == pytest.approx(np.log(10.0), rel=1e-6)


def test_mcsp_rejects_unknown_band(data):
    both = BrainDataset({"fmri": data["fmri"], "eeg": data["eeg"]}, "patient")
    with pytest.raises(ValueError, match="eeg_band"):
        mcsp.MCSPPretrain(_context("mcsp", "pretrain", both, data, eeg_band="gamma"))


def test_stage_losses_are_finite_and_differentiable(data, fmri):
    for method, cls in (
        ("brainmass", brainmass.BrainMassPretrain),
        ("brainmae", brainmae.BrainMAEPretrain),
        ("dfc_generative", dfc_generative.DFCPretrain),
        ("mcsp_fmri_only", mcsp.MCSPPretrain),
    ):
        module = cls(_context(method, "pretrain", fmri, data))
        terms = module.losses(_batch(fmri.with_fields(module.input_keys)))
        assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad, method
        terms["loss"].backward()


def test_probe_initialised_head_predicts_as_the_probe(data, fmri):
    """LP-FT: before fine-tuning, the stage predicts exactly what the linear probe of its
    (pre-trained) embeddings predicts."""
    folds = read_folds(data["folds"])
    roles = {r: fmri.subset(subjects_of(folds, 0, r)) for r in ("train", "val", "test")}
    module = brainmae.BrainMAEFinetune(_context("brainmae", "finetune", fmri, data))
    module.supervised = True
    module.attach(roles["train"], roles["val"], 8, 0, 1)
    c = module.initialise_head_from_probe()
    assert module.training  # left ready to train
    x = {
        r: embeddings(module, d.with_fields(module.input_keys), 8, "cpu") for r, d in roles.items()
    }
    probe, c_probe = fit_linear_probe(
        x["train"], roles["train"].labels, x["val"], roles["val"].labels, 0
    )
    assert c == c_probe
    expected = probe.predict_proba(x["test"])[:, 1]
    got = predict_proba(module, roles["test"].with_fields(module.input_keys), 8)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_brainmae_similarity_readout_compares_roi_trajectories():
    torch.manual_seed(0)
    encoder = brainmae.BrainMAEEncoder(5, length=40, segment=10, d_model=8, d_embed=4, n_layers=0)
    x = torch.randn(2, 5, 40)
    x[:, 1] = x[:, 0]  # same series as ROI 0 (ROI identity is a constant, centred away)
    x[:, 2] = -x[:, 0]
    sim = encoder.roi_similarity(
        x, torch.ones(2, 40, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    )
    assert sim.shape == (2, 10)  # upper triangle of 5 x 5, row-major: (0,1), (0,2), ...
    assert torch.allclose(sim[:, 0], torch.ones(2), atol=1e-5)
    assert (sim[:, 1] < -0.99).all()  # only the shared segment embedding does not flip
    assert (sim.abs() <= 1 + 1e-5).all()


def test_frozen_embedding_metrics_on_separable_embeddings():
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat([0, 1], 10), np.repeat([0, 1], 5)
    x_train = rng.standard_normal((20, 4)) + 3 * y_train[:, None]
    x_test = rng.standard_normal((10, 4)) + 3 * y_test[:, None]
    out = common.frozen_embedding_metrics(x_train, y_train, x_test, y_test, (2, 20), 4)
    assert out["svm"]["auc"] == 1.0 and out["logreg"]["auc"] == 1.0
    assert out["few_shot"]["logreg"]["k=2"]["draws"] == 4
    assert "k=20" not in out["few_shot"]["svm"]  # more than the classes hold


# --------------------------------------------------------------------------- multi-stage runs


def _run(
    method: str,
    data: dict[str, str],
    out: Path,
    modalities: tuple[str, ...] | None = None,
    params: dict | None = None,
) -> dict[str, dict]:
    """Run the method's stages on fold 0 with the caches of ``modalities`` (default: all of the
    method's), ``params`` over the tiny ones."""
    modalities = modalities or CATALOG[method].modalities
    previous, metrics = None, {}
    for stage in RUN_STAGES[method]:
        stage_dir = out / stage
        request = StageRequest(
            method=method,
            stage=stage,
            fold=0,
            cache_paths={m: data[m] for m in modalities},
            folds_path=data["folds"],
            positive="patient",
            seed=0,
            outputs=StageOutputs(
                str(stage_dir / "model.bin"),
                str(stage_dir / "metrics.json"),
                str(stage_dir / "predictions.tsv"),
            ),
            params={"num_threads": 1, **TINY[method], **(params or {})},
            previous=previous,
            checkpoint_dir=str(out / "checkpoints" / stage),
        )
        run_torch_stage(request, CATALOG)
        metrics[stage] = json.loads((stage_dir / "metrics.json").read_text())
        predictions = pd.read_csv(stage_dir / "predictions.tsv", sep="\t")
        assert len(predictions) == metrics[stage]["n_test"] > 0
        assert predictions["y_score"].between(0, 1).all()
        previous = str(stage_dir / "model.bin")
    return metrics


def _fmri_only_counts(data: dict[str, str]) -> dict[str, int]:
    fmri = BrainDataset({"fmri": data["fmri"]}, "patient")
    folds = read_folds(data["folds"])
    return {r: len(fmri.subset(subjects_of(folds, 0, r))) for r in ("train", "val", "test")}


@pytest.mark.parametrize("method", sorted(SSL_METHODS))
def test_method_stages_run_and_finetuned_model_beats_chance(method, data, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="brainfuse")
    metrics = _run(method, data, tmp_path)
    pretrain = metrics["pretrain"]
    assert pretrain["evaluation"] == "linear_probe" and np.isfinite(pretrain["auc"])
    assert pretrain["n_pretrain"] == pretrain["n_train"]
    assert metrics["finetune"]["evaluation"] == "classifier"
    assert metrics["finetune"]["previous_keys"]["missing"] == []  # the encoder was loaded
    assert metrics["finetune"]["auc"] > 0.5
    if method == "mcsp":
        # the subject without EEG is kept (fMRI alone), not left out
        assert metrics["pretrain"]["missing_modalities"] == {"eeg": [f"{NO_EEG:02d}"]}
        # mcsp keeps its validation subjects apart (small_validation: threshold)
        assert metrics["pretrain"]["n_train"] == _fmri_only_counts(data)["train"]
    if method == "mcsp":
        distill = metrics["distill"]
        assert set(distill["distillation_auc"]) == {*mcsp.DOMAINS, "teacher"}
        # student_readout: auto - chosen on the validation subjects, then used for the test ones
        selected = distill["student_readout_selected"]
        assert set(distill["student_readout_val_auc"]) == {"mean", *mcsp.DOMAINS}
        if selected != "mean":
            assert distill["auc"] == pytest.approx(distill["distillation_auc"][selected])
        if selected != "mean":
            assert distill["auc"] == pytest.approx(distill["distillation_auc"][selected])
        assert distill["distillation_auc"]["teacher"] == pytest.approx(metrics["finetune"]["auc"])
    if method == "brainmass":
        frozen = pretrain["frozen_embeddings"]
        assert {"svm", "logreg", "few_shot"} <= set(frozen)
        assert frozen["few_shot"]["svm"]["k=4"]["draws"] == 3


def test_mcsp_without_validation_subjects_reads_out_the_students_mean(data, tmp_path):
    """``student_readout: auto`` when the 4 validation subjects train
    (``small_validation: train``): nothing to choose on, the students' mean."""
    distill = _run("mcsp", data, tmp_path, params={"small_validation": "train"})["distill"]
    assert distill["n_val"] == 0
    assert distill["student_readout_selected"] == "mean"
    assert distill["student_readout_val_auc"] == {}


@pytest.mark.parametrize("modality", ["eeg", "fmri"])
def test_mcsp_trains_one_branch_alone_on_single_modality_data(modality, data, tmp_path):
    """On an EEG-only (fMRI-only) dataset mcsp reads that cache alone: every stage runs and
    writes its outputs, and the fine-tuned and distilled models find the planted effect."""
    assert CATALOG.modalities_of("mcsp", {modality}) == (modality,)
    metrics = _run("mcsp", data, tmp_path, modalities=(modality,))
    for stage in mcsp.STAGES:
        assert (tmp_path / stage / "model.bin").stat().st_size > 0
    alone = BrainDataset({modality: data[modality]}, "patient")
    folds = read_folds(data["folds"])
    assert metrics["pretrain"]["n_train"] == len(alone.subset(subjects_of(folds, 0, "train")))
    assert metrics["pretrain"]["missing_modalities"] == {}
    assert metrics["finetune"]["previous_keys"]["missing"] == []
    assert metrics["finetune"]["auc"] > 0.7
    assert metrics["distill"]["distillation_auc"]["teacher"] == pytest.approx(
        metrics["finetune"]["auc"]
    )
    assert metrics["distill"]["auc"] > 0.7


def test_mcsp_pretrain_on_eeg_only_has_no_fmri_or_cross_modal_term(data):
    eeg = BrainDataset({"eeg": data["eeg"]}, "patient", eeg_length=100)
    module = mcsp.MCSPPretrain(_context("mcsp", "pretrain", eeg, data))
    assert module.input_keys == mcsp.EEG_KEYS
    assert set(module.network.heads) == {f"eeg_{k}" for k in mcsp.DOMAINS}
    terms = module.losses(_batch(eeg.with_fields(module.input_keys)))
    assert {"eeg_in_domain", "eeg_cross_domain", "loss"} == set(terms)
    assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad
    finetune = mcsp.MCSPFinetune(_context("mcsp", "finetune", eeg, data)).eval()
    batch = _batch(eeg.with_fields(finetune.input_keys))
    with torch.no_grad():
        alone = finetune.network.domain_embeddings(
            mcsp.domain_inputs(batch, "eeg", finetune.band, finetune.amplitude)
        )
        fused = finetune.fused_embedding(batch)
    assert torch.equal(fused, torch.cat([alone[k] for k in mcsp.DOMAINS], -1))
