"""The ``attribution`` rule's entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainfuse.explain.method import explain_method
from brainfuse.explain.outputs import write_outputs
from brainfuse.methods.catalog import Catalog

log = logging.getLogger("brainfuse")


def attribution_step(
    method: str,
    model_paths: Sequence[str],
    previous_paths: Sequence[str],
    routing_paths: Sequence[str],
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
    catalog: Catalog | None = None,
    adjustment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``attribution`` rule: explain every fold, aggregate, write the three outputs.

    ``model_paths`` are the final stage's ``model.bin`` of each fold in fold order,
    ``previous_paths`` the stage before it (empty for one-stage methods), ``routing_paths`` the
    final stage's ``routing.tsv`` files (empty unless the method writes them). The other
    parameters are those of :func:`~brainfuse.explain.method.explain_method` and
    :func:`~brainfuse.explain.outputs.write_outputs`. Returns the summary written.
    """
    if num_threads:
        import torch

        torch.set_num_threads(int(num_threads))
    truth = json.loads(Path(truth_path).read_text()) if truth_path else None
    result = explain_method(
        method,
        model_paths,
        previous_paths,
        routing_paths,
        cache_paths,
        folds_path,
        positive,
        seed,
        n_steps,
        catalog=catalog,
        adjustment=adjustment,
    )
    summary = write_outputs(result, out_importance, out_edges, out_summary, truth, description)
    _log_recovery(method, summary.get("ground_truth") or {})
    return summary


def _log_recovery(method: str, recovery: Mapping[str, Any]) -> None:
    for block, entry in recovery.items():
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
