"""BrainMAE: region-aware graph attention and masked autoencoding of ROI x segment patches.

Network (:class:`BrainMAEEncoder`)
    The (N, L) window is cut into ``L // segment`` segments; each ROI x segment patch of
    ``segment`` time points is a token (linear patch embedding + a learnable **ROI embedding**
    + a learned segment position). Each encoder block applies

    1. **region-aware graph attention** within every segment: node states are mixed with an
       adjacency computed from the ROI embeddings, ``A = softmax_j(<W_q e_i, W_k e_j> / sqrt(d))``
       over ``j != i`` (no self-loops; shared by every sample and segment, renormalised over the
       visible tokens), ``x_i <- x_i + W_o sum_j A_ij W_v x_j``;
    2. temporal self-attention over the segments of every ROI;
    3. a feed-forward layer (pre-norm residual blocks throughout).

Stages (``[pretrain, finetune]``):

``pretrain`` (self-supervised)
    A share ``mask_ratio`` of the valid ROI x segment patches is masked. The encoder sees only
    the visible tokens (masked ones are removed from both attentions as keys, MAE-style, and
    their outputs discarded); a light decoder (``decoder_layers`` blocks of width
    ``decoder_dim``, used only here) gets the encoded visible tokens plus a mask token at the
    masked positions and reconstructs the masked patches. Loss: MSE over the valid time points
    of masked patches only (targets are the z-scored series).
``finetune`` (supervised)
    The encoder (no masking), a readout, a linear head; cross-entropy. Readouts (``readout``):
    ``similarity`` - the cosine similarity of the ROIs' token trajectories (upper triangle), which
    keeps which ROIs co-fluctuate; ``mean`` - the mean of the valid tokens, which averages that
    away.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.ssl.common import HeadFinetune, SSLStage
from brainfuse.methods.ssl.losses import masked_mse
from brainfuse.methods.torch.plugins import StageContext, StagePlugin

__all__ = [
    "BrainMAEEncoder",
    "BrainMAEFinetune",
    "BrainMAENetwork",
    "BrainMAEPretrain",
    "RegionAwareAttention",
    "patchify",
]

READOUTS = ("mean", "similarity")


def patchify(x: Tensor, time_mask: Tensor, segment: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut (B, N, L) windows into ROI x segment patches.

    Returns
    -------
    patches : Tensor
        (B, N, S, segment) with ``S = L // segment`` (a remainder is dropped).
    point_valid : Tensor
        (B, 1, S, segment) bool, valid time points of each patch.
    token_valid : Tensor
        (B, S) bool, segments with at least one valid time point.
    """
    b, n, length = x.shape
    s = length // segment
    if s < 1:
        raise ValueError(f"window of {length} points is shorter than one segment ({segment})")
    patches = x[..., : s * segment].reshape(b, n, s, segment)
    point_valid = time_mask[..., : s * segment].bool().reshape(b, 1, s, segment)
    return patches, point_valid, point_valid.any(-1).squeeze(1)


class RegionAwareAttention(nn.Module):
    """Graph attention over ROIs with an adjacency from the ROI embeddings (no self-loops).

    Parameters
    ----------
    d_model : int
        Token size.
    d_embed : int
        ROI-embedding size.
    """

    def __init__(self, d_model: int, d_embed: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_embed, d_embed, bias=False)
        self.key = nn.Linear(d_embed, d_embed, bias=False)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def adjacency(self, roi_embedding: Tensor) -> Tensor:
        """(N, N) row-stochastic adjacency ``softmax_j(q_i . k_j / sqrt(d))``, zero diagonal."""
        q, k = self.query(roi_embedding), self.key(roi_embedding)
        scores = q @ k.T / math.sqrt(q.shape[-1])
        eye = torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        return scores.masked_fill(eye, float("-inf")).softmax(-1)

    def forward(self, x: Tensor, roi_embedding: Tensor, visible: Tensor) -> Tensor:
        """Mix (B, N, S, D) token states over ROIs within each segment.

        ``visible`` (B, N, S) marks the tokens that may be attended to; each row of the
        adjacency is renormalised over them (a token with no visible neighbour receives 0).
        """
        adj = self.adjacency(roi_embedding)  # (N, N)
        w = adj.view(1, *adj.shape, 1) * visible.unsqueeze(1).to(x.dtype)  # (B, N, N, S)
        w = w / w.sum(2, keepdim=True).clamp(min=1e-9)
        mixed = torch.einsum("bijs,bjsd->bisd", w, self.value(x))
        return self.out(mixed)


class _Block(nn.Module):
    """Pre-norm block: region-aware graph attention, temporal attention, feed-forward."""

    def __init__(self, d_model: int, d_embed: int, n_heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm_graph = nn.LayerNorm(d_model)
        self.graph = RegionAwareAttention(d_model, d_embed)
        self.norm_time = nn.LayerNorm(d_model)
        self.time = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, roi_embedding: Tensor, visible: Tensor) -> Tensor:
        b, n, s, d = x.shape
        x = x + self.dropout(self.graph(self.norm_graph(x), roi_embedding, visible))
        seq = self.norm_time(x).reshape(b * n, s, d)
        keys = visible.reshape(b * n, s)
        padding = ~keys & keys.any(-1, keepdim=True)  # a fully hidden ROI attends to all
        attended, _ = self.time(seq, seq, seq, key_padding_mask=padding, need_weights=False)
        x = x + self.dropout(attended.reshape(b, n, s, d))
        return x + self.dropout(self.ff(self.norm_ff(x)))


class BrainMAEEncoder(nn.Module):
    """Region-aware encoder of ROI x segment tokens (see the module docstring).

    Parameters
    ----------
    n_nodes : int
        N.
    length : int
        Window L; ``L // segment`` segments.
    segment : int
        Time points per patch.
    d_model, d_embed, n_heads, n_layers, dim_feedforward : int
        Sizes (``d_embed``: the ROI embeddings the adjacency is computed from).
    dropout : float
        Dropout in the blocks.
    """

    input_keys: tuple[str, ...] = ("timeseries", "time_mask", "node_mask")

    def __init__(
        self,
        n_nodes: int,
        length: int = 200,
        segment: int = 20,
        d_model: int = 64,
        d_embed: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.segment, self.n_segments = int(segment), int(length) // int(segment)
        self.patch = nn.Linear(segment, d_model)
        self.roi_embedding = nn.Parameter(torch.randn(n_nodes, d_embed) * 0.02)
        self.roi_project = nn.Linear(d_embed, d_model)
        self.segment_embedding = nn.Parameter(torch.zeros(self.n_segments, d_model))
        nn.init.normal_(self.segment_embedding, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(d_model, d_embed, n_heads, dim_feedforward, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def positions(self) -> Tensor:
        """(N, S, d_model) ROI + segment embedding of every token."""
        return self.roi_project(self.roi_embedding)[:, None, :] + self.segment_embedding[None]

    def tokens(
        self,
        x: Tensor,
        time_mask: Tensor,
        node_mask: Tensor,
        hidden: Tensor | None = None,
        normalise: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Encoded (B, N, S, D) tokens and their (B, N, S) visibility.

        ``hidden`` (B, N, S) marks tokens removed from the input (masked autoencoding); hidden
        and invalid tokens are never attended to. ``normalise=False`` returns the residual
        stream before the final LayerNorm.
        """
        patches, _, segment_valid = patchify(x, time_mask, self.segment)
        visible = node_mask.bool().unsqueeze(-1) & segment_valid.unsqueeze(1)
        if hidden is not None:
            visible = visible & ~hidden
        h = self.patch(patches) + self.positions()
        h = h * visible.unsqueeze(-1).to(h.dtype)
        for block in self.blocks:
            h = block(h, self.roi_embedding, visible)
        return (self.norm(h) if normalise else h), visible

    def forward(self, x: Tensor, time_mask: Tensor, node_mask: Tensor) -> Tensor:
        """(B, D) mean of the valid tokens."""
        h, visible = self.tokens(x, time_mask, node_mask)
        w = visible.unsqueeze(-1).to(h.dtype)
        return (h * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1.0)

    def roi_similarity(self, x: Tensor, time_mask: Tensor, node_mask: Tensor) -> Tensor:
        """(B, E) upper triangle of the cosine similarity between ROIs' token trajectories:
        each ROI's tokens, centred over its valid segments and concatenated, compared with every
        other ROI's (0 for invalid ROIs); a connectivity matrix of the learnt representation."""
        h, visible = self.tokens(x, time_mask, node_mask, normalise=False)
        w = visible.unsqueeze(-1).to(h.dtype)
        mean = (h * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp(min=1.0)
        z = ((h - mean) * w).flatten(2)
        z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        sim = z @ z.transpose(1, 2)
        rows, cols = torch.triu_indices(sim.shape[1], sim.shape[1], 1, device=sim.device)
        return sim[:, rows, cols]


class BrainMAENetwork(nn.Module):
    """Every tensor of BrainMAE's stages: the encoder, and the decoder (pre-training) or the
    linear head (fine-tuning)."""

    def __init__(self, n_nodes: int, hp: dict[str, Any], pretrain: bool) -> None:
        super().__init__()
        d_model = int(hp["d_model"])
        self.encoder = BrainMAEEncoder(
            n_nodes,
            length=int(hp["length"]),
            segment=int(hp["segment"]),
            d_model=d_model,
            d_embed=int(hp["d_embed"]),
            n_heads=int(hp["n_heads"]),
            n_layers=int(hp["n_layers"]),
            dim_feedforward=int(hp["dim_feedforward"]),
            dropout=float(hp["encoder_dropout"]),
        )
        if pretrain:
            d_dec = int(hp["decoder_dim"])
            self.decoder_in = nn.Linear(d_model, d_dec)
            self.mask_token = nn.Parameter(torch.zeros(d_dec))
            nn.init.normal_(self.mask_token, std=0.02)
            self.decoder_position = nn.Linear(d_model, d_dec)
            self.decoder_blocks = nn.ModuleList(
                _Block(d_dec, int(hp["d_embed"]), int(hp["decoder_heads"]), 2 * d_dec, 0.0)
                for _ in range(int(hp["decoder_layers"]))
            )
            self.decoder_norm = nn.LayerNorm(d_dec)
            self.decoder_out = nn.Linear(d_dec, int(hp["segment"]))
        else:
            if hp["readout"] not in READOUTS:
                raise ValueError(f"readout={hp['readout']!r}: expected one of {READOUTS}")
            similarity = hp["readout"] == "similarity"
            embed_dim = n_nodes * (n_nodes - 1) // 2 if similarity else d_model
            self.head = nn.Sequential(nn.Dropout(float(hp["dropout"])), nn.Linear(embed_dim, 2))


def random_patch_mask(valid: Tensor, ratio: float) -> Tensor:
    """(B, N, S) bool: ``round(ratio * n)`` of each sample's ``n`` valid tokens, at random (at
    least one token stays visible)."""
    b = valid.shape[0]
    flat = valid.reshape(b, -1)
    n_valid = flat.sum(-1)
    n_hide = torch.round(ratio * n_valid.float()).long()
    n_hide = torch.minimum(n_hide, (n_valid - 1).clamp(min=0))
    score = torch.rand(flat.shape, device=valid.device).masked_fill(~flat, 2.0)
    rank = score.argsort(-1).argsort(-1)
    return (rank < n_hide.unsqueeze(-1)).reshape(valid.shape)


class BrainMAEPretrain(SSLStage):
    """BrainMAE's masked-autoencoding stage."""

    input_keys = ("timeseries", "time_mask", "node_mask")

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx, BrainMAENetwork(ctx.n_nodes, ctx.hp, pretrain=True))

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.encoder(batch["timeseries"], batch["time_mask"], batch["node_mask"])

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        net = self.model
        enc: BrainMAEEncoder = net.encoder
        x, tm, nm = batch["timeseries"], batch["time_mask"], batch["node_mask"]
        patches, point_valid, segment_valid = patchify(x, tm, enc.segment)
        valid = nm.bool().unsqueeze(-1) & segment_valid.unsqueeze(1)
        hidden = random_patch_mask(valid, float(self.hp["mask_ratio"]))
        encoded, visible = enc.tokens(x, tm, nm, hidden)
        h = net.decoder_in(encoded)
        h = torch.where(visible.unsqueeze(-1), h, net.mask_token.to(h.dtype).expand_as(h))
        h = h + net.decoder_position(enc.positions().detach())
        for block in net.decoder_blocks:
            # The decoder attends to every valid token (visible ones and mask tokens).
            h = block(h, enc.roi_embedding.detach(), valid)
        reconstruction = net.decoder_out(net.decoder_norm(h))  # (B, N, S, segment)
        target_mask = hidden.unsqueeze(-1) & point_valid.expand_as(patches)
        mse = masked_mse(reconstruction, patches, target_mask)
        return {"loss": mse, "masked_mse": mse.detach()}


class BrainMAEFinetune(HeadFinetune, SSLStage):
    """BrainMAE's fine-tuning stage: encoder + linear head, cross-entropy."""

    input_keys = ("timeseries", "time_mask", "node_mask")
    load_prefixes = ("encoder.",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx, BrainMAENetwork(ctx.n_nodes, ctx.hp, pretrain=False))
        if self.hp["freeze_encoder"]:
            self.model.encoder.requires_grad_(False)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = batch["timeseries"], batch["time_mask"], batch["node_mask"]
        if self.hp["readout"] == "similarity":
            return self.model.encoder.roi_similarity(*inputs)
        return self.model.encoder(*inputs)


#: The stages of BrainMAE, by name.
STAGES: dict[str, StagePlugin] = {
    "pretrain": StagePlugin(
        BrainMAEPretrain, supervised=False, description="BrainMAE masked autoencoding"
    ),
    "finetune": StagePlugin(BrainMAEFinetune, supervised=True, description="BrainMAE fine-tuning"),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of a BrainMAE method (see :attr:`MethodSpec.plugin`)."""
    return dict(STAGES)
