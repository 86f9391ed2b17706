"""The report's "Leakage and shortcut diagnostics" section, from ``eval/diagnostics.tsv``."""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from brainfuse.core.html import html_table
from brainfuse.diagnostics import flags

__all__ = ["diagnostics_section", "read_diagnostics"]

_WHAT = {
    "site": "site is predictable from {name} at {before:.2f} (chance {chance:.2f}); "
    "after in-fold ComBat {after:.2f}",
    "motion": "mean FD is predictable from {name} at r = {before:.2f} (chance 0); "
    "after in-fold ComBat {after:.2f}",
    "label": "the label is predictable from {name} at {before:.2f} (chance {chance:.2f}); "
    "after in-fold ComBat {after:.2f}",
}


def read_diagnostics(path: str | Path | None) -> pd.DataFrame | None:
    """The diagnostics table at ``path``, or None when there is none."""
    if path is None or not Path(path).exists():
        return None
    return pd.read_csv(path, sep="\t")


def diagnostics_section(table: pd.DataFrame | None) -> str:
    """HTML: a plain-words reading per feature set and target, warnings, and the fold means.

    Empty when there is no table or it has no rows.
    """
    if table is None or table.empty:
        return ""
    mean = (
        table.groupby(["feature_set", "target"], sort=False)[["before", "after", "chance"]]
        .mean()
        .reset_index()
    )
    readings = [
        _WHAT[row.target].format(
            name=row.feature_set, before=row.before, after=row.after, chance=row.chance
        )
        for row in mean.itertuples()
        if row.target in _WHAT
    ]
    warnings = flags(table)
    folds = table["fold"].nunique()
    parts = [
        "<h2>Leakage and shortcut diagnostics</h2>",
        "<p>Linear probes fitted on each fold's training subjects and scored on its test "
        "subjects: can the features tell the site (balanced accuracy), head motion "
        "(correlation of predicted and true mean FD) or the label (balanced accuracy)? "
        "<i>Before</i> uses the raw features; <i>after</i> the features after in-fold ComBat "
        "(and any configured confound regression), fitted on training subjects only. "
        f"Means over {folds} folds. With few subjects per site a score after harmonisation "
        "may fall below chance: ComBat centres each training site, so a test subject's own "
        "deviation points away from its site.</p>",
        "<ul>" + "".join(f"<li>{escape(text)}</li>" for text in readings) + "</ul>",
    ]
    if warnings:
        parts.append(
            "<div class='callout'><p class='warn'>Possible shortcut</p><ul>"
            + "".join(f"<li>{escape(text)}</li>" for text in warnings)
            + "</ul></div>"
        )
    shown = mean.rename(columns={"feature_set": "feature set"})
    parts.append(html_table(shown[["feature set", "target", "before", "after", "chance"]]))
    return "\n".join(parts)
