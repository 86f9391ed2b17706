"""Recovery of the demo's planted ground truth by a method's importance tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from scipy import stats

from brainfuse.explain.blocks import BLOCK_MODALITY, GROUND_TRUTH_BLOCKS, TOP_K


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
