"""The report's "Leakage and shortcut diagnostics" section, from ``eval/diagnostics.tsv``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from brainfuse.core.html import html_table
from brainfuse.diagnostics import flags

__all__ = ["adjustment_section", "diagnostics_section", "read_diagnostics"]

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


def adjustment_section(harmonise: Mapping[str, Any] | None, confounds: Sequence[str]) -> str:
    """HTML: the in-fold harmonisation and confound regression the models were trained with
    (config ``harmonise`` and ``confounds``), in plain words; empty without a config."""
    if harmonise is None:
        return ""
    steps = []
    if harmonise.get("method") == "combat":
        kept = ", ".join(harmonise.get("covariates") or []) or "no covariates"
        steps.append(
            f"ComBat (combatlearn, Fortin's model) by <code>{escape(str(harmonise['batch']))}"
            f"</code>, keeping {escape(kept)}; sites with fewer than "
            f"{int(harmonise.get('min_site_size', 5))} training subjects are pooled into one "
            "batch, and a validation or test subject from a site without training subjects is "
            "left unharmonised"
        )
    if confounds:
        steps.append(
            "regression of " + escape(", ".join(confounds)) + " with coefficients fitted on "
            "the training subjects"
        )
    if not steps:
        text = (
            "The models were trained on unadjusted features (<code>harmonise.method: none"
            "</code>, no <code>confounds</code>). The diagnostics below show how much site "
            "and motion the features carry, and what in-fold ComBat would remove."
        )
    else:
        text = (
            "Every method's inputs were adjusted in each fold: "
            + "; then ".join(steps)
            + ". Each fit saw the fold's training subjects only and was applied unchanged to "
            "its validation and test subjects: the baselines' features, the torch methods' "
            "FC/SC matrices and the FC they compute from time series (the time series and EEG "
            "inputs themselves are not adjusted). Each stage's <code>provenance.json</code> "
            "lists the subjects every fit saw, and the evaluate step checks them."
        )
    return "<h2>Harmonisation and confounds</h2>\n<p>" + text + "</p>"


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
