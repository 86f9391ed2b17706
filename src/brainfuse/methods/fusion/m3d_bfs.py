"""M3D-BFS: multi-stage dynamic fusion of structural and functional connectivity.

After Dong et al., "M3D-BFS: a Multi-stage Dynamic Fusion Strategy for Sample-Adaptive
Multi-Modal Brain Network Analysis" (arXiv:2604.01667). Node states of the SC and the FC graph
(one GCN per modality) are projected into a modality-specific and a shared space; fusion blocks
then route every node token through three mixtures of experts (MoEs) - one over the SC-specific
tokens, one over the FC-specific tokens, and a multi-modal one over the 2N shared tokens of both
modalities - with noisy top-k gating, so that different samples (and nodes) take different
paths. Pooled SC-specific, FC-specific and shared embeddings are joined into an anchor embedding
that the classifier reads.

Training is three stages, each a ``train_stage`` job per fold, chained through ``model.bin``:

``encoders``
    The SC and FC encoders, each with its own classification head, trained with cross-entropy
    (their parameters are disjoint, so this is two separate trainings in one job; the stage
    predicts with the mean of the two heads' probabilities).
``pretrain``
    The whole model with a single expert per MoE (no routing yet), encoders initialised from
    ``encoders``: cross-entropy + ``clip_weight`` x a CLIP-style contrastive loss that aligns the
    pooled shared SC and FC embeddings of the same subject (:func:`clip_loss`).
``finetune``
    Every MoE gets ``n_experts`` copies of its pre-trained expert (so the model starts out
    computing exactly what ``pretrain`` ended with, :meth:`Finetune.load_previous`); encoders
    and projections are frozen and the MoEs, norms, anchor and classifier are fine-tuned with
    cross-entropy + ``alpha`` x the load-balancing loss + (1 - ``alpha``) x the multi-modal
    disentanglement loss (:func:`disentanglement_loss`). Test routing per sample is written to
    ``tables/routing.tsv`` beside ``metrics.json`` and summarised per class in ``metrics.json``.

Example
-------
>>> model = M3DBFS(n_nodes=100, hidden=128, n_layers=4, fusion_dim=64, n_experts=4)
>>> out = model(batch["sc"], batch["fc"], batch["node_mask"])
>>> out.logits.shape, out.anchor.shape, out.moe_loss
(torch.Size([B, 2]), torch.Size([B, 64]), tensor(...))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.encoders import NodeGCNEncoder, masked_mean, masked_mean_max
from brainfuse.methods.torch.module import StageModule
from brainfuse.methods.torch.plugins import StageContext, StagePlugin
from brainfuse.methods.torch.weights import load_previous

__all__ = [
    "M3DBFS",
    "MixtureOfExperts",
    "NoisyTopKGate",
    "UnimodalEncoders",
    "clip_loss",
    "cv_squared",
    "disentanglement_loss",
    "replicate_experts",
]

# --------------------------------------------------------------------------- losses


def cv_squared(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation ``var(x) / mean(x)^2`` of a 1-D tensor (population
    variance); 0 for a single value or a uniform ``x``. As a loss it evens out expert loads."""
    x = x.float()
    if x.numel() < 2:
        return x.new_zeros(())
    return x.var(unbiased=False) / (x.mean() ** 2 + eps)


def clip_loss(a: Tensor, b: Tensor, tau: float = 0.1) -> Tensor:
    """Symmetric CLIP (InfoNCE) loss between matched rows of ``a`` and ``b`` (B, D).

    Row ``i`` of ``a`` should be more similar (cosine / ``tau``) to row ``i`` of ``b`` than to
    any other row of ``b``, and vice versa; with B = 1 there are no negatives and the loss is 0.
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / tau
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def disentanglement_loss(
    sc_specific: Tensor, fc_specific: Tensor, shared: Tensor, anchor: Tensor, tau: float = 0.1
) -> Tensor:
    """Multi-modal disentanglement loss of M3D-BFS (B, D each).

    For each of the three embeddings of a sample, an InfoNCE term with the sample's anchor as
    the positive and the sample's two other embeddings as the negatives:
    ``-log(exp(s(e, a) / tau) / (exp(s(e, a) / tau) + sum_neg exp(s(e, n) / tau)))`` with cosine
    similarity ``s``; the mean over the three embeddings and the batch. It pulls every view
    towards the joint representation while keeping the three views apart.
    """
    views = [F.normalize(v.float(), dim=-1) for v in (sc_specific, fc_specific, shared)]
    anchor = F.normalize(anchor.float(), dim=-1)
    terms = []
    for i, view in enumerate(views):
        positive = (view * anchor).sum(-1, keepdim=True) / tau
        negatives = [(view * other).sum(-1, keepdim=True) / tau
                     for j, other in enumerate(views) if j != i]  # fmt: skip
        logits = torch.cat([positive, *negatives], dim=-1)
        terms.append(-F.log_softmax(logits, dim=-1)[:, 0])
    return torch.stack(terms).mean()


# --------------------------------------------------------------------------- mixture of experts


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (Shazeer et al., 2017) of tokens over ``n_experts`` experts.

    Training: logits ``x W_g + eps * softplus(x W_n)`` with standard normal ``eps`` (from the
    global torch generator, so resumed runs draw the same noise); evaluation: ``x W_g``. The
    ``k`` largest logits of a token are soft-maxed, the others get gate 0. Both weight
    matrices start at zero (uniform routing), as in the reference implementation.

    Parameters
    ----------
    dim : int
        Token size.
    n_experts : int
        Experts.
    k : int
        Experts per token.
    noisy : bool
        Add the noise in training.
    noise_eps : float
        Floor of the noise standard deviation.
    """

    def __init__(
        self, dim: int, n_experts: int, k: int = 1, noisy: bool = True, noise_eps: float = 1e-2
    ) -> None:
        super().__init__()
        if not 1 <= k <= n_experts:
            raise ValueError(f"k={k} must lie in [1, n_experts={n_experts}]")
        self.n_experts, self.k, self.noisy, self.noise_eps = n_experts, k, noisy, noise_eps
        self.w_gate = nn.Parameter(torch.zeros(dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(dim, n_experts))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Gate (T, dim) tokens; ``mask`` (T,) bool leaves tokens out of the statistics.

        Returns
        -------
        gates : Tensor
            (T, n_experts), ``k`` non-zero entries per row summing to 1.
        balance : Tensor
            Load-balancing loss ``cv^2(importance) + cv^2(load)`` over the valid tokens:
            importance is the gate mass per expert, load the (differentiable, in noisy
            training) number of tokens per expert.
        """
        clean = x @ self.w_gate
        noisy = self.noisy and self.training
        if noisy:
            std = F.softplus(x @ self.w_noise) + self.noise_eps
            logits = clean + torch.randn_like(clean) * std
        else:
            logits = clean
        top_logits, top_idx = logits.topk(min(self.k + 1, self.n_experts), dim=-1)
        top_k_gates = top_logits[:, : self.k].softmax(-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx[:, : self.k], top_k_gates)
        weight = torch.ones(len(x), 1, device=x.device) if mask is None else mask[:, None].float()
        importance = (gates * weight).sum(0)
        if noisy and self.k < self.n_experts:
            load = (self._prob_in_top_k(clean, logits, std, top_logits) * weight).sum(0)
        else:
            load = ((gates > 0).float() * weight).sum(0)
        return gates, cv_squared(importance) + cv_squared(load)

    def _prob_in_top_k(self, clean: Tensor, noisy: Tensor, std: Tensor, top: Tensor) -> Tensor:
        """Probability that each expert is among a token's top k under fresh noise: a smooth
        stand-in for the load that gradients can pass through."""
        threshold_in = top[:, self.k : self.k + 1]  # the (k+1)-th value: to beat when inside
        threshold_out = top[:, self.k - 1 : self.k]  # the k-th value: to beat when outside
        is_in = noisy > threshold_in
        normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
        return torch.where(
            is_in,
            normal.cdf((clean - threshold_in) / std),
            normal.cdf((clean - threshold_out) / std),
        )


class Expert(nn.Module):
    """A small MLP block: Linear -> ReLU -> dropout -> Linear (same size in and out)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MixtureOfExperts(nn.Module):
    """Token-level mixture of :class:`Expert` blocks behind a :class:`NoisyTopKGate`.

    Every expert computes every token and the gates weight them (dense dispatch): at N = 100
    and a handful of experts this is faster than gathering tokens per expert, and identical in
    value. With one expert the gate is always 1, so the mixture is just its expert.
    """

    def __init__(
        self,
        dim: int,
        n_experts: int,
        hidden: int,
        k: int = 1,
        dropout: float = 0.1,
        noisy: bool = True,
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Expert(dim, hidden, dropout) for _ in range(n_experts))
        self.gate = NoisyTopKGate(dim, n_experts, min(k, n_experts), noisy)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mix (B, T, dim) tokens; ``mask`` (B, T) bool marks valid tokens.

        Returns the mixed tokens (B, T, dim), the gates (B, T, n_experts) and the
        load-balancing loss.
        """
        b, t, d = x.shape
        flat = x.reshape(b * t, d)
        gates, balance = self.gate(flat, mask.reshape(b * t))
        out = torch.stack([expert(flat) for expert in self.experts], dim=1)  # (BT, E, d)
        mixed = (gates.unsqueeze(-1) * out).sum(1)
        return mixed.reshape(b, t, d), gates.reshape(b, t, -1), balance


class FusionBlock(nn.Module):
    """The SC, FC and multi-modal MoEs of one fusion layer, each with a residual connection,
    dropout and LayerNorm."""

    def __init__(
        self, dim: int, n_experts: int, hidden: int, k: int, dropout: float, noisy: bool
    ) -> None:
        super().__init__()
        self.moe = nn.ModuleDict(
            {
                name: MixtureOfExperts(dim, n_experts, hidden, k, dropout, noisy)
                for name in ("sc", "fc", "shared")
            }  # fmt: skip
        )
        self.norm = nn.ModuleDict({name: nn.LayerNorm(dim) for name in ("sc", "fc", "shared")})
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tokens: dict[str, Tensor], masks: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        out, gates, balance = {}, {}, []
        for name, x in tokens.items():
            mixed, gates[name], loss = self.moe[name](x, masks[name])
            out[name] = self.norm[name](x + self.dropout(mixed)) * masks[name].unsqueeze(-1)
            balance.append(loss)
        return out, gates, torch.stack(balance).mean()


# --------------------------------------------------------------------------- networks


def _sc_mask(sc: Tensor) -> Tensor:
    """Every SC node is valid (an unconnected parcel is a fact, not missing data)."""
    return torch.ones(sc.shape[:2], dtype=torch.bool, device=sc.device)


def _graph_encoders(
    n_nodes: int,
    hidden: int,
    n_layers: int,
    sc_top_k: int | None,
    fc_top_k: int | None,
    dropout: float,
    sc_standardize: bool,
    fc_standardize: bool,
    node_norm: str,
) -> tuple[NodeGCNEncoder, NodeGCNEncoder]:
    """The SC and the FC GCN encoder (stages 1-3 build them alike, so stage 1's load by name)."""
    return tuple(
        NodeGCNEncoder(n_nodes, hidden, n_layers, top_k, None, dropout, standardize, node_norm)
        for top_k, standardize in ((sc_top_k, sc_standardize), (fc_top_k, fc_standardize))
    )


class UnimodalEncoders(nn.Module):
    """Stage 1 network: an SC and an FC GCN encoder, each with a classification head.

    Parameter names match :class:`M3DBFS` (``sc_encoder``, ``fc_encoder``), so the next stage
    loads the encoders by name.
    """

    def __init__(
        self,
        n_nodes: int,
        hidden: int = 128,
        n_layers: int = 4,
        sc_top_k: int | None = None,
        fc_top_k: int | None = 10,
        dropout: float = 0.1,
        sc_standardize: bool = True,
        fc_standardize: bool = False,
        node_norm: str = "batch",
    ) -> None:
        super().__init__()
        self.sc_encoder, self.fc_encoder = _graph_encoders(
            n_nodes, hidden, n_layers, sc_top_k, fc_top_k, dropout, sc_standardize,
            fc_standardize, node_norm,
        )  # fmt: skip
        self.sc_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, 2))
        self.fc_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, 2))

    def forward(self, sc: Tensor, fc: Tensor, node_mask: Tensor) -> dict[str, Tensor]:
        """Pooled (mean and max) embeddings (``sc``, ``fc``: (B, 2 * hidden)) and the logits
        of each head."""
        sc_mask, fc_mask = _sc_mask(sc), node_mask.bool()
        sc_emb = masked_mean_max(self.sc_encoder(sc, sc_mask), sc_mask)
        fc_emb = masked_mean_max(self.fc_encoder(fc, fc_mask), fc_mask)
        return {
            "sc": sc_emb,
            "fc": fc_emb,
            "sc_logits": self.sc_head(sc_emb),
            "fc_logits": self.fc_head(fc_emb),
        }


@dataclass
class M3DOutput:
    """What :class:`M3DBFS` computes for a batch."""

    logits: Tensor  #: (B, 2)
    anchor: Tensor  #: (B, fusion_dim), the joint embedding the classifier reads
    sc_specific: Tensor  #: (B, fusion_dim), pooled after the fusion blocks
    fc_specific: Tensor  #: (B, fusion_dim)
    shared: Tensor  #: (B, fusion_dim), pooled over the 2N shared tokens
    sc_shared: Tensor  #: (B, fusion_dim), pooled shared projection of SC (before fusion)
    fc_shared: Tensor  #: (B, fusion_dim), pooled shared projection of FC (before fusion)
    moe_loss: Tensor  #: load-balancing loss, mean over the MoEs of a block, summed over blocks
    #: per block, MoE name (``sc``, ``fc``, ``shared``) -> gates (B, T, n_experts)
    gates: list[dict[str, Tensor]] = field(default_factory=list)
    #: valid tokens of each MoE: name -> (B, T) bool
    masks: dict[str, Tensor] = field(default_factory=dict)


class M3DBFS(nn.Module):
    """The M3D-BFS network (see the module docstring).

    Parameters
    ----------
    n_nodes : int
        N, parcels of both graphs.
    hidden, n_layers : int
        Size and depth of each modality's dense GCN encoder.
    sc_top_k, fc_top_k : int, optional
        Edges kept per node of the SC and the FC graph (None: all, weighted by |value|).
    fusion_dim : int
        Size of the projected node tokens and of the pooled embeddings.
    n_fusion_layers : int
        Fusion blocks.
    n_experts : int
        Experts per MoE (1 in the ``pretrain`` stage).
    expert_hidden : int
        Hidden units of an expert MLP.
    k : int
        Experts per token (noisy top-k gating).
    noisy_gating : bool
        Gate noise in training.
    dropout : float
        Dropout in the encoders, experts, residual branches and before the classifier.
    sc_standardize, fc_standardize : bool
        Z-score each sample's SC (FC) values before they become node features
        (:class:`~.encoders.NodeGCNEncoder`).
    node_norm : {"layer", "graph", "batch", "none"}
        Normalisation inside the GCN encoders (:class:`~.encoders.NodeGCNEncoder`).
    """

    def __init__(
        self,
        n_nodes: int,
        hidden: int = 128,
        n_layers: int = 4,
        sc_top_k: int | None = None,
        fc_top_k: int | None = 10,
        fusion_dim: int = 64,
        n_fusion_layers: int = 2,
        n_experts: int = 4,
        expert_hidden: int = 64,
        k: int = 1,
        noisy_gating: bool = True,
        dropout: float = 0.1,
        sc_standardize: bool = True,
        fc_standardize: bool = False,
        node_norm: str = "batch",
    ) -> None:
        super().__init__()
        self.n_nodes = n_nodes
        self.sc_encoder, self.fc_encoder = _graph_encoders(
            n_nodes, hidden, n_layers, sc_top_k, fc_top_k, dropout, sc_standardize,
            fc_standardize, node_norm,
        )  # fmt: skip

        def projection() -> nn.Module:
            return nn.Sequential(nn.Linear(hidden, fusion_dim), nn.ReLU(), nn.LayerNorm(fusion_dim))

        self.sc_specific_proj, self.fc_specific_proj = projection(), projection()
        self.sc_shared_proj, self.fc_shared_proj = projection(), projection()
        self.blocks = nn.ModuleList(
            FusionBlock(fusion_dim, n_experts, expert_hidden, k, dropout, noisy_gating)
            for _ in range(n_fusion_layers)
        )
        self.anchor_proj = nn.Sequential(nn.Linear(3 * fusion_dim, fusion_dim), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion_dim, 2))

    @property
    def frozen_in_finetune(self) -> tuple[nn.Module, ...]:
        """Encoders and projections: fixed while the MoEs are fine-tuned."""
        return (
            self.sc_encoder,
            self.fc_encoder,
            self.sc_specific_proj,
            self.fc_specific_proj,
            self.sc_shared_proj,
            self.fc_shared_proj,
        )

    def forward(self, sc: Tensor, fc: Tensor, node_mask: Tensor) -> M3DOutput:
        """Run a batch: ``sc``, ``fc`` (B, N, N), ``node_mask`` (B, N) bool (FC's valid
        parcels)."""
        sc_mask, fc_mask = _sc_mask(sc), node_mask.bool()
        sc_nodes = self.sc_encoder(sc, sc_mask)
        fc_nodes = self.fc_encoder(fc, fc_mask)
        masks = {"sc": sc_mask, "fc": fc_mask, "shared": torch.cat([sc_mask, fc_mask], 1)}
        sc_shared = self.sc_shared_proj(sc_nodes) * sc_mask.unsqueeze(-1)
        fc_shared = self.fc_shared_proj(fc_nodes) * fc_mask.unsqueeze(-1)
        tokens = {
            "sc": self.sc_specific_proj(sc_nodes) * sc_mask.unsqueeze(-1),
            "fc": self.fc_specific_proj(fc_nodes) * fc_mask.unsqueeze(-1),
            "shared": torch.cat([sc_shared, fc_shared], 1),
        }
        all_gates, balance = [], sc.new_zeros(())
        for block in self.blocks:
            tokens, gates, loss = block(tokens, masks)
            all_gates.append(gates)
            balance = balance + loss
        pooled = {name: masked_mean(x, masks[name]) for name, x in tokens.items()}
        anchor = self.anchor_proj(torch.cat([pooled["sc"], pooled["fc"], pooled["shared"]], -1))
        return M3DOutput(
            logits=self.classifier(anchor),
            anchor=anchor,
            sc_specific=pooled["sc"],
            fc_specific=pooled["fc"],
            shared=pooled["shared"],
            sc_shared=masked_mean(sc_shared, sc_mask),
            fc_shared=masked_mean(fc_shared, fc_mask),
            moe_loss=balance,
            gates=all_gates,
            masks=masks,
        )


_EXPERT_KEY = re.compile(r"^(?P<head>.*\.experts\.)0\.(?P<tail>.*)$")


def replicate_experts(state: dict[str, Tensor], n_experts: int) -> dict[str, Tensor]:
    """A state dict in which expert 0 of every MoE is copied to experts ``1 .. n_experts - 1``.

    Gate weights keep the pre-training shape (one expert), so they do not load into a wider
    gate, which keeps its zero initialisation (uniform routing).
    """
    out = dict(state)
    for key, value in state.items():
        match = _EXPERT_KEY.match(key)
        if match:
            for i in range(1, n_experts):
                out[f"{match['head']}{i}.{match['tail']}"] = value.clone()
    return out


# --------------------------------------------------------------------------- stages


def _model_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    return {
        "hidden": int(hp["hidden"]),
        "n_layers": int(hp["n_layers"]),
        "sc_top_k": hp["sc_top_k"],
        "fc_top_k": hp["fc_top_k"],
        "dropout": float(hp["dropout"]),
        "sc_standardize": bool(hp["sc_standardize"]),
        "fc_standardize": bool(hp["fc_standardize"]),
        "node_norm": str(hp["node_norm"]),
    }


def _fusion_kwargs(hp: dict[str, Any], n_experts: int) -> dict[str, Any]:
    return {
        **_model_kwargs(hp),
        "fusion_dim": int(hp["fusion_dim"]),
        "n_fusion_layers": int(hp["n_fusion_layers"]),
        "n_experts": n_experts,
        "expert_hidden": int(hp["expert_hidden"]),
        "k": int(hp["experts_k"]),
        "noisy_gating": bool(hp["noisy_gating"]),
    }


class _Stage(StageModule):
    """What the three stages share: inputs, the SC/FC batch entries and frozen modules."""

    input_keys = ("sc", "fc", "node_mask")
    frozen: tuple[nn.Module, ...] = ()

    def freeze(self, *modules: nn.Module) -> None:
        """Fix ``modules``: no gradients, and evaluation mode (BatchNorm statistics and
        dropout) whenever the stage trains."""
        for module in modules:
            module.requires_grad_(False)
        self.frozen = (*self.frozen, *modules)

    def train(self, mode: bool = True) -> _Stage:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    @staticmethod
    def _inputs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        return batch["sc"], batch["fc"], batch["node_mask"]


class Encoders(_Stage):
    """Stage ``encoders``: the uni-modal encoders, each trained with its own head."""

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(UnimodalEncoders(ctx.n_nodes, **_model_kwargs(ctx.hp)), ctx.hp,
                         ctx.class_weights)  # fmt: skip

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.model(*self._inputs(batch))
        ce_sc = self.cross_entropy(out["sc_logits"], batch["y"])
        ce_fc = self.cross_entropy(out["fc_logits"], batch["y"])
        return {"loss": ce_sc + ce_fc, "ce_sc": ce_sc, "ce_fc": ce_fc}

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        out = self.model(*self._inputs(batch))
        # Log of the mean of the two heads' probabilities: softmax gives that mean back.
        prob = (out["sc_logits"].float().softmax(-1) + out["fc_logits"].float().softmax(-1)) / 2
        return prob.clamp_min(1e-12).log()

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        out = self.model(*self._inputs(batch))
        return torch.cat([out["sc"], out["fc"]], -1)


class Pretrain(_Stage):
    """Stage ``pretrain``: one expert per MoE; cross-entropy + CLIP alignment of the pooled
    shared SC and FC embeddings. The encoders come from stage ``encoders`` (and keep training
    unless ``freeze_encoders_in_pretrain``)."""

    n_experts_of_stage: int | None = 1

    def __init__(self, ctx: StageContext) -> None:
        hp = ctx.hp
        n_experts = self.n_experts_of_stage or int(hp["n_experts"])
        super().__init__(M3DBFS(ctx.n_nodes, **_fusion_kwargs(hp, n_experts)), hp,
                         ctx.class_weights)  # fmt: skip
        self.hp = hp
        if hp["freeze_encoders_in_pretrain"]:
            self.freeze(self.model.sc_encoder, self.model.fc_encoder)

    def load_previous(self, path: str) -> dict[str, list[str]]:
        # Only the encoders: the stage-1 heads have no counterpart here, and everything else is
        # new. Loading into the encoders alone keeps the report to real problems.
        encoders = nn.ModuleDict(
            {"sc_encoder": self.model.sc_encoder, "fc_encoder": self.model.fc_encoder}
        )

        def select(state: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v for k, v in state.items() if k.startswith(("sc_encoder.", "fc_encoder."))}

        return load_previous(encoders, path, select)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.model(*self._inputs(batch))
        ce = self.cross_entropy(out.logits, batch["y"])
        clip = clip_loss(out.sc_shared, out.fc_shared, float(self.hp["clip_tau"]))
        return {"loss": ce + float(self.hp["clip_weight"]) * clip, "ce": ce, "clip": clip}

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(*self._inputs(batch)).logits

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(*self._inputs(batch)).anchor


class Finetune(Pretrain):
    """Stage ``finetune``: ``n_experts`` copies of each pre-trained expert; frozen encoders and
    projections; cross-entropy + ``alpha`` x load balancing + (1 - ``alpha``) x
    disentanglement."""

    n_experts_of_stage = None

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.freeze(*self.model.frozen_in_finetune)

    def load_previous(self, path: str) -> dict[str, list[str]]:
        n_experts = int(self.hp["n_experts"])
        return load_previous(self.model, path, lambda s: replicate_experts(s, n_experts))

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.model(*self._inputs(batch))
        ce = self.cross_entropy(out.logits, batch["y"])
        moe = float(self.hp["moe_coef"]) * out.moe_loss
        disen = disentanglement_loss(
            out.sc_specific, out.fc_specific, out.shared, out.anchor, float(self.hp["disen_tau"])
        )
        alpha = float(self.hp["alpha"])
        return {"loss": ce + alpha * moe + (1 - alpha) * disen, "ce": ce, "moe": moe,
                "disen": disen}  # fmt: skip

    def test_extras(
        self, test_set: BrainDataset, batch_size: int, device: torch.device
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        table = routing_table(self.model, test_set, batch_size, device)
        return {"routing": routing_summary(table)}, {"routing.tsv": table}


# --------------------------------------------------------------------------- routing report


@torch.no_grad()
def routing_table(
    model: M3DBFS, dataset: BrainDataset, batch_size: int, device: torch.device | str
) -> pd.DataFrame:
    """Per sample, fusion block, MoE and expert: the share of the sample's SC and FC node tokens
    routed to the expert (gate mass over valid tokens of that modality).

    Columns: ``sample_id``, ``subject``, ``label``, ``y_true``, ``block``, ``moe`` (``sc``,
    ``fc``, ``shared``), ``expert``, ``sc_share``, ``fc_share`` (NaN where the MoE has no
    tokens of that modality) and ``sc_fraction``, the SC share of the tokens the expert received
    (the sample-adaptivity measure of the multi-modal MoE; 1 or 0 in the uni-modal ones; NaN
    when the expert received no token of the sample).
    """
    model = model.to(device).eval()
    n = model.n_nodes
    # rows of (index, block, moe, expert, sc_mass, fc_mass, sc_n, fc_n)
    parts: list[np.ndarray] = []
    moes = ("sc", "fc", "shared")
    for batch in eval_loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch["sc"], batch["fc"], batch["node_mask"])
        index = batch["index"].cpu().numpy()
        for b, gates in enumerate(out.gates):
            for m, name in enumerate(moes):
                g = gates[name] * out.masks[name].unsqueeze(-1)  # (B, T, E)
                mask = out.masks[name].float()
                if name == "sc":
                    sc_mass, fc_mass = g.sum(1), torch.full_like(g[:, 0], math.nan)
                    sc_n, fc_n = mask.sum(1), torch.full_like(mask[:, 0], math.nan)
                elif name == "fc":
                    sc_mass, fc_mass = torch.full_like(g[:, 0], math.nan), g.sum(1)
                    sc_n, fc_n = torch.full_like(mask[:, 0], math.nan), mask.sum(1)
                else:
                    sc_mass, fc_mass = g[:, :n].sum(1), g[:, n:].sum(1)
                    sc_n, fc_n = mask[:, :n].sum(1), mask[:, n:].sum(1)
                n_experts = g.shape[-1]
                for e in range(n_experts):
                    parts.append(np.column_stack([
                        index, np.full(len(index), b), np.full(len(index), m),
                        np.full(len(index), e), sc_mass[:, e].cpu().numpy(),
                        fc_mass[:, e].cpu().numpy(), sc_n.cpu().numpy(), fc_n.cpu().numpy(),
                    ]))  # fmt: skip
    columns = ["index", "block", "moe", "expert", "sc_mass", "fc_mass", "sc_n", "fc_n"]
    raw = pd.DataFrame(np.concatenate(parts) if parts else np.zeros((0, 8)), columns=columns)
    ids = dataset.table[["sample_id", "subject", "label", "y"]].reset_index(drop=True)
    table = ids.iloc[raw["index"].astype(int)].reset_index(drop=True)
    table = table.rename(columns={"y": "y_true"})
    table["block"] = raw["block"].astype(int).to_numpy()
    table["moe"] = [moes[int(i)] for i in raw["moe"]]
    table["expert"] = raw["expert"].astype(int).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        table["sc_share"] = (raw["sc_mass"] / raw["sc_n"]).to_numpy()
        table["fc_share"] = (raw["fc_mass"] / raw["fc_n"]).to_numpy()
        sc_mass, fc_mass = raw["sc_mass"].fillna(0), raw["fc_mass"].fillna(0)
        table["sc_fraction"] = (sc_mass / (sc_mass + fc_mass)).to_numpy()
    return table.sort_values(["sample_id", "block", "moe", "expert"], kind="stable").reset_index(
        drop=True
    )


def routing_summary(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean routing shares per class, block, MoE and expert (for ``metrics.json``)."""
    if table.empty:
        return []
    grouped = table.groupby(["label", "block", "moe", "expert"], sort=True)
    summary = grouped[["sc_share", "fc_share", "sc_fraction"]].mean().reset_index()
    summary["n_samples"] = grouped.size().to_numpy()
    records = summary.to_dict(orient="records")
    # JSON has no NaN: a share a MoE cannot have is null.
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


#: The stages of M3D-BFS, by name.
STAGES: dict[str, StagePlugin] = {
    "encoders": StagePlugin(
        Encoders, supervised=True, description="uni-modal SC and FC GCNs, cross-entropy"
    ),
    "pretrain": StagePlugin(
        Pretrain, supervised=True, description="single-expert fusion model, CE + CLIP"
    ),
    "finetune": StagePlugin(
        Finetune, supervised=True, description="MoE fine-tuning, CE + balance + disentanglement"
    ),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of an M3D-BFS method (see :attr:`MethodSpec.plugin`)."""
    return dict(STAGES)
