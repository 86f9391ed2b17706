"""``<method>.html``: the method's metrics per fold and its biomarkers.

Top parcels on a glass brain and as a table (atlas names and, where the atlas labels them,
networks), top edges,
network/band/modality shares, stability across folds, MoE routing by class where available,
and recovery of the ground truth (see :mod:`brainfuse.explain`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.atlas import network_word
from brainfuse.report.html import (
    METRIC_NAMES,
    html_img,
    html_page,
    html_table,
    p_text,
    png_uri,
    relative_href,
)
from brainfuse.report.recovery import recovery_sentence

KIND_LABELS = {
    "haufe": "Haufe activation patterns of the linear model",
    "integrated_gradients": "integrated gradients",
}


def _percent(values) -> list[str]:
    return ["n/a" if not np.isfinite(v) else f"{100 * v:.2f}%" for v in np.asarray(values, float)]


def _top_parcels(importance: pd.DataFrame, block: str, k: int = 10) -> pd.DataFrame:
    rows = importance[importance["block"] == block].sort_values("rank", kind="stable").head(k)
    fold_cols = [c for c in rows.columns if c.startswith("fold-")]
    ranks = {
        c: importance.loc[importance["block"] == block, c].rank(ascending=False, method="min")
        for c in fold_cols
    }
    out = pd.DataFrame(
        {
            "rank": rows["rank"].to_numpy(),
            "parcel": rows["parcel"].to_numpy(),
            "network": rows["network"].to_numpy(),
            "importance": _percent(rows["importance"]),
            "SD over folds": _percent(rows["sd"]),
        }
    )
    if not _labelled(out["network"]):
        out = out.drop(columns="network")
    if fold_cols:
        out["rank per fold"] = [
            ", ".join(str(int(ranks[c].loc[i])) for c in fold_cols) for i in rows.index
        ]
    return out


def _labelled(networks: pd.Series) -> bool:
    """Whether a network column names any network (it is empty where the atlas has none)."""
    return bool((networks.fillna("").astype(str) != "").any())


def _top_edges(edges: pd.DataFrame, block: str, k: int = 10) -> pd.DataFrame:
    rows = edges[edges["block"] == block].sort_values("rank", kind="stable").head(k)
    out = pd.DataFrame(
        {
            "rank": rows["rank"].to_numpy(),
            "parcel i": rows["parcel_i"].to_numpy(),
            "parcel j": rows["parcel_j"].to_numpy(),
            "networks": [
                f"{a}–{b}" for a, b in zip(rows["network_i"], rows["network_j"], strict=True)
            ],
            "importance": _percent(rows["importance"]),
            "direction": [
                "higher in positive class"
                if s == "+"
                else ("lower in positive class" if s == "-" else "")
                for s in rows["sign"]
            ],
        }
    )
    if not _labelled(rows["network_i"]):
        out = out.drop(columns="networks")
    if (rows["band"].astype(str) != "").any():
        out.insert(1, "band", rows["band"].to_numpy())
    return out


def method_page(
    method: str,
    out_html: Path,
    index_href: str,
    description: str,
    family: str,
    stages: Sequence[str],
    summary_row: pd.Series | None,
    per_fold: pd.DataFrame,
    biomarkers: Mapping[str, str] | None,
    positive: str | None,
    *,
    deltas: pd.DataFrame | None = None,
    per_site: pd.DataFrame | None = None,
    permutation: Mapping[str, Any] | None = None,
    pretraining: str = "",
) -> tuple[str, dict[str, Any] | None]:
    """The HTML of ``<method>.html`` and the method's attribution summary (if any).

    ``summary_row`` is the method's row of ``eval/summary.tsv``; ``biomarkers`` its
    attribution outputs and figures (see :class:`~brainfuse.report.index_page.ReportInputs`);
    ``deltas`` and ``per_site`` are ``eval/deltas.tsv`` and ``eval/per_site.tsv`` (all
    methods); ``permutation`` the method's result of
    :func:`~brainfuse.report.permutation.permutation_tests`; ``pretraining`` what its
    encoder was pre-trained on ("" without a pre-training stage).
    """
    body = [
        f"<nav><a href='{escape(index_href, quote=True)}'>← back to the report</a></nav>",
        f"<h1>{escape(method)}</h1>",
        f"<p>{escape(description)}</p>",
        f"<p class='muted'>{escape(family)} · stages: {escape(', '.join(stages) or 'n/a')}</p>",
        f"<p>Encoder pre-trained on: {escape(pretraining)}.</p>" if pretraining else "",
        *_performance_section(method, summary_row, per_fold),
        *_comparison_section(method, deltas, permutation),
        *_site_section(method, per_site),
        "<h2>Biomarkers</h2>",
    ]
    if not biomarkers or not Path(biomarkers.get("summary", "")).exists():
        body.append(
            "<p>No biomarkers: the majority baseline predicts the training folds' most "
            "frequent class for everyone (chance level).</p>"
            if method == "majority"
            else "<p>No attribution was computed for this method.</p>"
        )
        return html_page(f"brainfuse: {method}", body), None
    from brainfuse.explain.tables import read_table

    summary = json.loads(Path(biomarkers["summary"]).read_text())
    if summary.get("kind") == "none" or not summary.get("blocks"):
        notes = "; ".join(summary.get("notes") or []) or "no attribution available"
        body.append(f"<p>No biomarkers: {escape(notes)}.</p>")
        return html_page(f"brainfuse: {method}", body), summary
    importance = read_table(biomarkers["importance"])
    edges = read_table(biomarkers["edges"])
    body += _attribution_intro(method, summary, biomarkers, out_html.parent, positive)
    for block, info in summary["blocks"].items():
        truth = (summary.get("ground_truth") or {}).get(block) or {}
        body += _block_section(block, info, importance, edges, truth)
    if len(summary["blocks"]) > 1:
        body += _inputs_section(summary)
    if summary.get("routing"):
        body += _routing_section(method, summary["routing"], biomarkers)
    return html_page(f"brainfuse: {method}", body), summary


def _performance_section(
    method: str, summary_row: pd.Series | None, per_fold: pd.DataFrame
) -> list[str]:
    """Mean, SD and 95% interval of every metric, and the metrics of each test fold."""
    body = ["<h2>Performance</h2>"]
    if summary_row is not None:
        parts = []
        for metric in METRIC_NAMES:
            m = summary_row.get(f"{metric}_mean", np.nan)
            s = summary_row.get(f"{metric}_sd", np.nan)
            lo = summary_row.get(f"{metric}_ci_low", np.nan)
            hi = summary_row.get(f"{metric}_ci_high", np.nan)
            if np.isfinite(m):
                parts.append(
                    {
                        "metric": metric.replace("_", " "),
                        "mean": m,
                        "SD": s,
                        "95% CI low": lo,
                        "95% CI high": hi,
                    }
                )
        body.append(
            html_table(pd.DataFrame(parts))
            + "<p class='muted'>Mean and SD over test folds; 95% interval: "
            + escape(str(summary_row.get("ci_method", "not computed")))
            + ".</p>"
            if parts
            else "<p>No metrics.</p>"
        )
    folds = per_fold[per_fold["method"] == method].drop(columns=["method"])
    if len(folds):
        body += ["<p>Per test fold:</p>", html_table(folds)]
    return body


def _comparison_section(
    method: str, deltas: pd.DataFrame | None, permutation: Mapping[str, Any] | None
) -> list[str]:
    """The method's paired difference to the best baseline and its permutation test."""
    body = ["<h2>Compared with the best baseline and with chance</h2>"]
    rows = deltas[deltas["method"] == method] if deltas is not None else pd.DataFrame()
    if len(rows):
        baseline = str(rows["baseline"].iloc[0])
        table = pd.DataFrame(
            {
                "metric": [m.replace("_", " ") for m in rows["metric"]],
                "difference": rows["delta"].to_numpy(),
                "95% CI low": rows["ci_low"].to_numpy(),
                "95% CI high": rows["ci_high"].to_numpy(),
                "verdict": rows["verdict"].to_numpy(),
            }
        )
        body += [
            f"<p>Difference to <b>{escape(baseline)}</b>, the classical baseline with the "
            "highest mean balanced accuracy (this method minus the baseline, on the same "
            "subjects):</p>",
            html_table(table),
            "<p class='muted'>Interval: "
            + escape(str(rows["ci_method"].iloc[0]))
            + ". The baseline is chosen on the same test folds, a selection that favours it; "
            "see the report's results section.</p>",
        ]
    else:
        body.append("<p>No difference to a baseline: no classical baseline ran.</p>")
    if permutation:
        ba, auc = permutation["balanced_accuracy"], permutation["auc"]
        body.append(
            f"<p>Label permutation test of its pooled test predictions: balanced accuracy "
            f"{ba['observed']:.3f} ({p_text(ba['p'])}; corrected over all methods tested: "
            f"{p_text(ba['p_max'])}), AUC {auc['observed']:.3f} ({p_text(auc['p'])}; "
            f"corrected: {p_text(auc['p_max'])}).</p>"
        )
    return body


def _site_section(method: str, per_site: pd.DataFrame | None) -> list[str]:
    """The method's metrics on each site's test subjects (two or more sites)."""
    rows = per_site[per_site["method"] == method] if per_site is not None else pd.DataFrame()
    if len(rows) == 0 or rows["site"].nunique() < 2:
        return []
    return [
        "<h2>Per site</h2>",
        "<p>Pooled test predictions of each site's subjects (balanced accuracy and AUC are "
        "undefined on a site whose test subjects are all of one class):</p>",
        html_table(rows.drop(columns="method")),
    ]


def _attribution_intro(
    method: str,
    summary: Mapping[str, Any],
    biomarkers: Mapping[str, str],
    page_dir: Path,
    positive: str | None,
) -> list[str]:
    """How the attribution was computed, links to its tables, ground truth and figures."""
    body = [
        "<p>Attribution ("
        + escape(KIND_LABELS.get(summary["kind"], summary["kind"]))
        + "): "
        + escape("; ".join(summary.get("notes") or []))
        + ". Importance is a share: per fold, magnitudes are normalised to sum to 1 within "
        "each input, a parcel's importance in a connectivity input is the sum over its edges, "
        "and shares are averaged over folds.</p>"
    ]
    error = summary.get("ig_completeness_error_max")
    if error is not None and error > 0.1:
        body.append(
            f"<p class='muted'>Integrated gradients add up to the change in log-odds only "
            f"approximately here (largest relative completeness error {error:.2f}): the model "
            "makes discrete choices (top-k edges or expert routing) along the integration "
            "path. Read the ranking, not the exact values.</p>"
        )
    links = [
        f"<a href='{relative_href(biomarkers[k], page_dir)}'>{escape(Path(biomarkers[k]).name)}</a>"
        for k in ("importance", "edges", "summary")
        if biomarkers.get(k) and Path(biomarkers[k]).exists()
    ]
    if links:
        body.append(f"<p>Tables: {' · '.join(links)}</p>")
    recovery = recovery_sentence(method, summary)
    if recovery:
        body.append(
            "<div class='callout'><p><b>Ground truth (demo).</b> " + recovery + "</p>"
            "<p class='muted'>Precision at 10: the share of the 10 top-ranked parcels (edges) "
            "that carry a planted effect; chance is the planted share of all parcels "
            "(edges).</p></div>"
        )
    networks = [n["network"] for b in summary["blocks"].values() for n in b.get("networks", [])]
    captions = _figure_captions(summary.get("headline_block"), positive, network_word(networks))
    for key, caption in captions:
        src = png_uri(biomarkers.get(key))
        if src:
            body.append(html_img(src, f"{method} {key.replace('_', ' ')}", caption))
    return body


def _figure_captions(
    headline: str | None, positive: str | None, network: str
) -> list[tuple[str, str]]:
    """The biomarker figures of a method page and their captions.

    ``network`` names the atlas' network labels (``"Yeo-7 network"``, ``"network"``), or is
    ``""`` when the atlas has none: then no caption mentions networks.
    """
    if network:
        colours = f"nodes coloured by {network}."
        shares = (
            f"Share of importance per {network} (bars) against the network's share of parcels "
            "(ticks); bands and inputs where the model has them."
        )
    else:
        colours = "nodes in grey (the atlas has no network labels)."
        shares = (
            "Share of importance per band and per input where the model has them (the atlas "
            "has no network labels)."
        )
    return [
        (
            "top_parcels",
            f"Top 10 parcels of input '{headline}' at the atlas centroids; marker size and "
            "colour (percent of the input's importance) run from the 10th to the 1st.",
        ),
        (
            "top_edges",
            "Top 20 edges; red: higher pattern/attribution towards the positive "
            "class"
            + (f" ({positive})" if positive else "")
            + ", blue: towards the other class; "
            + colours,
        ),
        ("networks", shares),
    ]


def _stability_text(info: Mapping[str, Any]) -> str:
    """One sentence on the agreement of a block's importance across folds, or ``""``."""
    stab = info["stability"]
    parts = []
    if stab.get("spearman_mean") is not None:
        parts.append(
            f"mean Spearman correlation of parcel importance between folds "
            f"{stab['spearman_mean']:.2f}"
        )
    if stab.get("top_k_overlap_mean") is not None:
        parts.append(
            f"mean top-{stab['top_k']} parcel overlap {stab['top_k_overlap_mean']:.2f}"
            + (
                f" (chance {stab['chance_overlap']:.2f})"
                if stab.get("chance_overlap") is not None
                else ""
            )
        )
    edge_stab = info.get("edge_stability") or {}
    if edge_stab.get("top_k_overlap_mean") is not None:
        parts.append(f"top-{edge_stab['top_k']} edge overlap {edge_stab['top_k_overlap_mean']:.2f}")
    return f"<p>Stability across folds: {escape('; '.join(parts))}.</p>" if parts else ""


def _block_section(
    block: str,
    info: Mapping[str, Any],
    importance: pd.DataFrame,
    edges: pd.DataFrame,
    truth: Mapping[str, Any],
) -> list[str]:
    """One input block: stability, top parcels and edges (planted ones marked), networks and
    bands."""
    body = [
        f"<h3>Input '{escape(block)}' ({escape(info['modality'])}, {escape(info['kind'])})</h3>"
    ]
    stability = _stability_text(info)
    if stability:
        body.append(stability)
    top_parcels = _top_parcels(importance, block)
    if "parcels" in truth:
        hits = set(truth["parcels"]["hits"])
        top_parcels["planted (demo)"] = ["yes" if p in hits else "" for p in top_parcels["parcel"]]
    body += [
        "<p>Top parcels (importance: share of the input's total, mean over folds):</p>",
        html_table(top_parcels, text_columns=("parcel", "network")),
    ]
    if info["kind"] == "edges":
        top_edges = _top_edges(edges, block)
        if "edges" in truth and "band" not in top_edges:
            hits = {tuple(sorted(h)) for h in truth["edges"]["hits"]}
            top_edges["planted (demo)"] = [
                "yes" if tuple(sorted((a, b))) in hits else ""
                for a, b in zip(top_edges["parcel i"], top_edges["parcel j"], strict=True)
            ]
        body += ["<p>Top edges:</p>", html_table(top_edges, text_columns=("parcel i", "parcel j"))]
    return body + _network_tables(info)


def _network_tables(info: Mapping[str, Any]) -> list[str]:
    """A block's most enriched network pairs, network shares and band shares."""
    body = []
    pairs = pd.DataFrame(info.get("network_pairs") or [])
    if len(pairs):
        pairs = pairs.head(5).assign(networks=[" – ".join(p) for p in pairs["networks"].head(5)])
        pairs = pairs.rename(columns={"enrichment": "share / edge share"})
        body += ["<p>Most enriched network pairs (edges):</p>", html_table(pairs)]
    networks = pd.DataFrame(info["networks"])
    if len(networks):
        networks = networks.rename(columns={"enrichment": "share / parcel share"})
        body += ["<p>Networks:</p>", html_table(networks)]
    if info.get("bands"):
        bands = pd.DataFrame(
            [
                {"band": b, "share": v["share"], "SD over folds": v["sd"]}
                for b, v in info["bands"].items()
            ]
        )
        body += ["<p>Frequency bands (sum of importance per band):</p>", html_table(bands)]
    return body


def _inputs_section(summary: Mapping[str, Any]) -> list[str]:
    """Share of the total attribution per input block (methods with several inputs)."""
    shares = pd.DataFrame(
        [
            {
                "input": b,
                "modality": v["modality"],
                "share of total |attribution|": v.get("share_of_attribution"),
            }
            for b, v in summary["blocks"].items()
        ]
    )
    body = ["<h3>Inputs and modalities</h3>", html_table(shares)]
    if summary["kind"] == "haufe":
        body.append(
            "<p class='muted'>For a linear model, these totals grow with the number of "
            "features of each input; compare inputs within a row of the tables above.</p>"
        )
    return body


def _routing_section(
    method: str, routing: Mapping[str, Any], biomarkers: Mapping[str, str]
) -> list[str]:
    """Mixture-of-experts routing by class: the figure (drawn here when the workflow did not)
    and its table."""
    body = ["<h3>Mixture-of-experts routing</h3>"]
    src = png_uri(biomarkers.get("routing"))
    if src is None:
        from brainfuse.report.figures import routing_figure

        with tempfile.TemporaryDirectory() as tmp:
            src = png_uri(routing_figure(routing, Path(tmp) / "routing.png"))
    body.append(
        html_img(
            src or "",
            f"{method} routing",
            "Mean share of each MoE's tokens routed to each "
            "expert, by class (test samples, all fusion blocks and folds).",
        )
    )
    records = pd.DataFrame(routing["records"])
    if len(records):
        body.append(html_table(records))
    return body
