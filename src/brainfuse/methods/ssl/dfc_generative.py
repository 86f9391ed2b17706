"""Generative pre-training on dynamic FC: masked reconstruction of sliding-window FC sequences.

Input
    The sliding-window FC of the served (N, L) window (:func:`sliding_window_fc`): Pearson r
    upper triangles (E = N(N-1)/2 edges) of windows of ``dfc_window`` points every
    ``dfc_step`` points; a window that reaches into padding is invalid. The definition is that
    of the cache's ``dfc`` column (:func:`brainfuse.core.connectivity.sliding_window_fc`),
    recomputed
    on the fly because the datasets serve windows of the time series, not of ``dfc``, and so
    that training windows are random crops like every other time-series method. Window and
    step default to the cache's (``fmri.dfc_window`` / ``fmri.dfc_step`` of the config), else
    30 and 5.

Network (:class:`DFCEncoder`)
    Each window's edge vector is a token (linear embedding + learned window position); a
    pre-norm transformer encoder runs over the windows; a linear decoder (pre-training only)
    maps every token back to its E edges.

Stages (``[pretrain, finetune]``):

``pretrain`` (self-supervised)
    A share ``window_mask_ratio`` of the valid windows is replaced by a learned mask token, and
    a share ``edge_mask_ratio`` of the edges of the other windows is zeroed. Loss: MSE over the
    masked entries only (every edge of a masked window, the masked edges of a visible window).
``finetune`` (supervised)
    The encoder, mean over valid windows, an MLP head; cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.ssl.common import MLP, HeadFinetune, SSLStage
from brainfuse.methods.ssl.losses import masked_mse
from brainfuse.methods.torch.data import FC_AFFINE
from brainfuse.methods.torch.encoders import sinusoidal_positions
from brainfuse.methods.torch.plugins import StageContext, StagePlugin

__all__ = [
    "DFCEncoder",
    "DFCFinetune",
    "DFCNetwork",
    "DFCPretrain",
    "n_windows",
    "sliding_window_fc",
]


def n_windows(length: int, window: int, step: int) -> int:
    """Windows of ``window`` points every ``step`` points in ``length`` points."""
    return 0 if length < window else (length - window) // step + 1


def sliding_window_fc(
    x: Tensor, time_mask: Tensor, window: int, step: int, node_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Batched sliding-window Pearson FC.

    Parameters
    ----------
    x : Tensor
        (B, N, L) series.
    time_mask : Tensor
        (B, L) valid time points.
    window, step : int
        Window length and step (time points).
    node_mask : Tensor, optional
        (B, N); masked (or flat) nodes get r = 0.

    Returns
    -------
    dfc : Tensor
        (B, W, N(N-1)/2) upper triangles (row-major, as ``numpy.triu_indices(N, 1)``).
    window_valid : Tensor
        (B, W) bool, windows entirely inside the valid time points.
    """
    b, n, length = x.shape
    if length < window:
        raise ValueError(f"window of {length} points is shorter than dfc_window={window}")
    seg = x.unfold(-1, window, step)  # (B, N, W, window)
    seg = seg - seg.mean(-1, keepdim=True)
    norm = seg.norm(dim=-1)  # (B, N, W)
    ok = norm > 1e-8
    if node_mask is not None:
        ok = ok & node_mask.bool().unsqueeze(-1)
    z = seg / torch.where(ok, norm, torch.ones_like(norm)).unsqueeze(-1) * ok.unsqueeze(-1)
    r = torch.einsum("bnwt,bmwt->bwnm", z, z).clamp(-1.0, 1.0)
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    window_valid = time_mask.bool().unfold(-1, window, step).all(-1)
    return r[:, :, iu[0], iu[1]], window_valid


class DFCEncoder(nn.Module):
    """Transformer over sliding-window FC tokens.

    Parameters
    ----------
    n_nodes : int
        N (E = N(N-1)/2 edges per token).
    n_windows : int
        W, windows per sample (learned positions; sinusoidal initialisation).
    d_model, n_heads, n_layers, dim_feedforward : int
        Transformer size.
    dropout : float
        Dropout inside the transformer.
    """

    def __init__(
        self,
        n_nodes: int,
        n_windows: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        n_edges = n_nodes * (n_nodes - 1) // 2
        self.embed = nn.Linear(n_edges, d_model)
        self.position = nn.Parameter(sinusoidal_positions(max(n_windows, 1), d_model) * 0.1)
        self.mask_token = nn.Parameter(torch.zeros(d_model))
        nn.init.normal_(self.mask_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def tokens(self, dfc: Tensor, window_valid: Tensor, hidden: Tensor | None = None) -> Tensor:
        """(B, W, D) encoded windows; ``hidden`` (B, W) windows are replaced by the mask token
        (they stay keys, as in BERT); invalid windows are ignored as keys."""
        h = self.embed(dfc)
        if hidden is not None:
            h = torch.where(hidden.unsqueeze(-1), self.mask_token.to(h.dtype).expand_as(h), h)
        h = h + self.position[: h.shape[1]]
        valid = window_valid.bool()
        padding = ~valid & valid.any(-1, keepdim=True)
        return self.norm(self.transformer(h, src_key_padding_mask=padding))

    def forward(self, dfc: Tensor, window_valid: Tensor) -> Tensor:
        """(B, D) mean over valid windows."""
        h = self.tokens(dfc, window_valid)
        w = window_valid.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


class DFCNetwork(nn.Module):
    """Every tensor of a dfc_generative stage: the encoder, and the decoder (pre-training) or
    the MLP head (fine-tuning)."""

    def __init__(self, n_nodes: int, windows: int, hp: dict[str, Any], pretrain: bool) -> None:
        super().__init__()
        d_model = int(hp["d_model"])
        self.encoder = DFCEncoder(
            n_nodes,
            windows,
            d_model=d_model,
            n_heads=int(hp["n_heads"]),
            n_layers=int(hp["n_layers"]),
            dim_feedforward=int(hp["dim_feedforward"]),
            dropout=float(hp["encoder_dropout"]),
        )
        if pretrain:
            self.decoder = nn.Linear(d_model, n_nodes * (n_nodes - 1) // 2)
        else:
            self.head = MLP(d_model, int(hp["head_hidden"]), 2, dropout=float(hp["dropout"]))


class _DFCStage(SSLStage):
    """Shared set-up: windows from the parameters or the cache, the network."""

    input_keys = ("timeseries", "time_mask", "node_mask")
    pretrain = False

    def __init__(self, ctx: StageContext) -> None:
        hp = ctx.hp
        meta = ctx.dataset.metadata.get("fmri", {})
        window = int(hp["dfc_window"] or meta.get("dfc_window") or 30)
        step = int(hp["dfc_step"] or meta.get("dfc_step") or 5)
        length = int(hp["length"])
        if n_windows(length, window, step) < 1:
            raise ValueError(f"length={length} holds no dfc window of {window} points")
        net = DFCNetwork(ctx.n_nodes, n_windows(length, window, step), hp, self.pretrain)
        super().__init__(ctx, net)
        self.window, self.step = window, step

    def dfc(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The batch's sliding-window FC and valid windows; with in-fold harmonisation, each
        window gets the adjustment fitted on its sample's whole-run FC."""
        dfc, valid = sliding_window_fc(
            batch["timeseries"], batch["time_mask"], self.window, self.step, batch["node_mask"]
        )
        affine = batch.get(FC_AFFINE)
        if affine is not None:
            iu = torch.triu_indices(affine.shape[-1], affine.shape[-1], offset=1)
            edges = affine[:, :, iu[0], iu[1]].to(dfc.dtype)  # (B, 2, E)
            dfc = dfc * edges[:, None, 0] + edges[:, None, 1]
        return dfc, valid

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.encoder(*self.dfc(batch))


class DFCPretrain(_DFCStage):
    """Masked reconstruction of windows and edges."""

    pretrain = True

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        dfc, valid = self.dfc(batch)
        hidden = torch.rand(valid.shape, device=dfc.device) < float(self.hp["window_mask_ratio"])
        hidden = hidden & valid
        dropped = torch.rand(dfc.shape, device=dfc.device) < float(self.hp["edge_mask_ratio"])
        dropped = dropped & (valid & ~hidden).unsqueeze(-1)
        reconstruction = self.model.decoder(
            self.model.encoder.tokens(dfc * ~dropped, valid, hidden)
        )
        window_entries = hidden.unsqueeze(-1).expand_as(dfc)
        window_mse = masked_mse(reconstruction, dfc, window_entries)
        edge_mse = masked_mse(reconstruction, dfc, dropped)
        loss = masked_mse(reconstruction, dfc, window_entries | dropped)
        return {"loss": loss, "window_mse": window_mse.detach(), "edge_mse": edge_mse.detach()}


class DFCFinetune(HeadFinetune, _DFCStage):
    """Encoder + MLP head on the sliding-window FC, cross-entropy."""

    load_prefixes = ("encoder.",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        # Nothing is masked here: a trainable, unused tensor would stall DDP's gradient sync.
        self.model.encoder.mask_token.requires_grad_(False)
        if self.hp["freeze_encoder"]:
            self.model.encoder.requires_grad_(False)


#: The stages of dFC masked reconstruction, by name.
STAGES: dict[str, StagePlugin] = {
    "pretrain": StagePlugin(
        DFCPretrain, supervised=False, description="masked reconstruction of dFC"
    ),
    "finetune": StagePlugin(
        DFCFinetune, supervised=True, description="dFC transformer fine-tuning"
    ),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of a dFC masked reconstruction method (see :attr:`MethodSpec.plugin`)."""
    return dict(STAGES)
