"""Writing a method's attribution: ``importance.tsv``, ``edges.tsv`` and ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
    # key order kept (blocks in their order, not sorted): the report reads the first block
    text = json.dumps(atomic.json_safe(summary), indent=1, allow_nan=False)
    atomic.write_text(out_summary, text)
    return summary
