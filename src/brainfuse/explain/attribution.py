"""Biomarkers: which parcels, edges, bands and modalities a trained model relies on.

Every method's final stage of every outer fold is explained, then the folds are combined.

Linear baselines (scikit-learn)
    The classifier's weights ``w`` are turned into activation patterns with the Haufe
    transformation, ``a = cov(X) w / var(X w)`` (Haufe et al. 2014, NeuroImage 87:96-110),
    computed on the data the model was fitted on (the fold's training and validation subjects:
    the baselines refit on both after choosing ``C``). ``X`` is what the classifier reads: the
    tangent-space vectors for ``*_tangent``, the standardised features for the EEG baselines.
    Raw weights of correlated features reflect noise cancellation as much as signal; patterns
    show where the class difference is. Patterns are expressed per SD of each feature
    (:func:`standardized_pattern`), so that edges of different variance compare.

Torch models
    Integrated gradients (captum; zero baseline) of the log-odds of the positive class with
    respect to every float input the model reads (``fc``, ``sc``, ``timeseries``, ...), on the
    fold's test samples, with the model rebuilt exactly as the stage runner builds it. The
    attribution of an edge is the sum over its two symmetric entries; a node input (a time
    series, a band power) gives its parcel the sum of |attribution| over time points.

Aggregation
    Per fold, magnitudes (|pattern|, or the mean over test samples of |attribution|) are
    normalised to shares summing to 1 within each input block; a parcel's importance in a
    connectivity block is the sum of its edges' shares. Shares are then averaged over folds.
    Stability over folds: the mean pairwise Spearman correlation of the parcel importances and
    the mean pairwise overlap of the top-10 parcels (chance 10 / N).

Blocks are named by the input they explain: ``fc`` (FC or tangent-space FC), ``sc``,
``timeseries``, ``fft``, ``band_power``, ``aec``, ``envelopes``; each belongs to a modality
(:data:`BLOCK_MODALITY`). Outputs, per method (:func:`explain_method`): ``importance.tsv``
(block, parcel, network, share per fold, mean, SD, rank), ``edges.tsv`` (the same per edge and
band, with the sign of the mean pattern/attribution: ``+`` pushes towards the positive class)
and ``summary.json`` (kind, stability, network, band and modality shares, recovery of a known
ground truth, MoE routing shares).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brainfuse.core import atomic
from brainfuse.core.atlas import network_of

log = logging.getLogger("brainfuse")

#: Top-k used for stability and ground-truth recovery.
TOP_K = 10

#: Modality of each input block.
BLOCK_MODALITY = {
    "fc": "fmri",
    "timeseries": "fmri",
    "fft": "fmri",
    "sc": "sc",
    "band_power": "eeg",
    "envelopes": "eeg",
    "aec": "eeg",
}
#: Blocks holding connectivity matrices (the others hold node signals).
EDGE_BLOCKS = {"fc", "sc", "aec"}
#: Blocks whose parcels carry the planted effect of each modality of the demo's ground truth:
#: the EEG effect is band amplitude, so envelope correlations (``aec``) are not scored on it.
GROUND_TRUTH_BLOCKS = {
    "fmri": ("fc", "timeseries", "fft"),
    "sc": ("sc",),
    "eeg": ("band_power", "envelopes"),
}
#: Preferred order of blocks (the first present is a method's headline block).
BLOCK_ORDER = ("fc", "timeseries", "fft", "sc", "band_power", "envelopes", "aec")


# --------------------------------------------------------------------------- data structures


@dataclass
class FoldBlock:
    """Attribution of one input block in one fold.

    ``magnitude`` and ``signed`` have shape (bands, N, N) for connectivity blocks (symmetric,
    zero diagonal) and (bands, N) for node blocks; ``bands`` is 1 without a band axis.
    """

    magnitude: np.ndarray
    signed: np.ndarray


@dataclass
class BlockInfo:
    """Names of what a block's axes index."""

    nodes: list[str]
    networks: list[str]
    bands: list[str] = field(default_factory=lambda: [""])

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)


@dataclass
class MethodAttribution:
    """Everything :func:`explain_method` computes before it writes files."""

    method: str
    kind: str  # haufe | integrated_gradients | none
    folds: list[int]
    blocks: dict[str, dict[int, FoldBlock]]
    info: dict[str, BlockInfo]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- linear models


def haufe_pattern(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Activation pattern of a linear model: ``cov(X) w / var(X w)``.

    Parameters
    ----------
    x : ndarray
        (n_samples, n_features) inputs of the linear decision function (after any fitted
        transformation), the data the model was trained on.
    w : ndarray
        (n_features,) weights.

    Returns
    -------
    ndarray
        (n_features,) pattern; never forms the feature covariance (``X_c^T (X_c w) / (n-1)``).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64).ravel()
    xc = x - x.mean(axis=0)
    s = xc @ w
    n = max(len(x) - 1, 1)
    pattern = xc.T @ s / n
    var_s = float(s @ s / n)
    return pattern / var_s if var_s > 0 else pattern


def standardized_pattern(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The Haufe pattern in units of each feature's SD: ``haufe_pattern(x, w) / sd(x)``.

    This is the pattern of the same decision function written on z-scored features (weights
    ``w * sd``), so features of different variance (strong and weak SC edges, or variable and
    stable FC edges) are compared on one scale; each entry is proportional to the correlation
    of the feature with the decision value. Constant features get 0.
    """
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])
    pattern = haufe_pattern(x, w)
    return np.where(sd > 0, pattern / np.where(sd > 0, sd, 1.0), 0.0)


def vector_to_matrix(vector: np.ndarray, n: int, order: str = "triu") -> np.ndarray:
    """Symmetric (N, N) matrix (zero diagonal) from an off-diagonal vector.

    ``order="triu"`` is :func:`brainfuse.methods.baselines.estimators.upper_triangle`'s order;
    ``"tril"`` is
    nilearn's ``sym_matrix_to_vec(discard_diagonal=True)`` order (tangent-space vectors).
    """
    i, j = np.triu_indices(n, 1) if order == "triu" else np.tril_indices(n, -1)
    out = np.zeros((n, n))
    out[i, j] = vector
    out[j, i] = vector
    return out


def _pipeline_parts(model) -> tuple[Any, Any | None]:
    """(classifier, fitted transformer before it or None) of a baseline's model."""
    steps = getattr(model, "steps", None)
    if steps is None:
        return model, None
    if len(steps) == 1:
        return steps[-1][1], None
    return steps[-1][1], model[:-1]


def linear_blocks(
    model, x_fit: np.ndarray, features: str, n_nodes: int, n_bands: int = 1
) -> dict[str, FoldBlock] | None:
    """Haufe patterns of a fitted baseline mapped to its input blocks (None: no weights).

    Parameters
    ----------
    model : estimator or Pipeline
        The fold's ``model.bin``.
    x_fit : ndarray
        The raw features the model was fitted on (``FEATURES[features]`` rows).
    features : str
        ``fc``, ``sc``, ``tangent``, ``eeg`` (see :data:`brainfuse.methods.catalog.FEATURES`).
    n_nodes, n_bands : int
        N and, for ``eeg``, the number of bands.
    """
    classifier, transform = _pipeline_parts(model)
    coef = getattr(classifier, "coef_", None)
    if coef is None:
        return None
    w = np.asarray(coef, dtype=np.float64).ravel()
    z = transform.transform(list(x_fit) if features == "tangent" else x_fit) if transform else x_fit
    pattern = standardized_pattern(np.asarray(z, dtype=np.float64), w)

    def edge_block(vec: np.ndarray, order: str = "triu") -> FoldBlock:
        signed = vector_to_matrix(vec, n_nodes, order)[None]
        return FoldBlock(np.abs(signed), signed)

    if features in ("fc", "sc"):
        return {features: edge_block(pattern)}
    if features == "tangent":
        return {"fc": edge_block(pattern, "tril")}
    if features == "eeg":
        n_power = n_bands * n_nodes
        power = pattern[:n_power].reshape(n_bands, n_nodes)
        n_edges = n_nodes * (n_nodes - 1) // 2
        aec = np.stack(
            [
                vector_to_matrix(
                    pattern[n_power + b * n_edges : n_power + (b + 1) * n_edges], n_nodes
                )
                for b in range(n_bands)
            ]
        )
        return {
            "band_power": FoldBlock(np.abs(power), power),
            "aec": FoldBlock(np.abs(aec), aec),
        }
    raise ValueError(f"no attribution for baseline features {features!r}")


# --------------------------------------------------------------------------- torch models


def integrated_gradients(
    forward,
    inputs: Mapping[str, Any],
    extras: Mapping[str, Any],
    n_steps: int = 32,
    internal_batch_size: int | None = 64,
    baselines: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Integrated gradients of ``forward(batch) -> (B,) score`` w.r.t. every tensor of
    ``inputs``, the tensors of ``extras`` passed along unchanged.

    ``baselines`` maps an input to its reference point (same shape, or a leading axis of 1);
    zero where not given. Returns the attributions (numpy, shaped like the inputs) and the
    largest completeness error relative to the largest score change (IG attributions sum to
    ``f(x) - f(baseline)``; discrete steps in the model make that approximate).
    """
    import torch
    from captum.attr import IntegratedGradients

    keys, extra_keys = list(inputs), list(extras)

    def wrapped(*tensors):
        batch = dict(zip(keys, tensors[: len(keys)], strict=True))
        batch.update(zip(extra_keys, tensors[len(keys) :], strict=True))
        return forward(batch)

    xs = tuple(inputs[k].float() for k in keys)
    bases = tuple(
        torch.zeros_like(x)
        if baselines is None or k not in baselines
        else torch.as_tensor(baselines[k], dtype=x.dtype).expand_as(x).contiguous()
        for k, x in zip(keys, xs, strict=True)
    )
    ig = IntegratedGradients(wrapped)
    attributions, delta = ig.attribute(
        xs,
        baselines=bases,
        additional_forward_args=tuple(extras[k] for k in extra_keys),
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    if not isinstance(attributions, tuple):
        attributions = (attributions,)
    with torch.no_grad():
        scores = forward({**dict(zip(keys, xs, strict=True)), **extras})
        base = forward({**dict(zip(keys, bases, strict=True)), **extras})
    scale = float((scores - base).abs().max().clamp(min=1e-6))
    rel = float(delta.abs().max()) / scale
    return {k: a.detach().cpu().numpy() for k, a in zip(keys, attributions, strict=True)}, rel


def mean_inputs(dataset, keys: Sequence[str], batch_size: int = 16) -> dict[str, Any]:
    """Mean of each input over the samples of ``dataset`` (shape (1, ...)): the reference
    subject that integrated gradients start from (``baseline="train_mean"``)."""
    import torch

    from brainfuse.methods.torch.data import eval_loader

    sums: dict[str, Any] = {}
    n = 0
    with torch.no_grad():
        for batch in eval_loader(dataset, batch_size):
            n += len(batch["y"])
            for k in keys:
                total = batch[k].float().sum(0, keepdim=True)
                sums[k] = total if k not in sums else sums[k] + total
    return {k: v / max(n, 1) for k, v in sums.items()}


def attribution_to_block(key: str, attr: np.ndarray) -> FoldBlock:
    """Per-sample attributions of one input (B, ...) -> a :class:`FoldBlock` (mean over samples
    of the per-sample magnitude and of the signed value)."""
    if key in ("fc", "sc"):  # (B, N, N): an edge is both symmetric entries
        edge = attr + np.swapaxes(attr, -1, -2)
        idx = np.arange(edge.shape[-1])
        edge[..., idx, idx] = 0.0
        per_sample, signed = np.abs(edge)[:, None], edge[:, None]
    elif key == "aec":  # (B, bands, N, N)
        edge = attr + np.swapaxes(attr, -1, -2)
        idx = np.arange(edge.shape[-1])
        edge[..., idx, idx] = 0.0
        per_sample, signed = np.abs(edge), edge
    elif key in ("timeseries", "fft"):  # (B, N, L)
        per_sample, signed = np.abs(attr).sum(-1)[:, None], attr.sum(-1)[:, None]
    elif key == "envelopes":  # (B, bands, N, L)
        per_sample, signed = np.abs(attr).sum(-1), attr.sum(-1)
    elif key == "band_power":  # (B, bands, N)
        per_sample, signed = np.abs(attr), attr
    else:
        raise ValueError(f"no attribution mapping for input {key!r}")
    return FoldBlock(per_sample.mean(0), signed.mean(0))


def _rebuild_stage_module(
    saved: dict, dataset, fold: int, seed: int, train_set=None, previous: str | None = None
):
    """The trained stage module of a ``model.bin``, built the way the stage runner builds it
    (``train_set``: the fold's training samples and ``previous``: the previous stage's
    ``model.bin``, both of which a plugin may read while building)."""
    from brainfuse.methods.torch.plugins import StageContext, plugin_for

    plugin = plugin_for(saved["method"], saved["stage"])
    hp = dict(saved["params"])
    ctx = StageContext(
        method=saved["method"],
        stage=saved["stage"],
        fold=fold,
        seed=seed,
        hp=hp,
        dataset=dataset,
        train_set=dataset if train_set is None else train_set,
        class_weights=None,
        previous=previous if previous and Path(previous).exists() else None,
    )
    lit = plugin.build(ctx)
    lit.model.load_state_dict(saved["state_dict"])
    return lit.eval()


#: Batch keys that are attributed (the others, masks and indices, are passed along).
ATTRIBUTED_KEYS = ("fc", "sc", "timeseries", "fft", "band_power", "aec", "envelopes")


def torch_fold_blocks(
    model_path: str | Path,
    caches: Mapping[str, Any],
    test_subjects: set[str],
    positive: str,
    seed: int,
    n_steps: int = 32,
    batch_size: int = 8,
    train_subjects: set[str] | None = None,
    baseline: str = "zero",
) -> tuple[dict[str, FoldBlock] | None, dict[str, Any]]:
    """Integrated-gradients blocks of one fold's torch ``model.bin`` on its test samples.

    ``baseline``: ``zero`` (default) or ``train_mean`` (the mean input of the fold's training
    subjects; needs ``train_subjects``). Zero keeps the path inside what graph models see:
    scaling an FC matrix keeps its top-k edges, so the integral is smooth (on the demo the
    completeness error stays below 0.2), whereas the path from the mean FC changes the top-k
    graph along the way (errors up to 0.9) and recovered fewer planted parcels.

    Returns ``(None, info)`` with ``info["reason"]`` when the model cannot be explained (a
    self-supervised final stage predicts with a linear probe that ``model.bin`` does not hold).
    """
    import torch

    from brainfuse.methods.catalog import METHODS
    from brainfuse.methods.torch.data import BrainDataset, eval_loader
    from brainfuse.methods.torch.runner import read_model

    saved = read_model(model_path)
    if not saved.get("supervised", True):
        return None, {
            "reason": "the final stage is self-supervised; its predictions come from a linear "
            "probe on embeddings that model.bin does not store"
        }
    spec = METHODS[saved["method"]]
    hp = saved["params"]
    keys = [k for k in saved["input_keys"] if k in ATTRIBUTED_KEYS]
    if not keys:
        return None, {"reason": f"no attributable inputs among {saved['input_keys']}"}
    dataset = BrainDataset(
        caches,
        positive,
        modalities=spec.modalities,
        fields=saved["input_keys"],
        length=hp.get("length", 200),
        eeg_length=hp.get("eeg_length", 200),
        seed=seed,
        standardize=hp.get("standardize", True),
    )
    train_set = dataset.subset(train_subjects, train=False) if train_subjects else None
    metrics_path = Path(model_path).parent / "metrics.json"
    previous = None
    if metrics_path.exists():
        previous = json.loads(metrics_path.read_text()).get("previous")
    lit = _rebuild_stage_module(saved, dataset, int(saved["fold"]), seed, train_set, previous)
    test = dataset.subset(test_subjects, train=False, transform=None)
    if len(test) == 0:
        return None, {"reason": "no test samples"}

    def forward(batch):
        logits = lit.logits(batch).float()
        return logits[:, 1] - logits[:, 0]

    if baseline == "train_mean" and train_set is not None and len(train_set):
        reference = mean_inputs(train_set, keys, batch_size)
    elif baseline in ("zero", "train_mean"):
        baseline, reference = "zero", None
    else:
        raise ValueError(f"baseline={baseline!r}: expected 'train_mean' or 'zero'")
    per_key: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    deltas = []
    torch.manual_seed(seed)
    for batch in eval_loader(test, batch_size):
        inputs = {k: batch[k] for k in keys}
        extras = {k: v for k, v in batch.items() if k not in keys and k not in ("y", "index")}
        attrs, delta = integrated_gradients(
            forward, inputs, extras, n_steps=n_steps, baselines=reference
        )
        deltas.append(delta)
        for k in keys:
            per_key[k].append(attrs[k])
    blocks = {k: attribution_to_block(k, np.concatenate(v)) for k, v in per_key.items()}
    return blocks, {
        "n_test": len(test),
        "ig_relative_completeness_error": float(max(deltas)),
        "baseline": baseline,
        "input_keys": list(saved["input_keys"]),
    }


# --------------------------------------------------------------------------- aggregation


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(np.nansum(values))
    return values / total if total > 0 else np.zeros_like(values, dtype=float)


def parcel_importance(block: FoldBlock, edge: bool) -> np.ndarray:
    """(N,) parcel magnitude of a fold block: summed over bands (and over edges)."""
    mag = np.nan_to_num(block.magnitude)
    return mag.sum(axis=(0, 2)) if edge else mag.sum(axis=0)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Share of the top-``k`` items of ``a`` that are among the top-``k`` of ``b``."""
    k = min(k, len(a))
    if k == 0:
        return math.nan
    ta = set(np.argsort(-a, kind="stable")[:k])
    tb = set(np.argsort(-b, kind="stable")[:k])
    return len(ta & tb) / k


def stability(per_fold: np.ndarray, k: int = TOP_K) -> dict[str, Any]:
    """Agreement of importance vectors across folds (rows of ``per_fold``).

    Returns the mean pairwise Spearman correlation, the mean pairwise top-``k`` overlap, its
    chance level ``k / n`` and the per-pair values.
    """
    per_fold = np.asarray(per_fold, dtype=float)
    n_folds, n = per_fold.shape
    pairs = list(itertools.combinations(range(n_folds), 2))
    rho, overlap = [], []
    for a, b in pairs:
        x, y = per_fold[a], per_fold[b]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            rho.append(math.nan)
        else:
            rho.append(float(stats.spearmanr(x, y).statistic))
        overlap.append(top_k_overlap(x, y, k))
    return {
        "spearman_mean": float(np.nanmean(rho)) if pairs and not np.all(np.isnan(rho)) else None,
        "top_k_overlap_mean": float(np.mean(overlap)) if pairs else None,
        "top_k": int(min(k, n)),
        "chance_overlap": float(min(k, n) / n) if n else None,
        "pairs": [
            {"folds": [int(a), int(b)], "spearman": _json_float(r), "top_k_overlap": o}
            for (a, b), r, o in zip(pairs, rho, overlap, strict=True)
        ],
    }


def _json_float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def aggregate(result: MethodAttribution) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``importance.tsv`` and ``edges.tsv`` frames and the per-block part of ``summary.json``."""
    importance_rows, edge_frames, blocks_summary = [], [], {}
    totals = {}
    for name in sorted(result.blocks, key=_block_rank):
        per_fold = result.blocks[name]
        info = result.info[name]
        folds = sorted(per_fold)
        edge = name in EDGE_BLOCKS
        n = info.n_nodes
        parcel = np.stack([_shares(parcel_importance(per_fold[f], edge)) for f in folds])
        mean = parcel.mean(0)
        sd = parcel.std(0, ddof=1) if len(folds) > 1 else np.full(n, np.nan)
        rank = stats.rankdata(-mean, method="min").astype(int)
        frame = pd.DataFrame(
            {
                "block": name,
                "modality": BLOCK_MODALITY[name],
                "parcel_index": np.arange(n),
                "parcel": info.nodes,
                "network": info.networks,
            }
        )
        for f, row in zip(folds, parcel, strict=True):
            frame[f"fold-{f}"] = row
        frame["importance"], frame["sd"], frame["rank"] = mean, sd, rank
        importance_rows.append(frame.sort_values("rank", kind="stable"))

        summary: dict[str, Any] = {
            "modality": BLOCK_MODALITY[name],
            "kind": "edges" if edge else "nodes",
            "n_parcels": n,
            "stability": stability(parcel),
            "networks": _network_shares(mean, info.networks),
        }
        magnitude_total = np.mean([np.nansum(per_fold[f].magnitude) for f in folds])
        totals[name] = magnitude_total
        bands = info.bands
        if len(bands) > 1 or bands[0]:
            band_share = np.stack(
                [
                    _shares(np.nansum(per_fold[f].magnitude.reshape(len(bands), -1), 1))
                    for f in folds
                ]
            )
            summary["bands"] = {
                b: {"share": float(m), "sd": _json_float(s)}
                for b, m, s in zip(
                    bands,
                    band_share.mean(0),
                    band_share.std(0, ddof=1) if len(folds) > 1 else [math.nan] * len(bands),
                    strict=True,
                )
            }
        if edge:
            edges, edge_summary = _edge_table(name, per_fold, folds, info)
            edge_frames.append(edges)
            summary["edge_stability"] = edge_summary
            summary["network_pairs"] = _network_pair_shares(edges)
        blocks_summary[name] = summary
    # Modality shares: only meaningful within one attribution method and when several blocks
    # are explained by the same model (IG attributions sum to the same log-odds difference).
    grand = sum(totals.values())
    for name, total in totals.items():
        blocks_summary[name]["share_of_attribution"] = float(total / grand) if grand > 0 else None
    importance = (
        pd.concat(importance_rows, ignore_index=True) if importance_rows else _empty_importance()
    )
    edges = pd.concat(edge_frames, ignore_index=True) if edge_frames else _empty_edges()
    return importance, edges, blocks_summary


def _block_rank(name: str) -> int:
    return BLOCK_ORDER.index(name) if name in BLOCK_ORDER else len(BLOCK_ORDER)


def _empty_importance() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "block",
            "modality",
            "parcel_index",
            "parcel",
            "network",
            "importance",
            "sd",
            "rank",
        ]
    )


def _empty_edges() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "block",
            "modality",
            "band",
            "i",
            "j",
            "parcel_i",
            "parcel_j",
            "network_i",
            "network_j",
            "importance",
            "sd",
            "sign",
            "rank",
        ]
    )


def _edge_table(
    name: str, per_fold: dict[int, FoldBlock], folds: list[int], info: BlockInfo
) -> tuple[pd.DataFrame, dict[str, Any]]:
    n = info.n_nodes
    iu, ju = np.triu_indices(n, 1)
    bands = info.bands
    shares = np.stack(
        [_shares(np.nan_to_num(per_fold[f].magnitude[:, iu, ju]).ravel()) for f in folds]
    )
    signed = np.mean([np.nan_to_num(per_fold[f].signed[:, iu, ju]).ravel() for f in folds], 0)
    mean = shares.mean(0)
    sd = shares.std(0, ddof=1) if len(folds) > 1 else np.full(mean.shape, np.nan)
    n_edges = len(iu)
    frame = pd.DataFrame(
        {
            "block": name,
            "modality": BLOCK_MODALITY[name],
            "band": np.repeat(bands, n_edges),
            "i": np.tile(iu, len(bands)),
            "j": np.tile(ju, len(bands)),
        }
    )
    nodes, networks = np.asarray(info.nodes), np.asarray(info.networks)
    frame["parcel_i"], frame["parcel_j"] = nodes[frame["i"]], nodes[frame["j"]]
    frame["network_i"], frame["network_j"] = networks[frame["i"]], networks[frame["j"]]
    for f, row in zip(folds, shares, strict=True):
        frame[f"fold-{f}"] = row
    frame["importance"], frame["sd"] = mean, sd
    frame["sign"] = np.where(signed > 0, "+", np.where(signed < 0, "-", "0"))
    frame["rank"] = stats.rankdata(-mean, method="min").astype(int)
    frame = frame.sort_values("rank", kind="stable").reset_index(drop=True)
    return frame, stability(shares)


def _network_shares(importance: np.ndarray, networks: Sequence[str]) -> list[dict[str, Any]]:
    """Per network, most enriched first: share of the importance, parcels, and enrichment
    (share / parcel share; 1 = as much as its size predicts)."""
    frame = pd.DataFrame({"network": list(networks), "importance": importance})
    n = len(frame)
    grouped = frame.groupby("network", sort=False)["importance"].agg(["sum", "size"])
    out = []
    grouped["enrichment"] = grouped["sum"] / (grouped["size"] / n)
    for network, row in grouped.sort_values("enrichment", ascending=False).iterrows():
        expected = row["size"] / n
        out.append(
            {
                "network": str(network),
                "share": float(row["sum"]),
                "n_parcels": int(row["size"]),
                "enrichment": float(row["sum"] / expected) if expected else None,
            }
        )
    return out


def _network_pair_shares(edges: pd.DataFrame) -> list[dict[str, Any]]:
    pair = [
        tuple(sorted((a, b))) for a, b in zip(edges["network_i"], edges["network_j"], strict=True)
    ]
    frame = pd.DataFrame({"pair": pair, "importance": edges["importance"].to_numpy()})
    grouped = frame.groupby("pair")["importance"].agg(["sum", "size"])
    total_edges = len(frame)
    return [
        {
            "networks": list(p),
            "share": float(r["sum"]),
            "n_edges": int(r["size"]),
            "enrichment": float(r["sum"] / (r["size"] / total_edges)),
        }
        for p, r in grouped.assign(enrichment=grouped["sum"] / (grouped["size"] / total_edges))
        .sort_values("enrichment", ascending=False)
        .iterrows()
    ]


# --------------------------------------------------------------------------- ground truth


def hypergeom_p(hits: int, k: int, planted: int, total: int) -> float:
    """P(at least ``hits`` planted items among ``k`` drawn at random from ``total``)."""
    return float(stats.hypergeom.sf(hits - 1, total, planted, k))


def ground_truth_recovery(
    importance: pd.DataFrame, edges: pd.DataFrame, truth: Mapping[str, Any], k: int = TOP_K
) -> dict[str, Any]:
    """Precision at ``k`` of the top parcels and edges of each block against the planted ones
    (the demo's ``ground_truth.json``), with chance levels and hypergeometric p-values.

    A modality's planted parcels are its ``parcels`` list, or the end points of its planted
    ``edges`` when it lists edges only (SC).
    """
    out: dict[str, Any] = {}
    for block in importance["block"].unique() if len(importance) else []:
        modality = BLOCK_MODALITY.get(block)
        gt = truth.get(modality) if modality else None
        if not isinstance(gt, Mapping) or block not in GROUND_TRUTH_BLOCKS.get(modality, ()):
            continue
        planted_edges = {frozenset(e) for e in gt.get("edges", []) if len(e) == 2}
        planted_parcels = set(gt.get("parcels", [])) or {p for e in planted_edges for p in e}
        entry: dict[str, Any] = {"modality": modality}
        rows = importance[importance["block"] == block].sort_values("rank", kind="stable")
        nodes = set(rows["parcel"])
        planted_here = planted_parcels & nodes
        if planted_here:
            top = list(rows["parcel"].head(k))
            hits = [p for p in top if p in planted_here]
            entry["parcels"] = {
                "k": len(top),
                "precision": len(hits) / len(top),
                "chance": len(planted_here) / len(nodes),
                "hits": hits,
                "n_planted": len(planted_here),
                "p_value": hypergeom_p(len(hits), len(top), len(planted_here), len(nodes)),
                "source": "parcels" if gt.get("parcels") else "end points of planted edges",
            }
        block_edges = edges[edges["block"] == block] if len(edges) else edges
        if planted_edges and len(block_edges):
            if (block_edges["band"] != "").any():
                # one ranking per edge: the sum over bands
                combined = block_edges.groupby(["parcel_i", "parcel_j"], as_index=False)[
                    "importance"
                ].sum()
            else:
                combined = block_edges[["parcel_i", "parcel_j", "importance"]]
            combined = combined.sort_values("importance", ascending=False, kind="stable")
            n_edges = len(combined)
            top = combined.head(k)
            top_pairs = [frozenset(p) for p in zip(top["parcel_i"], top["parcel_j"], strict=True)]
            hits = [sorted(p) for p in top_pairs if p in planted_edges]
            entry["edges"] = {
                "k": len(top_pairs),
                "precision": len(hits) / len(top_pairs) if top_pairs else math.nan,
                "chance": len(planted_edges) / n_edges,
                "hits": hits,
                "n_planted": len(planted_edges),
                "p_value": hypergeom_p(len(hits), len(top_pairs), len(planted_edges), n_edges),
            }
        if modality == "eeg" and gt.get("band") and block in ("band_power", "envelopes"):
            entry["planted_band"] = gt["band"]
        out[block] = entry
    return out


# --------------------------------------------------------------------------- routing


def routing_summary(paths: Sequence[str | Path]) -> dict[str, Any] | None:
    """Mean MoE routing shares per class, MoE and expert over the ``routing.tsv`` of the folds
    (M3D-BFS), or None when no fold has one.

    ``share`` is the share of the MoE's tokens (of that modality; both modalities for the
    ``shared`` MoE) routed to the expert; ``sc_fraction`` the SC share of what it received.
    """
    frames = []
    for fold, path in enumerate(paths):
        if path and Path(path).exists():
            frame = pd.read_csv(path, sep="\t", dtype={"subject": str})
            frame["fold"] = fold
            frames.append(frame)
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    table["share"] = table[["sc_share", "fc_share"]].mean(axis=1, skipna=True)
    grouped = table.groupby(["label", "moe", "expert"], sort=True)
    summary = grouped[["share", "sc_fraction"]].mean().reset_index()
    summary["n_samples"] = grouped["sample_id"].nunique().to_numpy()
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in summary.to_dict(orient="records")
    ]
    return {
        "records": records,
        "n_folds": len(frames),
        "blocks": sorted(int(b) for b in table["block"].unique()),
    }


# --------------------------------------------------------------------------- one method


def _cache_info(cache, modality: str) -> BlockInfo:
    meta = cache.metadata
    if modality == "eeg":
        nodes = list(meta.get("node_names") or meta.get("roi_names") or [])
    else:
        nodes = list(meta.get("roi_names") or [])
    if not nodes:
        key = {"fmri": "fc", "sc": "sc", "eeg": "aec"}[modality]
        nodes = [f"node_{i}" for i in range(cache.arrays[key].shape[-1])]
    networks = meta.get("roi_networks")
    if not networks or len(networks) != len(nodes):
        networks = [network_of(n) for n in nodes]
    bands = list(meta.get("bands") or [""]) if modality == "eeg" else [""]
    return BlockInfo(nodes=nodes, networks=list(networks), bands=bands)


def _block_info(name: str, infos: Mapping[str, BlockInfo]) -> BlockInfo:
    info = infos[BLOCK_MODALITY[name]]
    if name in ("fc", "sc", "timeseries", "fft"):
        return BlockInfo(info.nodes, info.networks, [""])
    return info


def explain_method(
    method: str,
    model_paths: Sequence[str],
    cache_paths: Mapping[str, str],
    folds_path: str,
    positive: str,
    seed: int,
    n_steps: int = 32,
    baseline: str = "zero",
) -> MethodAttribution:
    """Attributions of ``method``'s final-stage ``model.bin`` of every fold (in fold order);
    ``baseline`` is the integrated-gradients reference of torch models (see
    :func:`torch_fold_blocks`)."""
    from brainfuse.core.cache import read_cache
    from brainfuse.folds import read_folds, subjects_of
    from brainfuse.methods.catalog import METHODS

    spec = METHODS[method]
    caches = {m: read_cache(p) for m, p in cache_paths.items()}
    infos = {m: _cache_info(c, m) for m, c in caches.items()}
    folds = read_folds(folds_path)
    fold_ids = list(range(len(model_paths)))
    blocks: dict[str, dict[int, FoldBlock]] = {}
    notes: list[str] = []
    extra: dict[str, Any] = {"folds": {}}
    if spec.family == "sklearn":
        kind = "haufe"
        if spec.estimator == "majority":
            return MethodAttribution(
                method,
                "none",
                fold_ids,
                {},
                {},
                ["a constant prediction (the majority class) has no biomarkers"],
            )
        import joblib

        from brainfuse.methods.catalog import FEATURES, SCALED_FEATURES
        from brainfuse.methods.run import joint_samples

        modalities = tuple(cache_paths)
        samples = joint_samples(caches, modalities)
        x_all = FEATURES[spec.features](caches)[samples[f"row_{modalities[0]}"].to_numpy()]
        subjects = samples["subject"].astype(str)
        info = infos[modalities[0]]
        for fold, path in zip(fold_ids, model_paths, strict=True):
            fit_subjects = subjects_of(folds, fold, "train") | subjects_of(folds, fold, "val")
            rows = subjects.isin(fit_subjects).to_numpy()
            model = joblib.load(path)
            fold_blocks = linear_blocks(
                model, x_all[rows], spec.features, info.n_nodes, len(info.bands)
            )
            if fold_blocks is None:
                notes.append(f"fold {fold}: the model has no linear weights")
                continue
            extra["folds"][fold] = {"n_fit": int(rows.sum())}
            for name, block in fold_blocks.items():
                blocks.setdefault(name, {})[fold] = block
        notes.append(
            "Haufe activation patterns (cov(X) w / var(Xw)) on each fold's training and "
            "validation subjects, the data the final model was fitted on, in units of each "
            "feature's SD (the pattern of the same model on z-scored features)"
            + (
                "; X is the tangent-space embedding of the FC (reference fitted in the fold), "
                "so edges are tangent-space coordinates"
                if spec.features == "tangent"
                else "; X is the standardised features (the model's own scaler)"
                if spec.features in SCALED_FEATURES
                else ""
            )
        )
    else:
        kind = "integrated_gradients"
        for fold, path in zip(fold_ids, model_paths, strict=True):
            try:
                fold_blocks, info = torch_fold_blocks(
                    path,
                    caches,
                    subjects_of(folds, fold, "test"),
                    positive,
                    seed,
                    n_steps,
                    train_subjects=subjects_of(folds, fold, "train"),
                    baseline=baseline,
                )
            except Exception as err:  # one model the attribution cannot handle must not stop
                # the report; the reason is logged with its traceback and shown on the page
                log.exception("%s fold %d: attribution failed", method, fold)
                fold_blocks, info = None, {"reason": f"attribution failed ({err!r})"}
            extra["folds"][fold] = info
            if fold_blocks is None:
                notes.append(f"fold {fold}: {info['reason']}")
                continue
            for name, block in fold_blocks.items():
                blocks.setdefault(name, {})[fold] = block
        if not blocks:
            kind = "none"
        else:
            reference = (
                "a zero input" if baseline == "zero" else "the training subjects' mean input"
            )
            notes.append(
                f"integrated gradients (captum, {n_steps} steps, from {reference}) of the "
                "positive-class log-odds on each fold's test samples; mean |attribution| over "
                "samples"
            )
        routing = routing_summary([Path(p).parent / "routing.tsv" for p in model_paths])
        if routing is not None:
            extra["routing"] = routing
    block_infos = {name: _block_info(name, infos) for name in blocks}
    return MethodAttribution(method, kind, fold_ids, blocks, block_infos, notes, extra)


def write_outputs(
    result: MethodAttribution,
    out_importance: str,
    out_edges: str,
    out_summary: str,
    truth: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Write ``importance.tsv``, ``edges.tsv`` and ``summary.json``; returns the summary."""
    importance, edges, blocks = aggregate(result)
    headline = next(iter(sorted(blocks, key=_block_rank)), None)
    summary: dict[str, Any] = {
        "method": result.method,
        "description": description,
        "kind": result.kind,
        "folds": result.folds,
        "folds_explained": sorted({f for per_fold in result.blocks.values() for f in per_fold}),
        "headline_block": headline,
        "blocks": blocks,
        "notes": result.notes,
        "top_k": TOP_K,
        **{k: v for k, v in result.extra.items() if k != "folds"},
        "fold_details": {str(k): v for k, v in result.extra.get("folds", {}).items()},
    }
    errors = [
        d.get("ig_relative_completeness_error")
        for d in result.extra.get("folds", {}).values()
        if isinstance(d, dict) and d.get("ig_relative_completeness_error") is not None
    ]
    if errors:
        # IG attributions should add up to f(x) - f(baseline); discrete steps in the model
        # (top-k edges, top-k expert routing) make the path integral an approximation
        summary["ig_completeness_error_max"] = float(max(errors))
    if truth:
        summary["ground_truth"] = ground_truth_recovery(importance, edges, truth)
    atomic.write_tsv(out_importance, importance)
    atomic.write_tsv(out_edges, edges)
    text = json.dumps(_finite(summary), indent=1, default=_json_default, allow_nan=False)
    atomic.write_text(out_summary, text)
    return summary


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats replaced by None (JSON has neither)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def attribution_step(
    method: str,
    model_paths: Sequence[str],
    cache_paths: Mapping[str, str],
    folds_path: str,
    positive: str,
    seed: int,
    out_importance: str,
    out_edges: str,
    out_summary: str,
    truth_path: str | None = None,
    description: str = "",
    n_steps: int = 32,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """The ``attribution`` rule: explain every fold, aggregate, write the three outputs."""
    if num_threads:
        try:
            import torch

            torch.set_num_threads(int(num_threads))
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
    truth = json.loads(Path(truth_path).read_text()) if truth_path else None
    result = explain_method(method, model_paths, cache_paths, folds_path, positive, seed, n_steps)
    summary = write_outputs(result, out_importance, out_edges, out_summary, truth, description)
    for block, entry in (summary.get("ground_truth") or {}).items():
        for what in ("parcels", "edges"):
            if what in entry:
                log.info(
                    "%s %s %s: precision@%d %.2f (chance %.3f)",
                    method,
                    block,
                    what,
                    entry[what]["k"],
                    entry[what]["precision"],
                    entry[what]["chance"],
                )
    return summary


def read_table(path: str | Path) -> pd.DataFrame:
    """``importance.tsv`` / ``edges.tsv`` as written (``n/a`` is missing, empty band stays
    ``""``)."""
    return pd.read_csv(
        path, sep="\t", keep_default_na=False, na_values=["n/a"], dtype={"band": str}
    )
