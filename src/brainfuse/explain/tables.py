"""Aggregation of fold blocks into ``importance.tsv``, ``edges.tsv`` and per-block summaries.

Per fold, magnitudes (|pattern|, or the mean over test samples of |attribution|) are
normalised to shares summing to 1 within each input block; a parcel's importance in a
connectivity block is the sum of its edges' shares. Shares are then averaged over folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brainfuse.explain.blocks import (
    BLOCK_MODALITY,
    EDGE_BLOCKS,
    BlockInfo,
    FoldBlock,
    MethodAttribution,
    block_rank,
)
from brainfuse.explain.stability import json_float, stability


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(np.nansum(values))
    return values / total if total > 0 else np.zeros_like(values, dtype=float)


def parcel_importance(block: FoldBlock, edge: bool) -> np.ndarray:
    """(N,) parcel magnitude of a fold block: summed over bands (and over edges)."""
    mag = np.nan_to_num(block.magnitude)
    return mag.sum(axis=(0, 2)) if edge else mag.sum(axis=0)


def aggregate(result: MethodAttribution) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``importance.tsv`` and ``edges.tsv`` frames and the per-block part of ``summary.json``."""
    importance_rows, edge_frames, blocks_summary = [], [], {}
    totals = {}
    for name in sorted(result.blocks, key=block_rank):
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
                "network": _node_networks(info),
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
                b: {"share": float(m), "sd": json_float(s)}
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
    nodes, networks = np.asarray(info.nodes), np.asarray(_node_networks(info))
    frame["parcel_i"], frame["parcel_j"] = nodes[frame["i"]], nodes[frame["j"]]
    frame["network_i"], frame["network_j"] = networks[frame["i"]], networks[frame["j"]]
    for f, row in zip(folds, shares, strict=True):
        frame[f"fold-{f}"] = row
    frame["importance"], frame["sd"] = mean, sd
    frame["sign"] = np.where(signed > 0, "+", np.where(signed < 0, "-", "0"))
    frame["rank"] = stats.rankdata(-mean, method="min").astype(int)
    frame = frame.sort_values("rank", kind="stable").reset_index(drop=True)
    return frame, stability(shares)


def _node_networks(info: BlockInfo) -> list[str]:
    """Each node's network for the tables' ``network`` columns: empty text where the atlas has no
    network labels, so that no table names a network the atlas does not give."""
    return list(info.networks) if info.networks else [""] * info.n_nodes


def _network_shares(importance: np.ndarray, networks: Sequence[str]) -> list[dict[str, Any]]:
    """Per network, most enriched first: share of the importance, parcels, and enrichment
    (share / parcel share; 1 = as much as its size predicts); empty without network labels."""
    if not networks:
        return []
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
    """Per pair of networks, most enriched first; empty without network labels."""
    if not (edges["network_i"].astype(str) != "").any():
        return []
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


def read_table(path: str | Path) -> pd.DataFrame:
    """``importance.tsv`` / ``edges.tsv`` as written (``n/a`` is missing, an empty band or
    network stays ``""``, and parcel names stay text: an atlas without a label table names its
    parcels by their image values, ``"1"``, ``"2"``, ...)."""
    text = ("band", "parcel", "parcel_i", "parcel_j", "network", "network_i", "network_j")
    return pd.read_csv(
        path, sep="\t", keep_default_na=False, na_values=["n/a"], dtype=dict.fromkeys(text, str)
    )
