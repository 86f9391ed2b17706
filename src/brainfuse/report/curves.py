"""The learning-curve figure and the report's "Learning curves" section, from ``eval/curves.tsv``
(:mod:`brainfuse.curves`)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.html import html_table
from brainfuse.report.figures import _plt, message_figure, never_raises, save
from brainfuse.report.html import html_img, png_uri

__all__ = ["curve_means", "curves_figure", "curves_section", "read_curves"]

#: the metrics drawn and tabulated, one panel each
CURVE_METRICS = ("balanced_accuracy", "auc")


def read_curves(path: str | Path | None) -> pd.DataFrame | None:
    """The curves table at ``path``, or None when there is none (the curves are opt-in)."""
    if path is None or not Path(path).exists():
        return None
    return pd.read_csv(path, sep="\t")


def curve_means(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over folds of each method at each fraction, with the mean training size.

    Columns: ``method``, ``family``, ``fraction``, ``n_train_subjects`` (mean over folds),
    ``n_folds`` and ``<metric>_mean``, ``<metric>_sd`` for each metric; SDs of one fold are NaN.
    """
    grouped = curves.groupby(["method", "family", "fraction"], sort=True)
    out = grouped.agg(
        n_train_subjects=("n_train_subjects", "mean"),
        n_folds=("fold", "nunique"),
        **{f"{m}_mean": (m, "mean") for m in CURVE_METRICS},
        **{f"{m}_sd": (m, "std") for m in CURVE_METRICS},
    )
    return out.reset_index()


@never_raises
def curves_figure(curves: pd.DataFrame, out_png: str | Path) -> str:
    """Each metric against the number of training subjects: mean ± SD over folds per method,
    baselines dashed and deep methods solid, chance marked."""
    means = curve_means(curves)
    if means.empty:
        return message_figure("No learning-curve results.", out_png)
    plt = _plt()
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(5.2 * len(CURVE_METRICS), 4))
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        for i, (method, rows) in enumerate(means.groupby("method", sort=True)):
            baseline = rows["family"].iloc[0] == "baseline"
            x = rows["n_train_subjects"].to_numpy(float)
            mean = rows[f"{metric}_mean"].to_numpy(float)
            sd = np.nan_to_num(rows[f"{metric}_sd"].to_numpy(float))
            colour = colours(i % 10)
            ax.plot(x, mean, ls="--" if baseline else "-", marker="o", color=colour, label=method)
            ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.12, lw=0)
        ax.axhline(0.5, color="#b42318", lw=1, ls=":")
        ax.set_xscale("log")
        # the training sizes themselves as ticks (a log axis would show only powers of ten)
        sizes = np.unique(np.round(means["n_train_subjects"].to_numpy(float)))
        ax.set_xticks(sizes, [f"{size:.0f}" for size in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training subjects per fold (fit + validation, log scale)")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (mean ± SD over folds)")
        ax.set_ylim(-0.02, 1.02)
    axes[-1].legend(loc="lower right", frameon=False, fontsize=8)
    fig.tight_layout()
    return save(fig, out_png)


def _few_shot_sentence(means: pd.DataFrame) -> str:
    """Which baseline and which deep method do best with the fewest training subjects."""
    smallest = means[means["fraction"] == means["fraction"].min()]
    parts = []
    for family in ("baseline", "deep"):
        rows = smallest[smallest["family"] == family].dropna(subset=["balanced_accuracy_mean"])
        if rows.empty:
            continue
        best = rows.loc[rows["balanced_accuracy_mean"].idxmax()]
        parts.append(
            f"the best {'deep method' if family == 'deep' else family} is {best['method']} "
            f"({best['balanced_accuracy_mean']:.2f} balanced accuracy)"
        )
    if not parts:
        return ""
    fraction = float(smallest["fraction"].iloc[0])
    subjects = float(smallest["n_train_subjects"].mean())
    return (
        f"With {fraction:.0%} of the training subjects (about {subjects:.0f} per fold), "
        + " and ".join(parts)
        + "."
    )


def _pretraining_sentences(
    means: pd.DataFrame, origins: Mapping[str, str], pretraining: Mapping[str, str]
) -> list[str]:
    """For each method whose curves exist beside another configuration of it (a variant with
    the same origin, pre-trained on something else): both at the smallest and the largest
    fraction, with what each was pre-trained on."""
    present = set(means["method"])
    groups: dict[str, list[str]] = {}
    for method in sorted(present):
        groups.setdefault(origins.get(method, method), []).append(method)
    sentences = []
    for origin, methods in sorted(groups.items()):
        if len(methods) < 2 or len({pretraining.get(m, "") for m in methods}) < 2:
            continue
        ends = []
        for fraction in sorted({means["fraction"].min(), means["fraction"].max()}):
            rows = means[(means["fraction"] == fraction) & means["method"].isin(methods)]
            scores = "; ".join(
                f"{r.method} {r.balanced_accuracy_mean:.2f} ± "
                f"{np.nan_to_num(r.balanced_accuracy_sd):.2f}"
                for r in rows.itertuples()
            )
            ends.append(f"with {fraction:.0%} of the training subjects: {scores}")
        what = "; ".join(
            f"{m} on {pretraining.get(m) or 'nothing (no pre-training stage)'}" for m in methods
        )
        sentences.append(
            f"{origin} pre-trained on different data ({what}). Balanced accuracy, "
            + ", and ".join(ends)
            + ". Pre-training on more unlabelled subjects helps where the corpus-trained "
            "configuration leads at the few-shot end by more than the folds' spread."
        )
    return sentences


def curves_section(
    curves: pd.DataFrame | None,
    figure: str | Path | None = None,
    origins: Mapping[str, str] | None = None,
    pretraining: Mapping[str, str] | None = None,
) -> str:
    """HTML: what the curves are, the figure (``figure``, a PNG, when it exists), a few-shot
    reading, a comparison of the configurations of one method pre-trained on different data
    (``origins``: method -> its catalog method; ``pretraining``: method -> what its encoder was
    pre-trained on) and the mean ± SD of balanced accuracy per method and fraction.

    Empty when there is no table or it has no rows.
    """
    if curves is None or curves.empty:
        return ""
    means = curve_means(curves)
    folds = curves["fold"].nunique()
    parts = [
        "<h2>Learning curves</h2>",
        "<p>Every method refitted, with all its stages (self-supervised pre-training included), "
        "on a fraction of each fold's training subjects and scored on the same test subjects. "
        "Each fraction is drawn per fold, stratified by label, from the training and the "
        "validation subjects separately (validation stays inside the subsample), and smaller "
        "fractions are subsets of larger ones"
        + ("; 100 % is the main run. " if (curves["fraction"] == 1).any() else ". ")
        + f"Mean ± SD over {folds} folds; baselines dashed, deep methods solid. The few-shot end "
        "shows whether pre-training helps when labelled subjects are scarce.</p>",
    ]
    reading = _few_shot_sentence(means)
    if reading:
        parts.append(f"<p>{escape(reading)}</p>")
    for sentence in _pretraining_sentences(means, origins or {}, pretraining or {}):
        parts.append(f"<p>{escape(sentence)}</p>")
    uri = png_uri(figure)
    if uri:
        parts.append(
            html_img(uri, "learning curves", "Metric against the number of training subjects.")
        )
    table = means.assign(
        cell=[
            f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
            for m, s in zip(
                means["balanced_accuracy_mean"], means["balanced_accuracy_sd"], strict=True
            )
        ]
    )
    wide = table.pivot(index=["method", "family"], columns="fraction", values="cell")
    wide.columns = [f"{f:.0%}" for f in wide.columns]
    parts.append(
        "<p>Balanced accuracy (mean ± SD over folds) by share of the training subjects:</p>"
        + html_table(wide.reset_index().fillna("n/a"))
    )
    return "\n".join(parts)
