"""How well each method recovered the demo's planted effects: table rows and sentences."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

import pandas as pd

from brainfuse.report.html import html_table, p_text


def recovery_rows(method: str, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the index's recovery table for one method: precision at 10 per block."""
    rows = []
    for block, entry in (summary.get("ground_truth") or {}).items():
        row: dict[str, Any] = {"method": method, "input": block, "modality": entry["modality"]}
        for what in ("parcels", "edges"):
            if what in entry:
                e = entry[what]
                row[f"{what} P@{e['k']}"] = (
                    f"{e['precision']:.2f} (chance {e['chance']:.3f}, {p_text(e['p_value'])})"
                )
            else:
                row[f"{what} P@10"] = "n/a"
        rows.append(row)
    return rows


def recovery_sentence(method: str, summary: Mapping[str, Any]) -> str:
    """One sentence per block on the planted parcels, with a verdict."""
    parts = []
    for block, entry in (summary.get("ground_truth") or {}).items():
        e = entry.get("parcels")
        if not e:
            continue
        hits = round(e["precision"] * e["k"])
        expected = e["chance"] * e["k"]
        if e["p_value"] < 0.01 and e["precision"] >= 2 * e["chance"]:
            verdict = "<span class='ok'>clearly above chance</span>"
        elif e["p_value"] < 0.05:
            verdict = "<span class='ok'>above chance</span>"
        else:
            verdict = "<span class='warn'>not distinguishable from chance</span>"
        edge = entry.get("edges")
        edge_text = (
            f"; {round(edge['precision'] * edge['k'])} of its top {edge['k']} edges are planted "
            f"edges (chance {edge['chance'] * edge['k']:.2f}, {p_text(edge['p_value'])})"
            if edge
            else ""
        )
        bands = ((summary.get("blocks") or {}).get(block) or {}).get("bands") or {}
        if entry.get("planted_band") and bands:
            top_band = max(bands, key=lambda b: bands[b]["share"])
            edge_text += (
                f"; its most important band is {escape(top_band)} (planted: "
                f"{escape(str(entry['planted_band']))})"
            )
        parts.append(
            f"<b>{escape(method)}</b> ({escape(block)}): {hits} of its top {e['k']} parcels are "
            f"planted {escape(entry['modality'])} parcels (expected by chance "
            f"{expected:.1f}; hypergeometric {p_text(e['p_value'])}): {verdict}"
            f"{edge_text}."
        )
    return " ".join(parts)


def truth_section(
    summaries: Mapping[str, dict[str, Any] | None], families: Mapping[str, str]
) -> str:
    """The index's recovery section: a table of every method's precision at 10 and, for the
    baselines (``families``: ``baseline`` or ``deep`` per method), one sentence each."""
    rows, sentences = [], []
    for method, s in summaries.items():
        if not s or not s.get("ground_truth"):
            continue
        rows += recovery_rows(method, s)
        sentence = recovery_sentence(method, s)
        if sentence and families.get(method) == "baseline":
            sentences.append(sentence)
    if not rows:
        return (
            "<h2>Recovery of the planted effects</h2><p>A ground truth exists but no method "
            "produced attributions to compare with it.</p>"
        )
    frame = pd.DataFrame(rows).fillna("n/a")
    text = (
        "<h2>Recovery of the planted effects</h2>"
        "<p>The demo dataset has known effects (<code>ground_truth.json</code>): fMRI parcels "
        "and the edges among them, an EEG band at a few parcels, SC edges. P@10 is the share of "
        "a method's 10 top-ranked parcels (edges) that are planted; chance is the planted share "
        "of all parcels (edges); p is the hypergeometric probability of at least that many "
        "planted items among 10 drawn at random. SC parcels are the end points of the planted "
        "SC edges; the EEG effect is band amplitude, scored on band-power inputs.</p>"
    )
    if sentences:
        text += "<div class='callout'><p>" + "</p><p>".join(sentences) + "</p></div>"
    return text + html_table(frame)
