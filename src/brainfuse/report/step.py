"""Entry points of the ``report_figures`` and ``biomarker_figures`` rules."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("brainfuse")


def make_report_figures(
    predictions_path: str,
    per_fold_path: str,
    qc_path: str,
    out: Mapping[str, str],
    fmri_cache: str | None = None,
    positive: str = "",
    fd_threshold: float | None = None,
) -> None:
    """The ``report_figures`` rule: ROC curves, fold spread, FC group difference, FD
    distribution and exclusions, each to the PNG named in ``out``."""
    from brainfuse.report import figures as draw

    predictions = pd.read_csv(predictions_path, sep="\t", dtype={"subject": str})
    per_fold = pd.read_csv(per_fold_path, sep="\t")
    qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
    draw.roc_figure(predictions, out["roc"])
    draw.fold_spread_figure(per_fold, out["fold_spread"])
    if fmri_cache and Path(fmri_cache).exists():
        _fc_difference(fmri_cache, positive, out["fc_difference"])
    else:
        draw.message_figure("No fMRI data: no FC group difference.", out["fc_difference"])
    draw.fd_distribution_figure(qc, out["fd_distribution"], fd_threshold)
    draw.exclusions_figure(qc, out["exclusions"])


def _fc_difference(fmri_cache: str, positive: str, out_png: str) -> None:
    """The FC group difference from the fMRI cache; a cache that cannot be read becomes a
    figure that says why, so that the report stage never stops a run."""
    from brainfuse.core.atlas import known_networks
    from brainfuse.core.cache import read_cache
    from brainfuse.report import figures as draw

    try:
        cache = read_cache(fmri_cache, columns=["fc", "sample_id", "subject", "label"])
    except (OSError, KeyError, ValueError) as error:
        log.warning("FC group difference: cannot read %s: %r", fmri_cache, error)
        draw.message_figure(f"The fMRI cache could not be read: {error}", out_png)
        return
    names = cache.metadata.get("roi_names", [])
    # only the atlas' own network labels order the matrix; a cache of an atlas without them
    # (older ones say "NA" for every parcel) gives parcels in atlas order
    networks = known_networks(cache.metadata.get("roi_networks"), len(names))
    draw.fc_difference_figure(
        cache.arrays.get("fc", np.zeros((0, len(names), len(names)))),
        cache.table["label"],
        cache.table["subject"],
        networks,
        positive,
        out_png,
    )


def make_biomarker_figures(
    summary_path: str,
    importance_path: str,
    edges_path: str,
    atlas,
    out: Mapping[str, str],
) -> None:
    """The ``biomarker_figures`` rule: top parcels (glass brain), top edges (connectome),
    network/band/input shares and, for MoE models, routing by class."""
    from brainfuse.explain.tables import read_table
    from brainfuse.report import figures as draw

    summary = json.loads(Path(summary_path).read_text())
    importance = read_table(importance_path)
    edges = read_table(edges_path)
    block = summary.get("headline_block")
    labels, centroids = list(atlas.labels), atlas.centroids()
    method = summary.get("method", "")
    if block is None:
        reason = "; ".join(summary.get("notes") or []) or "no attribution"
        for key in ("top_parcels", "top_edges", "networks"):
            draw.message_figure(f"{method}: {reason}.", out[key])
    else:
        draw.top_parcels_figure(
            importance,
            labels,
            centroids,
            out["top_parcels"],
            block,
            title=f"{method}: top parcels ({block})",
        )
        edge_blocks = [b for b in summary["blocks"] if summary["blocks"][b]["kind"] == "edges"]
        if edge_blocks:
            draw.top_edges_figure(
                edges,
                labels,
                centroids,
                out["top_edges"],
                edge_blocks[0],
                title=f"{method}: top edges ({edge_blocks[0]})",
            )
        else:
            draw.message_figure(
                f"{method}: the model's inputs are node signals; no edges.", out["top_edges"]
            )
        draw.networks_figure(summary, out["networks"])
    if "routing" in out:
        if summary.get("routing"):
            draw.routing_figure(summary["routing"], out["routing"])
        else:
            draw.message_figure(f"{method}: no mixture-of-experts routing.", out["routing"])
