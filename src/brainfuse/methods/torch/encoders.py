"""Brain-network encoders: dense batches in, one embedding per sample out.

Every encoder takes dense tensors (every graph has the atlas's N nodes), declares which batch keys
it reads in ``input_keys`` (in the order of its ``forward`` arguments) and its embedding size in
``out_dim``. :class:`BrainClassifier` puts a classification head on any of them. Encoders keep no
global state and can be reused as building blocks by other methods.

* :class:`GCNEncoder` - PyG ``GCNConv``/``GATConv`` on a sparse ``edge_index`` built from the
  dense FC batch (top-k |r| per node and/or |r| > threshold, symmetrised).
* :class:`DenseGCNEncoder` - the same GCN with PyG ``DenseGCNConv`` on (B, N, N) adjacencies;
  with equal weights it computes exactly what the sparse ``GCNEncoder(conv="gcn")`` computes.
* :class:`NodeGCNEncoder` - node states (B, N, H) of any connectivity graph (FC or SC): an input
  projection then dense GCN layers; the building block of the SC+FC fusion methods.
* :class:`GraphTransformer` - Brain Network Transformer style: FC rows are node tokens, a
  transformer encoder mixes them, a soft cluster readout pools them.
* :class:`TemporalTransformer` - a transformer over the ROI time series; tokens are time points
  (default: the N ROI values at one time point, with sinusoidal positions) or ROIs (one ROI's
  whole window, with a learned ROI embedding).

Example
-------
>>> encoder = GCNEncoder(n_nodes=100, hidden=64, top_k=10)
>>> model = BrainClassifier(encoder, n_classes=2)
>>> logits = model({"fc": fc, "node_mask": mask})  # fc (B, 100, 100), mask (B, 100)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import DenseGCNConv, GATConv, GCNConv

__all__ = [
    "ENCODERS",
    "BrainClassifier",
    "DenseGCNEncoder",
    "GCNEncoder",
    "NodeGCNEncoder",
    "GraphTransformer",
    "TemporalTransformer",
    "build_encoder",
    "dense_to_edge_index",
    "sparsify",
]


def _all_valid(x: Tensor) -> Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def sparsify(
    fc: Tensor,
    node_mask: Tensor | None = None,
    top_k: int | None = 10,
    threshold: float | None = None,
) -> Tensor:
    """Edges kept from a dense FC batch: a (B, N, N) bool adjacency without self-loops.

    Parameters
    ----------
    fc : Tensor
        (B, N, N) connectivity.
    node_mask : Tensor, optional
        (B, N) bool; masked nodes get no edges.
    top_k : int, optional
        Keep each node's ``top_k`` strongest |r| edges; the union over both endpoints is kept,
        so the graph is undirected.
    threshold : float, optional
        Keep edges with |r| > threshold (combined with ``top_k`` by intersection when both are
        given).
    """
    b, n, _ = fc.shape
    strength = fc.abs()
    eye = torch.eye(n, dtype=torch.bool, device=fc.device)
    valid = ~eye.expand(b, n, n)
    if node_mask is not None:
        valid = valid & node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)
    keep = valid.clone()
    if top_k is not None and top_k < n - 1:
        ranked = strength.masked_fill(~valid, -1.0)
        idx = ranked.topk(top_k, dim=-1).indices
        chosen = torch.zeros_like(keep).scatter_(-1, idx, True)
        keep = chosen | chosen.transpose(1, 2)
    if threshold is not None:
        keep = keep & (strength > threshold)
    return keep & valid


def dense_to_edge_index(fc: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Edges of a disjoint union of B graphs of N nodes: node ``i`` of graph ``b`` is
    ``b * N + i``. Returns ``edge_index`` (2, E) and the signed ``r`` of each edge (E,)."""
    b_idx, i_idx, j_idx = keep.nonzero(as_tuple=True)
    n = fc.shape[-1]
    edge_index = torch.stack([b_idx * n + i_idx, b_idx * n + j_idx])
    return edge_index, fc[b_idx, i_idx, j_idx]


def masked_mean_max(x: Tensor, mask: Tensor) -> Tensor:
    """Readout of (B, N, H) node states over valid nodes: [mean, max] -> (B, 2H)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    mean = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
    maxed = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
    maxed = torch.where(torch.isfinite(maxed), maxed, torch.zeros_like(maxed))
    return torch.cat([mean, maxed], dim=-1)


class NodeReadout(nn.Module):
    """Readout of (B, N, H) node states: ``mean_max`` (:func:`masked_mean_max`, 2H values) or
    ``flatten`` (a per-node linear map to ``readout_dim`` values, flattened to N x readout_dim).

    A mean over N nodes dilutes an effect carried by a few nodes N-fold; the flattened readout
    keeps which node carries it (as BrainNetCNN's and BNT's readouts do).
    """

    def __init__(self, kind: str, n_nodes: int, hidden: int, readout_dim: int) -> None:
        super().__init__()
        if kind not in ("mean_max", "flatten"):
            raise ValueError(f"readout={kind!r}: expected 'mean_max' or 'flatten'")
        self.kind = kind
        self.project = nn.Linear(hidden, readout_dim) if kind == "flatten" else None
        self.out_dim = n_nodes * readout_dim if kind == "flatten" else 2 * hidden

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.project is None:
            return masked_mean_max(x, mask)
        return (self.project(x) * mask.unsqueeze(-1).to(x.dtype)).flatten(1)


def _node_norm(kind: str, hidden: int) -> nn.Module:
    """The normalisation after each graph convolution: ``layer`` (LayerNorm over each node's
    channels) or ``none``."""
    if kind not in ("layer", "none"):
        raise ValueError(f"norm={kind!r}: expected 'layer' or 'none'")
    return nn.LayerNorm(hidden) if kind == "layer" else nn.Identity()


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, S, D) tokens over valid positions -> (B, D)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def _padding_mask(mask: Tensor) -> Tensor:
    """Key padding mask for nn.Transformer (True = ignore); a fully masked sample attends to
    everything rather than to nothing, which would give NaN."""
    return ~mask & mask.any(-1, keepdim=True)


class GCNEncoder(nn.Module):
    """Sparse graph convolutions (PyG) on thresholded FC graphs.

    Node features are FC rows; edges are :func:`sparsify`'s edges, weighted by |r| for GCN
    (the symmetric normalisation needs non-negative weights) and carrying the signed r as a
    one-dimensional edge feature for GAT. Each layer is conv -> LayerNorm -> ReLU -> dropout;
    masked nodes are zeroed after every layer and left out of the mean/max readout.

    Parameters
    ----------
    n_nodes : int
        N, the node-feature size (FC rows).
    hidden : int
        Node state size; the embedding is ``2 * hidden`` (mean and max readout).
    n_layers : int
        Graph convolutions.
    conv : {"gcn", "gat"}
        ``GCNConv`` or ``GATConv`` (``hidden // heads`` channels per head, concatenated).
    heads : int
        Attention heads (GAT only).
    top_k, threshold : int or float, optional
        Edge selection, see :func:`sparsify`.
    dropout : float
        Dropout after each layer.
    """

    input_keys: tuple[str, ...] = ("fc", "node_mask")

    def __init__(
        self,
        n_nodes: int,
        hidden: int = 64,
        n_layers: int = 2,
        conv: Literal["gcn", "gat"] = "gcn",
        heads: int = 4,
        top_k: int | None = 10,
        threshold: float | None = None,
        dropout: float = 0.1,
        readout: Literal["mean_max", "flatten"] = "mean_max",
        readout_dim: int = 4,
        norm: Literal["layer", "none"] = "layer",
    ) -> None:
        super().__init__()
        if conv not in ("gcn", "gat"):
            raise ValueError(f"conv={conv!r}: expected 'gcn' or 'gat'")
        if conv == "gat" and hidden % heads:
            raise ValueError(f"hidden={hidden} is not a multiple of heads={heads}")
        self.conv_kind, self.top_k, self.threshold = conv, top_k, threshold
        self.convs = nn.ModuleList()
        for layer in range(n_layers):
            size = n_nodes if layer == 0 else hidden
            if conv == "gcn":
                self.convs.append(GCNConv(size, hidden))
            else:
                self.convs.append(GATConv(size, hidden // heads, heads=heads, edge_dim=1))
        self.norms = nn.ModuleList(_node_norm(norm, hidden) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.readout = NodeReadout(readout, n_nodes, hidden, readout_dim)
        self.out_dim = self.readout.out_dim

    def forward(self, fc: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """Embed a batch: ``fc`` (B, N, N), ``node_mask`` (B, N) bool -> (B, out_dim)."""
        b, n, _ = fc.shape
        mask = _all_valid(fc) if node_mask is None else node_mask.bool()
        keep = sparsify(fc, mask, self.top_k, self.threshold)
        edge_index, r = dense_to_edge_index(fc, keep)
        x = fc.reshape(b * n, n)
        flat_mask = mask.reshape(b * n, 1).to(fc.dtype)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            if self.conv_kind == "gcn":
                x = conv(x, edge_index, r.abs())
            else:
                x = conv(x, edge_index, edge_attr=r.unsqueeze(-1))
            x = self.dropout(torch.relu(norm(x))) * flat_mask
        return self.readout(x.reshape(b, n, -1), mask)


class DenseGCNEncoder(nn.Module):
    """The GCN of :class:`GCNEncoder` on dense (B, N, N) adjacencies (PyG ``DenseGCNConv``).

    Same parameters (``conv`` and ``heads`` excepted) and the same parameter names, so that
    state dicts move between the two; at N = 100 the dense form avoids building ``edge_index``.
    """

    input_keys: tuple[str, ...] = ("fc", "node_mask")

    def __init__(
        self,
        n_nodes: int,
        hidden: int = 64,
        n_layers: int = 2,
        top_k: int | None = 10,
        threshold: float | None = None,
        dropout: float = 0.1,
        readout: Literal["mean_max", "flatten"] = "mean_max",
        readout_dim: int = 4,
        norm: Literal["layer", "none"] = "layer",
    ) -> None:
        super().__init__()
        self.top_k, self.threshold = top_k, threshold
        self.convs = nn.ModuleList(
            DenseGCNConv(n_nodes if layer == 0 else hidden, hidden) for layer in range(n_layers)
        )
        self.norms = nn.ModuleList(_node_norm(norm, hidden) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.readout = NodeReadout(readout, n_nodes, hidden, readout_dim)
        self.out_dim = self.readout.out_dim

    def forward(self, fc: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """Embed a batch: ``fc`` (B, N, N), ``node_mask`` (B, N) bool -> (B, out_dim)."""
        mask = _all_valid(fc) if node_mask is None else node_mask.bool()
        keep = sparsify(fc, mask, self.top_k, self.threshold)
        adj = fc.abs() * keep
        x = fc
        for conv, norm in zip(self.convs, self.norms, strict=True):
            # DenseGCNConv sets the diagonal of masked nodes to 1 too; zeroing their output
            # afterwards keeps them inert, as in the sparse encoder.
            x = conv(x, adj, mask)
            x = self.dropout(torch.relu(norm(x))) * mask.unsqueeze(-1).to(x.dtype)
        return self.readout(x, mask)


def _zscore_offdiagonal(x: Tensor, mask: Tensor) -> Tensor:
    """(B, N, N) matrices z-scored per sample over valid off-diagonal entries (others 0)."""
    n = x.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    valid = (mask.unsqueeze(-1) & mask.unsqueeze(-2) & off).to(x.dtype)
    count = valid.sum((1, 2), keepdim=True).clamp(min=1.0)
    mean = (x * valid).sum((1, 2), keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum((1, 2), keepdim=True) / count
    return (x - mean) / var.sqrt().clamp(min=1e-6) * valid


class NodeGCNEncoder(nn.Module):
    """Node states of a connectivity graph: a linear input projection of each node's
    connectivity row, then dense graph convolutions (PyG ``DenseGCNConv``).

    A building block of the SC+FC fusion methods, which need one state per node rather than a
    pooled embedding. The input projection comes first so that the first convolution mixes
    learned features rather than raw connectivity rows: without it, four convolutions on
    ~30-subject data generalised clearly worse (synthetic caches, test AUC ~0.7 against 1.0).

    Parameters
    ----------
    n_nodes : int
        N, the length of a connectivity row.
    hidden : int
        Node state size.
    n_layers : int
        Graph convolutions, each conv -> norm -> ReLU -> dropout.
    top_k, threshold : int or float, optional
        Edges kept (:func:`sparsify`), weighted by |value|; ``top_k=None`` and
        ``threshold=None`` keep every edge.
    dropout : float
        Dropout after each layer.
    norm : {"layer", "graph", "batch", "none"}
        Normalisation of the node states. ``layer`` (LayerNorm) rescales every node's state to
        unit variance, which erases how strongly a node is connected overall - the very
        difference a disconnected parcel makes; ``graph`` (GraphNorm over each graph's valid
        nodes), ``batch`` (BatchNorm over the batch's valid nodes) and ``none`` keep it.
    standardize : bool
        Z-score each sample's connectivity values (over its valid off-diagonal entries) before
        they become node features; the edge weights stay as given. Non-negative inputs such as
        SC streamline counts share a large common level that otherwise dominates the input
        projection and hides the differences between nodes.
    """

    def __init__(
        self,
        n_nodes: int,
        hidden: int = 128,
        n_layers: int = 4,
        top_k: int | None = 10,
        threshold: float | None = None,
        dropout: float = 0.1,
        standardize: bool = False,
        norm: Literal["layer", "graph", "batch", "none"] = "layer",
    ) -> None:
        super().__init__()
        if norm not in NODE_NORMS:
            raise ValueError(f"norm={norm!r}: expected one of {sorted(NODE_NORMS)}")
        self.top_k, self.threshold, self.standardize = top_k, threshold, standardize
        self.input = nn.Linear(n_nodes, hidden)
        self.convs = nn.ModuleList(DenseGCNConv(hidden, hidden) for _ in range(n_layers))
        self.norms = nn.ModuleList(NODE_NORMS[norm](hidden) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, x: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """Node states of a batch: ``x`` (B, N, N) connectivity (its rows are the node
        features, its |values| the edge weights), ``node_mask`` (B, N) bool ->
        (B, N, hidden); masked nodes are 0."""
        mask = _all_valid(x) if node_mask is None else node_mask.bool()
        keep = sparsify(x, mask, self.top_k, self.threshold)
        adj = x.abs() * keep
        valid = mask.unsqueeze(-1).to(x.dtype)
        features = _zscore_offdiagonal(x, mask) if self.standardize else x
        h = self.input(features) * valid
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = self.dropout(torch.relu(norm(conv(h, adj, mask), mask))) * valid
        return h


class _NodeLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return super().forward(x)


class _NodeBatchNorm(nn.BatchNorm1d):
    """BatchNorm of node states (B, N, D) over the batch's valid nodes (masked ones are left
    out of the statistics)."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


class _NodeGraphNorm(nn.Module):
    """GraphNorm (Cai et al., 2021) of dense node states: each channel standardised over the
    valid nodes of its own graph, with a learnable share of the mean removed and an affine map.
    Nodes keep their strength relative to the rest of their graph, and nothing depends on the
    other samples of the batch."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.mean_scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        valid = mask.unsqueeze(-1).to(x.dtype)
        count = valid.sum(1, keepdim=True).clamp(min=1)
        centred = x - self.mean_scale * (x * valid).sum(1, keepdim=True) / count
        var = (centred.pow(2) * valid).sum(1, keepdim=True) / count
        return self.weight * centred / (var + self.eps).sqrt() + self.bias


class _NoNorm(nn.Identity):
    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return x


#: Node-state normalisations of :class:`NodeGCNEncoder`.
NODE_NORMS: dict[str, type[nn.Module]] = {
    "layer": _NodeLayerNorm,
    "graph": _NodeGraphNorm,
    "batch": _NodeBatchNorm,
    "none": _NoNorm,
}


class ClusterReadout(nn.Module):
    """Soft-cluster readout (BNT's orthonormal clustering readout, simplified).

    ``K`` learnable centres, initialised orthonormal, softly assign the node tokens; the
    assignment-weighted sums (B, K, D) are flattened and projected back to D.
    """

    def __init__(self, d_model: int, n_clusters: int) -> None:
        super().__init__()
        centres = torch.empty(n_clusters, d_model)
        nn.init.orthogonal_(centres)
        self.centres = nn.Parameter(centres)
        self.project = nn.Linear(n_clusters * d_model, d_model)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        scores = tokens @ self.centres.T / math.sqrt(tokens.shape[-1])
        assign = scores.softmax(-1) * mask.unsqueeze(-1).to(tokens.dtype)
        pooled = assign.transpose(1, 2) @ tokens
        return self.project(pooled.flatten(1))


def _transformer(
    d_model: int, n_heads: int, n_layers: int, dim_feedforward: int, dropout: float
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model,
        n_heads,
        dim_feedforward,
        dropout,
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


RESIDUAL_INITS = ("default", "zero")


def init_residual_branches(transformer: nn.TransformerEncoder, how: str) -> None:
    """Initialise the residual branches of a transformer encoder.

    ``zero`` sets the weights of the last linear map of every branch (attention output
    projection, second feed-forward layer) to zero, so that the encoder starts as the identity
    on its input tokens (plus the branches' constant biases) and the branches grow from there
    during training (SkipInit, De and Smith 2020; ReZero,
    Bachlechner et al. 2021). With PyTorch's default initialisation, a pre-norm branch adds
    random values of order 1 computed from the layer-normed tokens, whatever the scale of the
    input: FC rows (entries of about 0.25) or a linear embedding of them are then a small part
    of the residual stream, and a few dozen subjects do not undo that (issue 19:
    ``docs/methods_deep.md``). ``default`` keeps PyTorch's initialisation.
    """
    if how not in RESIDUAL_INITS:
        raise ValueError(f"residual_init={how!r}: expected one of {RESIDUAL_INITS}")
    if how == "default":
        return
    for layer in transformer.layers:
        nn.init.zeros_(layer.self_attn.out_proj.weight)
        nn.init.zeros_(layer.linear2.weight)


class GraphTransformer(nn.Module):
    """Brain Network Transformer style encoder on FC.

    Each node's FC row is a token (projected to ``d_model``, plus a learned node embedding so
    that attention knows which ROI a token is); a pre-norm transformer encoder mixes the tokens,
    masked nodes are ignored as keys, and a readout pools them.

    Parameters
    ----------
    n_nodes : int
        N.
    d_model, n_heads, n_layers, dim_feedforward : int
        Transformer size.
    dropout : float
        Dropout inside the transformer.
    readout : {"cluster", "mean"}
        :class:`ClusterReadout` or the mean over valid nodes.
    n_clusters : int
        Clusters of the cluster readout.
    residual_init : {"default", "zero"}
        :func:`init_residual_branches`.
    """

    input_keys: tuple[str, ...] = ("fc", "node_mask")

    def __init__(
        self,
        n_nodes: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        readout: Literal["cluster", "mean"] = "cluster",
        n_clusters: int = 8,
        residual_init: str = "default",
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_nodes, d_model)
        self.node_embedding = nn.Parameter(torch.zeros(n_nodes, d_model))
        nn.init.normal_(self.node_embedding, std=0.02)
        self.transformer = _transformer(d_model, n_heads, n_layers, dim_feedforward, dropout)
        init_residual_branches(self.transformer, residual_init)
        self.norm = nn.LayerNorm(d_model)
        if readout not in ("cluster", "mean"):
            raise ValueError(f"readout={readout!r}: expected 'cluster' or 'mean'")
        self.readout = ClusterReadout(d_model, n_clusters) if readout == "cluster" else None
        self.out_dim = d_model

    def forward(self, fc: Tensor, node_mask: Tensor | None = None) -> Tensor:
        """Embed a batch: ``fc`` (B, N, N), ``node_mask`` (B, N) bool -> (B, d_model)."""
        mask = _all_valid(fc) if node_mask is None else node_mask.bool()
        tokens = self.embed(fc) + self.node_embedding
        tokens = self.norm(self.transformer(tokens, src_key_padding_mask=_padding_mask(mask)))
        if self.readout is None:
            return masked_mean(tokens, mask)
        return self.readout(tokens, mask)


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """The (length, d_model) sinusoidal position encoding of Vaswani et al. (2017)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model))
    out = torch.zeros(length, d_model)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq[: d_model // 2])
    return out


class TemporalTransformer(nn.Module):
    """Transformer over ROI x time sequences.

    ``tokens="time"`` (default): token ``t`` is the vector of N ROI values at time ``t``
    (projected to ``d_model``, plus a sinusoidal position); padded time points are ignored as
    keys and in the mean readout. This models the dynamics (which ROI patterns co-occur and in
    which order) and costs O(L^2) attention per layer.

    ``tokens="roi"``: token ``i`` is ROI ``i``'s whole window of ``in_len`` values (plus a learned
    ROI embedding); masked ROIs are ignored. It suits spectra (``fft``) or short windows and
    costs O(N^2).

    Parameters
    ----------
    n_nodes : int
        N.
    tokens : {"time", "roi"}
        What a token is (see above).
    in_len : int, optional
        Values per ROI token (required for ``tokens="roi"``: L, or L // 2 + 1 for ``fft``).
    d_model, n_heads, n_layers, dim_feedforward : int
        Transformer size.
    dropout : float
        Dropout inside the transformer.
    max_len : int
        Longest window the position table covers (time tokens).
    input_key : str
        Batch key of the (B, N, L) input: ``timeseries`` or ``fft``.
    residual_init : {"default", "zero"}
        :func:`init_residual_branches`.
    """

    def __init__(
        self,
        n_nodes: int,
        tokens: Literal["time", "roi"] = "time",
        in_len: int | None = None,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        max_len: int = 2048,
        input_key: str = "timeseries",
        residual_init: str = "default",
    ) -> None:
        super().__init__()
        if tokens not in ("time", "roi"):
            raise ValueError(f"tokens={tokens!r}: expected 'time' or 'roi'")
        if tokens == "time" and input_key != "timeseries":
            raise ValueError("time tokens need input_key='timeseries'")
        self.tokens = tokens
        if tokens == "time":
            self.embed = nn.Linear(n_nodes, d_model)
            self.register_buffer(
                "positions", sinusoidal_positions(max_len, d_model), persistent=False
            )
            self.input_keys: tuple[str, ...] = (input_key, "time_mask")
        else:
            if in_len is None:
                raise ValueError("tokens='roi' needs in_len (values per ROI token)")
            self.embed = nn.Linear(in_len, d_model)
            self.roi_embedding = nn.Parameter(torch.zeros(n_nodes, d_model))
            nn.init.normal_(self.roi_embedding, std=0.02)
            self.input_keys = (input_key, "node_mask")
        self.transformer = _transformer(d_model, n_heads, n_layers, dim_feedforward, dropout)
        init_residual_branches(self.transformer, residual_init)
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embed a batch: ``x`` (B, N, L) and the time mask (B, L) for time tokens or the node
        mask (B, N) for ROI tokens -> (B, d_model)."""
        if self.tokens == "time":
            seq = x.transpose(1, 2)
            if seq.shape[1] > self.positions.shape[0]:
                raise ValueError(f"window of {seq.shape[1]} > max_len={self.positions.shape[0]}")
            tokens = self.embed(seq) + self.positions[: seq.shape[1]]
        else:
            tokens = self.embed(x) + self.roi_embedding
        if mask is None:
            mask = _all_valid(tokens)
        mask = mask.bool()
        tokens = self.norm(self.transformer(tokens, src_key_padding_mask=_padding_mask(mask)))
        return masked_mean(tokens, mask)


class BrainClassifier(nn.Module):
    """An encoder with an MLP classification head.

    Parameters
    ----------
    encoder : nn.Module
        Has ``input_keys`` and ``out_dim``.
    n_classes : int
        Logits per sample.
    hidden : int
        Hidden units of the head (0: a single linear layer).
    dropout : float
        Dropout before the head's last layer.
    """

    def __init__(
        self, encoder: nn.Module, n_classes: int = 2, hidden: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        dim = int(encoder.out_dim)
        if hidden:
            self.head = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.encoder.input_keys)

    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The encoder's (B, D) embedding of a batch dict."""
        return self.encoder(*(batch[k] for k in self.input_keys))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, n_classes) logits of a batch dict."""
        return self.head(self.embed(batch))


#: Encoder names (a torch method's ``features``) -> (class, fixed keyword arguments).
ENCODERS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "gcn": (GCNEncoder, {"conv": "gcn"}),
    "gat": (GCNEncoder, {"conv": "gat"}),
    "gcn_dense": (DenseGCNEncoder, {}),
    "graph_transformer": (GraphTransformer, {}),
    "temporal_transformer": (TemporalTransformer, {}),
}


def encoder_arguments(name: str) -> set[str]:
    """Keyword arguments that :func:`build_encoder` passes on for encoder ``name``."""
    import inspect

    cls, fixed = ENCODERS[name]
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "n_nodes")} - set(fixed)


def build_encoder(name: str, n_nodes: int, **kwargs: Any) -> nn.Module:
    """Instantiate encoder ``name``; ``kwargs`` outside its signature are ignored, so that a
    method's whole parameter dict can be passed."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    cls, fixed = ENCODERS[name]
    accepted = encoder_arguments(name)
    return cls(n_nodes, **fixed, **{k: v for k, v in kwargs.items() if k in accepted})
