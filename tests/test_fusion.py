"""SC+FC fusion methods (M3D-BFS, ConneX) and the stage-plugin interface they run on."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.methods.fusion.m3d_bfs import (
    M3DBFS,
    NoisyTopKGate,
    clip_loss,
    cv_squared,
    disentanglement_loss,
    replicate_experts,
)
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.encoders import NODE_NORMS
from brainfuse.methods.torch.module import StageModule
from brainfuse.methods.torch.plugins import CLASSIFIER, StageContext, StagePlugin, plugin_for
from brainfuse.methods.torch.runner import run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.methods.torch.trained import TrainedStage
from brainfuse.methods.torch.weights import load_previous

CATALOG = default_catalog()

torch.set_num_threads(1)

N = 100
#: Small networks and short runs: a few seconds per stage on one core.
SMALL_M3D = {
    "hidden": 32, "n_layers": 2, "fusion_dim": 32, "expert_hidden": 32, "epochs": 15,
    "num_threads": 1,
}  # fmt: skip
SMALL_CONNEX = {"hidden": 32, "token_hidden": 32, "channel_hidden": 64, "num_threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """24 subjects; patients have stronger FC and SC among the same 10 parcels."""
    return write_synthetic_caches(tmp_path_factory.mktemp("caches"), n_subjects=24, seed=0,
                                  sc_effect=1.0)  # fmt: skip


@pytest.fixture(scope="module")
def batch(data) -> dict[str, Tensor]:
    dataset = BrainDataset({"fmri": data["fmri"], "sc": data["sc"]}, "patient",
                           fields=["fc", "sc"])  # fmt: skip
    return next(iter(eval_loader(dataset, batch_size=6)))


def _run(
    data: dict[str, str],
    out: Path,
    method: str,
    stage: str,
    params: dict,
    previous: str | None = None,
    fold: int = 0,
    catalog: Catalog = CATALOG,
) -> dict:
    modalities = catalog[method].modalities
    outputs = StageOutputs(
        str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
    )
    request = StageRequest(
        method, stage, fold, {m: data[m] for m in modalities}, data["folds"], "patient", 0,
        outputs, params, previous, str(out / "ckpt"),
    )  # fmt: skip
    run_torch_stage(request, catalog)
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- gating and losses


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_top_k_gating_routes_to_exactly_k_experts(k, training):
    torch.manual_seed(0)
    gate = NoisyTopKGate(16, n_experts=4, k=k).train(training)
    nn.init.normal_(gate.w_gate, std=0.5)
    gates, balance = gate(torch.randn(50, 16))
    assert gates.shape == (50, 4)
    assert ((gates > 0).sum(-1) == k).all()
    assert torch.allclose(gates.sum(-1), torch.ones(50))
    assert balance.ndim == 0 and balance >= 0


def test_load_balance_loss():
    assert float(cv_squared(torch.full((4,), 3.0))) == 0.0  # uniform load
    assert float(cv_squared(torch.tensor([8.0, 0.0, 0.0, 0.0]))) == pytest.approx(3.0)
    assert float(cv_squared(torch.tensor([5.0]))) == 0.0  # a single expert is always balanced
    # Zero-initialised gates in eval mode send every token to the first expert: unbalanced.
    with torch.no_grad():
        _, balance = NoisyTopKGate(8, 4).eval()(torch.randn(20, 8))
    assert float(balance) == pytest.approx(6.0)
    # A balanced routing: each expert wins the same number of tokens with the same weight.
    gate = NoisyTopKGate(4, 4).eval()
    with torch.no_grad():
        gate.w_gate.copy_(torch.eye(4))
        _, balance = gate(torch.eye(4).repeat(5, 1))
    assert float(balance) == pytest.approx(0.0, abs=1e-6)


def test_disentanglement_loss_prefers_the_intended_arrangement():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 32))[0][:, :3].T  # three orthonormal directions
    sc, fc, shared = (basis[i].expand(8, 32) + 0.05 * torch.randn(8, 32) for i in range(3))
    anchor = (sc + fc + shared) / 3  # the joint embedding: close to all three views
    arranged = disentanglement_loss(sc, fc, shared, anchor)
    shuffled = disentanglement_loss(sc, anchor, shared, fc)  # roles swapped
    collapsed = disentanglement_loss(sc, sc.clone(), sc.clone(), anchor)  # views not apart
    assert arranged < shuffled and arranged < collapsed


def test_clip_loss_is_lower_for_matched_pairs():
    torch.manual_seed(0)
    sc = torch.randn(8, 16)
    fc = sc + 0.1 * torch.randn(8, 16)
    matched = clip_loss(sc, fc)
    assert matched < clip_loss(sc, fc[torch.roll(torch.arange(8), 1)])
    assert matched < clip_loss(sc, torch.randn(8, 16))


# --------------------------------------------------------------------------- M3D-BFS network


@pytest.mark.parametrize("norm", sorted(NODE_NORMS))
def test_node_norm_keeps_node_strength_unless_layer(norm):
    """A node whose state is half as strong (a disconnected parcel) stays distinguishable
    after every normalisation but LayerNorm, which rescales each node to unit variance."""
    torch.manual_seed(0)
    module = NODE_NORMS[norm](8).eval()
    x = torch.randn(3, 5, 8)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 4] = False
    weaker = x.clone()
    weaker[:, 0] *= 0.5
    if norm == "batch":  # statistics of the batch being normalised
        module.train()
    with torch.no_grad():
        a, b = module(x, mask), module(weaker, mask)
    same = torch.allclose(a[:, 0], b[:, 0], atol=1e-4)
    assert same == (norm == "layer")
    assert torch.isfinite(a).all() and a.shape == x.shape


def test_m3d_forward_shapes_and_gradients(batch):
    torch.manual_seed(0)
    model = M3DBFS(N, hidden=16, n_layers=2, fusion_dim=16, n_fusion_layers=2, n_experts=3,
                   expert_hidden=16)  # fmt: skip
    out = model(batch["sc"], batch["fc"], batch["node_mask"])
    assert out.logits.shape == (6, 2) and out.anchor.shape == (6, 16)
    assert len(out.gates) == 2 and out.gates[0]["shared"].shape == (6, 2 * N, 3)
    # The masked FC parcel of subject 01 takes no part in the pooled shared embedding.
    assert not out.masks["fc"].all() and out.masks["sc"].all()
    loss = out.logits.sum() + out.moe_loss + clip_loss(out.sc_shared, out.fc_shared)
    loss.backward()
    assert model.blocks[0].moe["shared"].gate.w_gate.grad is not None


def test_copied_experts_reproduce_the_single_expert_model(batch, tmp_path):
    torch.manual_seed(0)
    kwargs = {"hidden": 16, "n_layers": 2, "fusion_dim": 16, "expert_hidden": 16}
    single = M3DBFS(N, n_experts=1, **kwargs).eval()
    torch.save({"state_dict": single.state_dict()}, tmp_path / "model.bin")
    torch.manual_seed(1)  # the fine-tuning model starts from other random weights
    many = M3DBFS(N, n_experts=4, **kwargs)
    report = load_previous(many, tmp_path / "model.bin", lambda s: replicate_experts(s, 4))
    assert report["missing"] == [] and report["unexpected"] == []
    assert all(".gate.w_" in key for key in report["mismatched"])
    many.eval()
    with torch.no_grad():
        a = single(batch["sc"], batch["fc"], batch["node_mask"])
        b = many(batch["sc"], batch["fc"], batch["node_mask"])
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert torch.allclose(a.anchor, b.anchor, atol=1e-6)
    # In training the noisy gates spread tokens over the identical experts: same output.
    many.train()
    for module in many.modules():
        if isinstance(module, (nn.Dropout, nn.BatchNorm1d)):
            module.eval()
    with torch.no_grad():
        c = many(batch["sc"], batch["fc"], batch["node_mask"])
    assert (c.gates[0]["shared"].argmax(-1) > 0).any()
    assert torch.allclose(a.logits, c.logits, atol=1e-5)


# --------------------------------------------------------------------------- parameters


def test_per_stage_parameters():
    params = {"epochs": 7, "per_stage": {"finetune": {"lr": 0.5, "epochs": 3}}}
    assert CATALOG.params("m3d_bfs", params, "finetune")["epochs"] == 3
    assert CATALOG.params("m3d_bfs", params, "finetune")["lr"] == 0.5
    assert CATALOG.params("m3d_bfs", params, "pretrain")["epochs"] == 7
    assert "per_stage" not in CATALOG.params("m3d_bfs", params, "pretrain")
    assert CATALOG.params("m3d_bfs", {}, "finetune")["alpha"] == 0.6
    with pytest.raises(ValueError, match="per_stage"):
        CATALOG.params("m3d_bfs", {"per_stage": {"finetune": 3}})


def test_plugin_lookup():
    assert plugin_for(CATALOG["gcn_fc"], "anything") is CLASSIFIER
    assert plugin_for(CATALOG["m3d_bfs"], "finetune").supervised
    connex = plugin_for(CATALOG["connex"], "train")
    sc_only = plugin_for(CATALOG["connex_sc_only"], "train")
    # one stage class, told the graphs of each ConneX method
    assert sc_only.build.func is connex.build.func
    assert (connex.build.keywords, sc_only.build.keywords) == (
        {"graphs": ("sc", "fc")},
        {"graphs": ("sc",)},
    )
    with pytest.raises(KeyError, match="no stage 'fit'"):
        plugin_for(CATALOG["m3d_bfs"], "fit")
    with pytest.raises(KeyError, match="not a torch method"):
        plugin_for(CATALOG["logreg_fc"], "fit")
    with pytest.raises(ValueError, match="the network reads"):
        plugin_for(dataclasses.replace(CATALOG["connex_sc_only"], modalities=("fmri",)), "train")


def test_unknown_fusion_param_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        _run(data, tmp_path, "m3d_bfs", "encoders", {"n_expert": 3})


# --------------------------------------------------------------------------- full runs


@pytest.fixture(scope="module")
def m3d_run(data, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The three M3D-BFS stages on fold 0, chained through ``previous``."""
    root = tmp_path_factory.mktemp("m3d")
    out, previous = {}, None
    for stage in ("encoders", "pretrain", "finetune"):
        start = time.perf_counter()
        metrics = _run(data, root / stage, "m3d_bfs", stage, SMALL_M3D, previous)
        metrics["wall"] = time.perf_counter() - start
        out[stage] = (root / stage, metrics)
        previous = str(root / stage / "model.bin")
    return out


def test_m3d_three_stages_beat_chance(m3d_run):
    for stage, (out, metrics) in m3d_run.items():
        assert metrics["stage"] == stage and metrics["evaluation"] == "classifier"
        predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
        assert len(predictions) == metrics["n_test"] > 0
    final = m3d_run["finetune"][1]
    assert final["auc"] >= 0.8 and final["balanced_accuracy"] > 0.6, final
    # Each stage starts from the one before: stage 2 takes the encoders only, stage 3 all but
    # the (wider) gates.
    assert m3d_run["pretrain"][1]["previous_keys"] == {
        "missing": [], "unexpected": [], "mismatched": [],
    }  # fmt: skip
    finetune_keys = m3d_run["finetune"][1]["previous_keys"]
    assert finetune_keys["missing"] == [] and finetune_keys["unexpected"] == []
    assert finetune_keys["mismatched"] and all(".gate." in k for k in finetune_keys["mismatched"])


def test_m3d_stages_keep_what_they_freeze(m3d_run):
    encoders = torch.load(m3d_run["encoders"][0] / "model.bin", weights_only=True)["state_dict"]
    before = torch.load(m3d_run["pretrain"][0] / "model.bin", weights_only=True)["state_dict"]
    after = torch.load(m3d_run["finetune"][0] / "model.bin", weights_only=True)["state_dict"]
    # The fusion model holds the stage-1 encoders, not their heads.
    assert {k for k in encoders if "_head." not in k} < set(before)
    assert "sc_head.1.weight" in encoders and "sc_head.1.weight" not in before
    for key in before:
        if key.startswith(("sc_encoder.", "fc_encoder.", "sc_specific_proj", "sc_shared_proj")):
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])


def test_trained_stage_rebuilds_a_plugin_stage(data, m3d_run):
    """TrainedStage.load gives back the module that wrote predictions.tsv."""
    out, metrics = m3d_run["finetune"]
    full = BrainDataset({"fmri": data["fmri"], "sc": data["sc"]}, "patient")
    trained = TrainedStage.load(
        out / "model.bin", full, previous=metrics["previous"], catalog=CATALOG
    )
    assert trained.spec is CATALOG["m3d_bfs"] and trained.supervised
    assert not trained.module.training
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"subject": str})
    test = full.with_fields(trained.input_keys).subset(predictions["subject"])
    with torch.no_grad():
        batch = next(iter(eval_loader(test, 64)))
        scores = trained.module.logits(batch).softmax(-1)[:, 1].numpy()
    assert np.allclose(scores, predictions["y_score"], atol=1e-5)


def test_m3d_routing_report(m3d_run):
    out, metrics = m3d_run["finetune"]
    routing = pd.read_csv(out / "tables" / "routing.tsv", sep="\t")
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert set(routing["sample_id"]) == set(predictions["sample_id"])
    n_experts = CATALOG["m3d_bfs"].params["n_experts"]
    assert len(routing) == len(predictions) * 2 * 3 * n_experts  # blocks x MoEs x experts
    per = routing.groupby(["sample_id", "block", "moe"])
    assert np.allclose(per["sc_share"].sum().loc[:, :, ["sc", "shared"]], 1.0)
    assert np.allclose(per["fc_share"].sum().loc[:, :, ["fc", "shared"]], 1.0)
    shared = routing[routing["moe"] == "shared"]
    # NaN where an expert received no token of the sample
    assert shared["sc_fraction"].dropna().between(0, 1).all()
    summary = metrics["routing"]
    assert {r["label"] for r in summary} == {"control", "patient"}
    assert {"block", "moe", "expert", "sc_share", "fc_share", "sc_fraction"} <= set(summary[0])
    # Only the last stage routes through several experts.
    assert not (m3d_run["pretrain"][0] / "tables" / "routing.tsv").exists()


@pytest.mark.parametrize("method", ["connex", "connex_sc_only"])
def test_connex_beats_chance(data, tmp_path, method):
    metrics = _run(data, tmp_path, method, "train", SMALL_CONNEX)
    assert metrics["auc"] >= 0.8 and metrics["balanced_accuracy"] > 0.6, metrics
    state = torch.load(tmp_path / "model.bin", weights_only=True)
    heads = {k.split(".")[1] for k in state["state_dict"] if k.startswith("heads.")}
    assert heads == ({"sc", "fc", "fused"} if method == "connex" else {"sc", "fused"})
    assert state["input_keys"] == (["sc", "fc", "node_mask"] if method == "connex" else ["sc"])


# --------------------------------------------------------------------------- the plugin example


class _Network(nn.Module):
    def __init__(self, n_nodes: int, d_model: int) -> None:
        super().__init__()
        from brainfuse.methods.torch.encoders import GraphTransformer

        self.encoder = GraphTransformer(n_nodes, d_model=d_model, n_layers=1, readout="mean")
        self.decoder = nn.Linear(d_model, n_nodes)
        self.head = nn.Linear(d_model, 2)


class _Pretrain(StageModule):
    """The self-supervised stage of the stages.py docstring example."""

    input_keys = ("fc", "node_mask")

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(_Network(ctx.n_nodes, ctx.hp["d_model"]), ctx.hp, ctx.class_weights)
        self.mask_ratio = ctx.hp["mask_ratio"]

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        fc, mask = batch["fc"], batch["node_mask"]
        hidden = (torch.rand(mask.shape, device=fc.device) < self.mask_ratio) & mask
        seen = mask & ~hidden
        visible = fc * seen[:, :, None] * seen[:, None, :]
        strength = self.model.decoder(self.model.encoder(visible, seen))
        loss = ((strength - fc.abs().mean(-1)) ** 2)[hidden].mean()
        return {"loss": loss, "strength_mse": loss}

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.encoder(batch["fc"], batch["node_mask"])


class _Finetune(_Pretrain):
    def losses(self, batch):
        return {"loss": self.cross_entropy(self.logits(batch), batch["y"])}

    def logits(self, batch):
        return self.model.head(self.embed(batch))


@pytest.fixture
def toy_catalog(monkeypatch) -> Catalog:
    """The docstring's two-stage self-supervised method, added from outside the package: its
    plugin module (here made on the fly) and its catalog entry."""
    module = types.ModuleType("toy_ssl_plugins")
    module.stage_plugins = lambda spec: {
        "pretrain": StagePlugin(_Pretrain, supervised=False),
        "finetune": StagePlugin(_Finetune, supervised=True),
    }
    monkeypatch.setitem(sys.modules, module.__name__, module)
    catalog = default_catalog()
    catalog.add(MethodSpec(
        name="toy_ssl", family="torch", modalities=("fmri",), stages=("pretrain", "finetune"),
        description="masked-node pre-training, then fine-tuning", features="toy_ssl",
        params={"d_model": 16, "mask_ratio": 0.3, "epochs": 3,
                "per_stage": {"finetune": {"lr": 3e-3, "epochs": 2}}},
        plugin=module.__name__,
    ))  # fmt: skip
    return catalog


def test_self_supervised_stage_is_probed_and_chained(data, tmp_path, toy_catalog):
    toy_method = "toy_ssl"
    with pytest.raises(KeyError, match="toy_ssl"):
        CATALOG["toy_ssl"]  # the default catalog is not changed
    # min_val_subjects 1: the few validation subjects select the epoch (default: the last one)
    pre = _run(data, tmp_path / "pretrain", toy_method, "pretrain",
               {"num_threads": 1, "min_val_subjects": 1}, catalog=toy_catalog)  # fmt: skip
    assert pre["evaluation"] == "linear_probe" and pre["probe_C"] > 0
    assert pre["embedding_dim"] == 16 and pre["monitor"] == "val_loss"
    assert pre["model_selection"] == "validation" and pre["best_val"] is not None
    assert 0 <= pre["auc"] <= 1
    predictions = pd.read_csv(tmp_path / "pretrain" / "predictions.tsv", sep="\t")
    assert predictions["y_score"].between(0, 1).all() and len(predictions) == pre["n_test"]
    logs = pd.read_csv(tmp_path / "pretrain" / "ckpt" / "logs" / "version_0" / "metrics.csv")
    assert {"train_strength_mse_epoch", "val_strength_mse", "val_loss"} <= set(logs.columns)

    fine = _run(data, tmp_path / "finetune", toy_method, "finetune", {"num_threads": 1},
                previous=str(tmp_path / "pretrain" / "model.bin"), catalog=toy_catalog)  # fmt: skip
    assert fine["evaluation"] == "classifier" and fine["epochs"] <= 2
    assert fine["previous_keys"] == {"missing": [], "unexpected": [], "mismatched": []}

    with pytest.raises(ValueError, match="self-supervised stage is selected on val_loss"):
        _run(data, tmp_path / "bad", toy_method, "pretrain", {"monitor": "val_auc"},
             catalog=toy_catalog)  # fmt: skip


# --------------------------------------------------------------------------- resume


EVERY = 3
RESUME_PARAMS = {
    # 12 training subjects in batches of 2: 6 steps per epoch, up to 60 steps.
    **SMALL_M3D, "epochs": 10, "batch_size": 2, "patience": 10, "checkpoint_every_n_steps": EVERY,
    "dropout": 0.3,
}  # fmt: skip

SCRIPT = """
import json, sys
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch.runner import run_torch_stage
call = json.loads(sys.argv[1])
run_torch_stage(StageRequest(**{**call, "outputs": StageOutputs(**call["outputs"])}))
"""


def _call(data: dict[str, str], out: Path, stage: str, previous: str) -> dict:
    return {
        "method": "m3d_bfs", "stage": stage, "fold": 0, "params": RESUME_PARAMS,
        "cache_paths": {"fmri": data["fmri"], "sc": data["sc"]}, "folds_path": data["folds"],
        "previous": previous, "positive": "patient", "seed": 3,
        "outputs": {"model": str(out / "model.bin"), "metrics": str(out / "metrics.json"),
                    "predictions": str(out / "predictions.tsv")},
        "checkpoint_dir": str(out / "ckpt"),
    }  # fmt: skip


def _request(call: dict) -> StageRequest:
    return StageRequest(**{**call, "outputs": StageOutputs(**call["outputs"])})


def _results(out: Path) -> tuple[dict, str]:
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("seconds", "resumed_from_step"):
        metrics.pop(key)
    return metrics, (out / "predictions.tsv").read_text()


@pytest.mark.resume
@pytest.mark.parametrize(
    "stage, sig",
    [("pretrain", signal.SIGKILL), ("finetune", signal.SIGTERM)],
    ids=["pretrain-sigkill", "finetune-sigterm"],
)
def test_killed_fusion_stage_resumes_to_the_same_result(data, m3d_run, tmp_path, stage, sig):
    previous_stage = {"pretrain": "encoders", "finetune": "pretrain"}[stage]
    previous = str(m3d_run[previous_stage][0] / "model.bin")
    reference = tmp_path / "reference"
    run_torch_stage(_request(_call(data, reference, stage, previous)))

    out = tmp_path / "killed"
    out.mkdir()
    script = out / "stage.py"
    script.write_text(SCRIPT)
    last = out / "ckpt" / "last.ckpt"
    with open(out / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, str(script), json.dumps(_call(data, out, stage, previous))],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not last.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, (out / "child.log").read_text()[-2000:]
        child.send_signal(sig)
        returncode = child.wait(timeout=300)
    expected = 128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL
    assert returncode == expected, (out / "child.log").read_text()[-3000:]
    assert not (out / "metrics.json").exists()
    step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])

    run_torch_stage(_request(_call(data, out, stage, previous)))  # the requeued job

    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_from_step"] == step > 0
    metrics, predictions = _results(out)
    expected_metrics, expected_predictions = _results(reference)
    assert metrics == expected_metrics
    assert predictions == expected_predictions
    assert metrics["steps"] > step
    if stage == "finetune":
        routing = (out / "tables" / "routing.tsv").read_text()
        assert routing == (reference / "tables" / "routing.tsv").read_text()
