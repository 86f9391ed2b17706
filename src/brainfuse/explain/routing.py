"""Mixture-of-experts routing shares (M3D-BFS) summarised over folds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd


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
