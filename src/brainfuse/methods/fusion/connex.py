"""ConneX: structural-functional connectome fusion with cross-modal attention and MLP-Mixer.

After Mazumder et al., "Unified Cross-Modal Attention-Mixer Based Structural-Functional
Connectomics Fusion for Neuropsychiatric Disorder Diagnosis" (arXiv:2505.15139). Trained end to
end in one stage (``train``):

1. **Backbones** - one GCN per modality (:class:`~.encoders.NodeGCNEncoder`) turns the SC and
   the FC graph into node embeddings (B, N, d).
2. **Unified cross-modal attention** (:class:`CrossModalAttention`) - every node token attends
   to the tokens of its own modality (intra-modal) and to those of the other modality
   (inter-modal); the two results are added to the token (residual) and normalised. The
   attended SC and FC token sets, concatenated, are the unified representation (2N tokens).
3. **MLP-Mixer** (:class:`MixerLayer`) - token mixing (an MLP across the 2N tokens, per
   channel: global, cross-node and cross-modal structure) and channel mixing (an MLP across
   the d channels, per token: local features) refine the unified representation.
4. **Multi-head joint loss** - one classification head per modality (on its pooled attended
   tokens) and one on the pooled mixer output; the loss is the weighted sum of their
   cross-entropies (``loss_weight_sc``, ``loss_weight_fc``, ``loss_weight_fused``), so each
   modality keeps its own discriminative signal. Predictions come from the fused head.

The SC-only and FC-only ablations (``connex_sc_only``, ``connex_fc_only``) run the same network
on one modality: no inter-modal attention, the mixer over N tokens, a modality head and the
fused head.

Example
-------
>>> model = ConneX(n_nodes=100, modalities=("sc", "fc"))
>>> out = model({"sc": sc, "fc": fc}, {"sc": sc_mask, "fc": fc_mask})
>>> out["fused"].shape, out["sc"].shape  # logits of the fused and the SC head
(torch.Size([B, 2]), torch.Size([B, 2]))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.encoders import NodeGCNEncoder, masked_mean
from brainfuse.methods.torch.module import StageModule
from brainfuse.methods.torch.plugins import StageContext, StagePlugin

__all__ = ["ConneX", "CrossModalAttention", "MixerLayer", "graph_inputs"]

#: Method id -> the graphs it fuses (``sc``, ``fc``).
METHODS: dict[str, tuple[str, ...]] = {
    "connex": ("sc", "fc"),
    "connex_sc_only": ("sc",),
    "connex_fc_only": ("fc",),
}
_CACHE_OF = {"sc": "sc", "fc": "fmri"}


def graph_inputs(
    batch: dict[str, Tensor], graphs: Sequence[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The connectivity matrices (B, N, N) and node masks (B, N) of ``graphs`` in a batch.

    FC parcels outside the brain mask are invalid (``node_mask``); every SC parcel is valid.
    """
    matrices, masks = {}, {}
    for graph in graphs:
        matrices[graph] = batch[graph]
        if graph == "fc":
            masks[graph] = batch["node_mask"].bool()
        else:
            x = batch[graph]
            masks[graph] = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return matrices, masks


def _padding(mask: Tensor) -> Tensor:
    """Key padding mask (True = ignore); an all-masked sample attends to everything (no NaN)."""
    return ~mask & mask.any(-1, keepdim=True)


class CrossModalAttention(nn.Module):
    """Intra- and inter-modal multi-head attention over the node tokens of each modality.

    For modality ``m`` with tokens ``X_m``: ``LN(X_m + Drop(Attn(X_m, X_m)) + Drop(Attn(X_m,
    X_o)))`` where ``o`` is the other modality (no inter term with one modality), followed by a
    position-wise feed-forward block with its own residual and norm.

    Parameters
    ----------
    dim : int
        Token size.
    heads : int
        Attention heads.
    graphs : sequence of str
        The modalities (``sc``, ``fc``), one or two.
    dropout : float
        Dropout on the attention outputs and in the feed-forward block.
    """

    def __init__(self, dim: int, heads: int, graphs: Sequence[str], dropout: float = 0.1) -> None:
        super().__init__()
        self.graphs = tuple(graphs)

        def attention() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)

        self.intra = nn.ModuleDict({g: attention() for g in self.graphs})
        self.inter = nn.ModuleDict(
            {g: attention() for g in self.graphs} if len(self.graphs) > 1 else {}
        )
        self.norm = nn.ModuleDict({g: nn.LayerNorm(dim) for g in self.graphs})
        self.ffn = nn.ModuleDict(
            {g: nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                              nn.Linear(2 * dim, dim))
             for g in self.graphs}
        )  # fmt: skip
        self.ffn_norm = nn.ModuleDict({g: nn.LayerNorm(dim) for g in self.graphs})
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Attend: ``tokens[g]`` (B, N, dim), ``masks[g]`` (B, N) bool -> tokens like the input."""
        out = {}
        for g in self.graphs:
            x, pad = tokens[g], _padding(masks[g])
            update = self.dropout(self.intra[g](x, x, x, key_padding_mask=pad)[0])
            for other in self.graphs:
                if other != g:
                    kv, other_pad = tokens[other], _padding(masks[other])
                    attended = self.inter[g](x, kv, kv, key_padding_mask=other_pad)[0]
                    update = update + self.dropout(attended)
            x = self.norm[g](x + update)
            x = self.ffn_norm[g](x + self.dropout(self.ffn[g](x)))
            out[g] = x * masks[g].unsqueeze(-1)
        return out


class MixerLayer(nn.Module):
    """One MLP-Mixer layer over (B, T, dim) tokens (Tolstikhin et al., 2021).

    Token mixing: ``X + MLP_T(LN(X)^T)^T`` - an MLP across the T tokens for every channel (token
    positions are fixed atlas parcels, so this learns which parcels of which modality interact);
    channel mixing: ``X + MLP_C(LN(X))`` for every token. Invalid tokens are zeroed before token
    mixing and after each step.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int,
        token_hidden: int = 64,
        channel_hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(n_tokens, token_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(token_hidden, n_tokens),
        )  # fmt: skip
        self.channel_norm = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dim, channel_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(channel_hidden, dim),
        )  # fmt: skip

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        valid = mask.unsqueeze(-1).to(x.dtype)
        mixed = self.token_mlp((self.token_norm(x) * valid).transpose(1, 2)).transpose(1, 2)
        x = (x + mixed) * valid
        return (x + self.channel_mlp(self.channel_norm(x))) * valid


class ConneX(nn.Module):
    """The ConneX network (see the module docstring).

    Parameters
    ----------
    n_nodes : int
        N, parcels of each graph.
    graphs : sequence of str
        ``("sc", "fc")`` for the fusion model, ``("sc",)`` or ``("fc",)`` for an ablation.
    hidden, n_layers : int
        Size and depth of each modality's GCN backbone.
    sc_top_k, fc_top_k : int, optional
        Edges kept per node (None: all, weighted).
    sc_standardize, fc_standardize : bool
        Z-score each sample's SC (FC) values before they become node features.
    heads : int
        Attention heads.
    n_attention_layers : int
        Cross-modal attention layers.
    n_mixer_layers : int
        MLP-Mixer layers.
    token_hidden, channel_hidden : int
        Hidden units of the token- and channel-mixing MLPs.
    dropout : float
        Dropout throughout and before the heads.
    node_norm : {"layer", "graph", "batch", "none"}
        Normalisation inside the backbones (:class:`~.encoders.NodeGCNEncoder`).
    """

    def __init__(
        self,
        n_nodes: int,
        graphs: Sequence[str] = ("sc", "fc"),
        hidden: int = 64,
        n_layers: int = 2,
        sc_top_k: int | None = None,
        fc_top_k: int | None = 10,
        sc_standardize: bool = True,
        fc_standardize: bool = False,
        heads: int = 4,
        n_attention_layers: int = 1,
        n_mixer_layers: int = 2,
        token_hidden: int = 64,
        channel_hidden: int = 128,
        dropout: float = 0.1,
        node_norm: str = "batch",
    ) -> None:
        super().__init__()
        self.graphs = tuple(graphs)
        if not self.graphs or set(self.graphs) - {"sc", "fc"}:
            raise ValueError(f"graphs={graphs!r}: expected 'sc' and/or 'fc'")
        top_k = {"sc": sc_top_k, "fc": fc_top_k}
        standardize = {"sc": sc_standardize, "fc": fc_standardize}
        self.backbones = nn.ModuleDict({
            g: NodeGCNEncoder(
                n_nodes, hidden, n_layers, top_k[g], None, dropout, standardize[g], node_norm
            )
            for g in self.graphs
        })  # fmt: skip
        # Which modality a token comes from (the attention is otherwise blind to it).
        self.modality_embedding = nn.ParameterDict(
            {g: nn.Parameter(torch.zeros(hidden)) for g in self.graphs}
        )
        self.attention = nn.ModuleList(
            CrossModalAttention(hidden, heads, self.graphs, dropout)
            for _ in range(n_attention_layers)
        )
        n_tokens = n_nodes * len(self.graphs)
        self.mixer = nn.ModuleList(
            MixerLayer(n_tokens, hidden, token_hidden, channel_hidden, dropout)
            for _ in range(n_mixer_layers)
        )
        self.norm = nn.LayerNorm(hidden)

        def head() -> nn.Module:
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2))

        self.heads = nn.ModuleDict({name: head() for name in (*self.graphs, "fused")})

    def forward(self, matrices: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Logits of every head (``sc``/``fc``/``fused``: (B, 2)) and the fused embedding
        (``embedding``: (B, hidden))."""
        tokens = {
            g: (self.backbones[g](matrices[g], masks[g]) + self.modality_embedding[g])
            * masks[g].unsqueeze(-1)
            for g in self.graphs
        }
        for layer in self.attention:
            tokens = layer(tokens, masks)
        out = {g: self.heads[g](masked_mean(tokens[g], masks[g])) for g in self.graphs}
        unified = torch.cat([tokens[g] for g in self.graphs], 1)
        mask = torch.cat([masks[g] for g in self.graphs], 1)
        for layer in self.mixer:
            unified = layer(unified, mask)
        embedding = masked_mean(self.norm(unified), mask)
        out["fused"] = self.heads["fused"](embedding)
        out["embedding"] = embedding
        return out


class Train(StageModule):
    """Stage ``train``: the whole network, end to end, with the multi-head joint loss."""

    def __init__(self, ctx: StageContext, graphs: tuple[str, ...]) -> None:
        hp = ctx.hp
        super().__init__(ConneX(ctx.n_nodes, graphs, **_model_kwargs(hp)), hp, ctx.class_weights)
        self.graphs = graphs
        self.weights = {
            "sc": float(hp["loss_weight_sc"]),
            "fc": float(hp["loss_weight_fc"]),
            "fused": float(hp["loss_weight_fused"]),
        }
        keys = {"sc": ("sc",), "fc": ("fc", "node_mask")}
        self.input_keys = tuple(k for g in self.graphs for k in keys[g])

    def _forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model(*graph_inputs(batch, self.graphs))

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self._forward(batch)
        terms = {f"ce_{name}": self.cross_entropy(out[name], batch["y"])
                 for name in (*self.graphs, "fused")}  # fmt: skip
        total = sum(self.weights[name.removeprefix("ce_")] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self._forward(batch)["fused"]

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self._forward(batch)["embedding"]


def _model_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    names = ("hidden", "n_layers", "sc_top_k", "fc_top_k", "sc_standardize", "fc_standardize",
             "heads", "n_attention_layers", "n_mixer_layers", "token_hidden", "channel_hidden",
             "dropout", "node_norm")  # fmt: skip
    return {name: hp[name] for name in names}


#: The one stage of ConneX and of its ablations.
STAGES: dict[str, StagePlugin] = {
    "train": StagePlugin(
        Train, supervised=True, description="ConneX, end to end, multi-head joint loss"
    ),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of a ConneX method (see :attr:`MethodSpec.plugin`).

    Raises
    ------
    ValueError
        When the spec's modalities are not the caches of the graphs the network fuses.
    """
    if spec.origin not in METHODS:
        raise ValueError(f"{spec.name}: not a ConneX method; known: {sorted(METHODS)}")
    wanted = tuple(sorted(_CACHE_OF[g] for g in METHODS[spec.origin]))
    if tuple(sorted(spec.modalities)) != wanted:
        raise ValueError(f"{spec.name}: modalities {spec.modalities}, the network reads {wanted}")
    # the graphs come from the catalog method, so a config variant fuses the same ones
    graphs = METHODS[spec.origin]
    return {
        name: dataclasses.replace(plugin, build=functools.partial(plugin.build, graphs=graphs))
        for name, plugin in STAGES.items()
    }
