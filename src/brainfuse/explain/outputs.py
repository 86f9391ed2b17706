"""Writing a method's attribution: ``importance.tsv``, ``edges.tsv`` and ``summary.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from brainfuse.core import atomic
from brainfuse.explain.blocks import TOP_K, MethodAttribution, block_rank
from brainfuse.explain.recovery import ground_truth_recovery
from brainfuse.explain.tables import aggregate


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
    headline = next(iter(sorted(blocks, key=block_rank)), None)
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
