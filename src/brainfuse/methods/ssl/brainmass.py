"""BrainMass: BYOL on pseudo-FC views plus mask-ROI modelling, then linear read-outs and
fine-tuning.

Network
    :class:`BrainMassEncoder`: every node's FC row is a token of size ``d_model = N`` (plus a
    learned ROI embedding); a pre-norm transformer encoder mixes the tokens; a per-node linear
    readout (N -> ``readout_dim``) is flattened into the subject embedding (N x readout_dim).
    BYOL's projector and predictor are MLPs.

Stages (``[pretrain, finetune]``):

``pretrain`` (self-supervised)
    Two pseudo-FC views per subject and step (FC recomputed after dropping ``view_drop`` = 20%
    of the valid time points at random, :func:`~.common.pseudo_fc`). The online network sees
    each view with a share ``mask_ratio`` of its valid ROIs masked (row replaced by a learned
    mask token, column zeroed in every other row, so the masked ROI's correlations cannot be
    read off the other tokens); the EMA target network (``momentum`` 0.996) sees the unmasked
    other view. Loss: ``byol_weight * (2 - 2 cos)`` (symmetric) ``+ nce_weight * InfoNCE``
    (masked ROIs' reconstructed rows against the true rows of every masked ROI of the batch)
    ``+ mse_weight * MSE`` (reconstructed against true rows of masked ROIs, valid off-diagonal
    entries only); defaults 1, 0.1 and 2. The target is updated after every optimiser step.
    The stage is evaluated by the runner's linear probe and, with ``frozen_eval`` (default on),
    by standardised linear SVM / logistic regression on the frozen embeddings plus few-shot
    draws (``few_shot`` k labelled subjects per class, ``few_shot_repeats`` draws), recorded in
    ``metrics.json`` under ``frozen_embeddings``.
``finetune`` (supervised)
    The pre-trained online encoder plus an MLP head, cross-entropy; by default trained on
    pseudo-FC views (the ``augment`` parameter) and scored on the subject's FC.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.ssl.common import MLP, HeadFinetune, SSLStage, pseudo_fc
from brainfuse.methods.ssl.losses import ema_update, info_nce, masked_mse, symmetric_byol_loss
from brainfuse.methods.torch.data import adjust_fc
from brainfuse.methods.torch.encoders import init_residual_branches
from brainfuse.methods.torch.plugins import StageContext, StagePlugin

__all__ = ["BrainMassEncoder", "BrainMassFinetune", "BrainMassNetwork", "BrainMassPretrain"]


class BrainMassEncoder(nn.Module):
    """Transformer over FC rows (tokens of size N) with a flattened per-node readout.

    Parameters
    ----------
    n_nodes : int
        N, also the token size.
    n_heads : int
        Attention heads (must divide N).
    n_layers, dim_feedforward : int
        Transformer size.
    dropout : float
        Dropout inside the transformer.
    readout_dim : int
        Values per node in the flattened embedding (``out_dim = N * readout_dim``).
    residual_init : {"zero", "default"}
        :func:`~brainfuse.methods.torch.encoders.init_residual_branches`. ``zero`` starts the
        encoder as the layer-normed FC rows themselves; with the default initialisation the
        branches' random outputs outweighed the FC rows (entries of about 0.25), and on the demo
        fine-tuning found the planted correlations or not depending on the random draw.
    """

    input_keys: tuple[str, ...] = ("fc", "node_mask")

    def __init__(
        self,
        n_nodes: int,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.1,
        readout_dim: int = 8,
        residual_init: str = "zero",
    ) -> None:
        super().__init__()
        if n_nodes % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model = N = {n_nodes}")
        self.node_embedding = nn.Parameter(torch.zeros(n_nodes, n_nodes))
        nn.init.normal_(self.node_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            n_nodes, n_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        init_residual_branches(self.transformer, residual_init)
        self.norm = nn.LayerNorm(n_nodes)
        self.readout = nn.Linear(n_nodes, readout_dim)
        self.out_dim = n_nodes * readout_dim

    def states(self, fc: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """(B, N, N) node states of (B, N, N) FC tokens; masked nodes are ignored as keys."""
        mask = (
            torch.ones(fc.shape[:2], dtype=torch.bool, device=fc.device)
            if node_mask is None
            else node_mask.bool()
        )
        padding = ~mask & mask.any(-1, keepdim=True)  # a fully masked sample attends to all
        tokens = self.transformer(fc + self.node_embedding, src_key_padding_mask=padding)
        return self.norm(tokens)

    def pool(self, states: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """(B, N * readout_dim) flattened readout of node states (masked nodes give 0)."""
        out = self.readout(states)
        if node_mask is not None:
            out = out * node_mask.unsqueeze(-1).to(out.dtype)
        return out.flatten(1)

    def forward(self, fc: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """Subject embeddings (B, N * readout_dim)."""
        return self.pool(self.states(fc, node_mask), node_mask)


class BrainMassNetwork(nn.Module):
    """Every tensor of BrainMass's stages (each stage builds the parts it uses).

    Parameters
    ----------
    n_nodes : int
        N.
    hp : dict
        Resolved parameters.
    pretrain : bool
        Build BYOL's projector, predictor, EMA target and the mask-ROI modules (else the
        classification head).
    """

    def __init__(self, n_nodes: int, hp: dict[str, Any], pretrain: bool) -> None:
        super().__init__()
        self.encoder = BrainMassEncoder(
            n_nodes,
            n_heads=int(hp["n_heads"]),
            n_layers=int(hp["n_layers"]),
            dim_feedforward=int(hp["dim_feedforward"]),
            dropout=float(hp["encoder_dropout"]),
            readout_dim=int(hp["readout_dim"]),
            residual_init=str(hp["residual_init"]),
        )
        dim = self.encoder.out_dim
        if pretrain:
            hidden, proj = int(hp["proj_hidden"]), int(hp["proj_dim"])
            self.projector = MLP(dim, hidden, proj)
            self.predictor = MLP(proj, hidden, proj)
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
            self.mask_token = nn.Parameter(torch.zeros(n_nodes))
            nn.init.normal_(self.mask_token, std=0.02)
            self.reconstruct = nn.Linear(n_nodes, n_nodes)
        else:
            self.head = MLP(dim, int(hp["head_hidden"]), 2, dropout=float(hp["dropout"]))


def mask_rois(
    fc: Tensor, node_mask: Tensor, ratio: float, mask_token: Tensor
) -> tuple[Tensor, Tensor]:
    """Mask a share of each sample's valid ROIs.

    Parameters
    ----------
    fc : Tensor
        (B, N, N) FC.
    node_mask : Tensor
        (B, N) valid nodes.
    ratio : float
        Share of valid ROIs masked (at least one per sample with two or more valid ROIs).
    mask_token : Tensor
        (N,) learned token that replaces a masked ROI's row.

    Returns
    -------
    masked_fc : Tensor
        (B, N, N): masked rows replaced by ``mask_token``, masked columns zeroed elsewhere.
    masked : Tensor
        (B, N) bool, the masked ROIs.
    """
    valid = node_mask.bool()
    n_valid = valid.sum(-1)
    n_mask = torch.clamp(torch.round(ratio * n_valid.float()), min=1).long()
    n_mask = torch.where(n_valid >= 2, torch.minimum(n_mask, n_valid - 1), torch.zeros_like(n_mask))
    score = torch.rand(valid.shape, device=fc.device).masked_fill(~valid, 2.0)
    rank = score.argsort(-1).argsort(-1)
    masked = rank < n_mask.unsqueeze(-1)
    out = fc * (~masked).unsqueeze(1).to(fc.dtype)
    out = torch.where(masked.unsqueeze(-1), mask_token.to(fc.dtype).expand_as(fc), out)
    return out, masked


class BrainMassPretrain(SSLStage):
    """BrainMass's self-supervised stage (BYOL + mask-ROI modelling)."""

    input_keys = ("fc", "node_mask", "timeseries", "time_mask")

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx, BrainMassNetwork(ctx.n_nodes, ctx.hp, pretrain=True))

    @property
    def network(self) -> BrainMassNetwork:
        """``self.model``, typed."""
        return self.model  # type: ignore[return-value]

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.network.encoder(batch["fc"], batch["node_mask"])

    def _online(self, view: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prediction, MSE and InfoNCE of the online network on a masked view."""
        net = self.network
        masked_view, masked = mask_rois(
            view, node_mask, float(self.hp["mask_ratio"]), net.mask_token
        )
        states = net.encoder.states(masked_view, node_mask)
        prediction = net.predictor(net.projector(net.encoder.pool(states, node_mask)))
        rows = net.reconstruct(states[masked])  # (M, N)
        target = view[masked]
        columns = node_mask.unsqueeze(1).expand_as(view)[masked]  # valid columns of each row
        own = torch.nonzero(masked, as_tuple=True)[1]
        columns = columns.clone()
        columns[torch.arange(len(own), device=view.device), own] = False  # the unit diagonal
        mse = masked_mse(rows, target, columns)
        nce = info_nce(rows * columns, target * columns, float(self.hp["nce_tau"]))
        return prediction, mse, nce

    @torch.no_grad()
    def _target(self, view: Tensor, node_mask: Tensor) -> Tensor:
        net = self.network
        return net.target_projector(net.target_encoder(view, node_mask))

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        hp = self.hp
        ts, tm, nm = batch["timeseries"], batch["time_mask"], batch["node_mask"]
        # views of in-fold harmonised FC get the adjustment of their sample's cached FC
        view1 = adjust_fc(pseudo_fc(ts, tm, nm, float(hp["view_drop"])), batch)
        view2 = adjust_fc(pseudo_fc(ts, tm, nm, float(hp["view_drop"])), batch)
        p1, mse1, nce1 = self._online(view1, nm)
        p2, mse2, nce2 = self._online(view2, nm)
        z1, z2 = self._target(view1, nm), self._target(view2, nm)
        byol = symmetric_byol_loss(p1, p2, z1, z2)
        mse, nce = 0.5 * (mse1 + mse2), 0.5 * (nce1 + nce2)
        loss = (
            float(hp["byol_weight"]) * byol
            + float(hp["nce_weight"]) * nce
            + float(hp["mse_weight"]) * mse
        )
        return {
            "loss": loss,
            "byol": byol.detach(),
            "mrm_mse": mse.detach(),
            "mrm_nce": nce.detach(),
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the target network after each optimiser step."""
        net, m = self.network, float(self.hp["momentum"])
        ema_update(net.target_encoder, net.encoder, m)
        ema_update(net.target_projector, net.projector, m)


class BrainMassFinetune(HeadFinetune, SSLStage):
    """BrainMass's fine-tuning stage: pre-trained encoder + MLP head, cross-entropy on FC."""

    input_keys = ("fc", "node_mask")
    load_prefixes = ("encoder.",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx, BrainMassNetwork(ctx.n_nodes, ctx.hp, pretrain=False))
        if self.hp["freeze_encoder"]:
            self.model.encoder.requires_grad_(False)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.encoder(batch["fc"], batch["node_mask"])


#: The stages of BrainMass, by name.
STAGES: dict[str, StagePlugin] = {
    "pretrain": StagePlugin(
        BrainMassPretrain, supervised=False, description="BrainMass BYOL + mask-ROI"
    ),
    "finetune": StagePlugin(
        BrainMassFinetune, supervised=True, description="BrainMass fine-tuning"
    ),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of a BrainMass method (see :attr:`MethodSpec.plugin`)."""
    return dict(STAGES)
