"""The HTML report: a self-contained page (figures embedded) that needs no network to view."""

from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, atomic

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d5dae4;padding:.3em .6em;text-align:right}
th{background:#f1f4f9}td:first-child,th:first-child{text-align:left}
.muted{color:#667085}.excluded{color:#b42318}.baseline{background:#fafbfd}
figure{margin:1em 0}figcaption{color:#667085;font-size:.9em}
"""


def _fig_to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(frame: pd.DataFrame, classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def fold_spread_figure(per_fold: pd.DataFrame, metric: str = "balanced_accuracy") -> str:
    """Per-fold metric of each method as points over a box, with chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(per_fold["method"]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(methods), 3.2))
    data = [per_fold.loc[per_fold["method"] == m, metric].dropna().to_numpy() for m in methods]
    ax.boxplot(data, tick_labels=methods, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color="#3b5bdb", zorder=3
        )
    ax.axhline(0.5, color="#b42318", lw=1, ls="--", label="chance")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="lower right", frameon=False)
    return _fig_to_data_uri(fig)


def fmri_qc_section(fmri_cache: str) -> str:
    """Motion summary and QC-FC before and after denoising (included runs)."""
    from .cache import read_cache
    from .qcfc import qc_fc

    cache = read_cache(
        fmri_cache,
        columns=["fc", "fc_raw", "mean_fd", "censored_fraction", "tsnr_mean", "sample_id"],
    )
    table = cache.table
    fd = table["mean_fd"].astype(float).to_numpy()
    raw_ok = np.isfinite(cache.arrays["fc_raw"]).any(axis=(1, 2)) & np.isfinite(fd)
    rows = []
    for label, key, keep in (
        ("before denoising", "fc_raw", raw_ok),
        ("after denoising", "fc", raw_ok),
    ):
        stats = qc_fc(cache.arrays[key][keep], fd[keep])
        rows.append(
            {
                "FC": label,
                "median |r(FC, FD)|": stats["median_abs_r"],
                "edges with p < 0.05": stats["fraction_significant"],
                "runs": stats["n_samples"],
            }
        )
    motion = pd.DataFrame(
        {
            "measure": ["mean FD (mm)", "censored share", "parcel tSNR"],
            "median": [
                np.nanmedian(fd),
                np.nanmedian(table["censored_fraction"]),
                np.nanmedian(table["tsnr_mean"]),
            ],
            "max": [
                np.nanmax(fd),
                np.nanmax(table["censored_fraction"]),
                np.nanmax(table["tsnr_mean"]),
            ],
        }
    )
    return (
        "<h3>fMRI motion and QC-FC</h3>"
        + _table(motion)
        + "<p>QC-FC: correlation across runs between each edge's FC and mean framewise "
        "displacement. Near 0 and about 5% of edges at p &lt; 0.05 means motion no longer "
        "drives FC.</p>" + _table(pd.DataFrame(rows))
    )


def build_report(
    summary_path: str,
    per_fold_path: str,
    qc_path: str,
    folds_path: str,
    skipped: dict[str, str],
    descriptions: dict[str, str],
    out_html: str,
    fmri_cache: str | None = None,
    qc_link: str = "../qc/qc.tsv",
) -> None:
    """Write ``index.html``: dataset and QC summary, results table with spread, fold-wise figure."""
    summary = pd.read_csv(summary_path, sep="\t")
    per_fold = pd.read_csv(per_fold_path, sep="\t")
    qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
    folds = pd.read_csv(folds_path, sep="\t", dtype={"subject": str})

    included = qc[qc["status"] == "included"]
    dataset = (
        included.groupby("modality")
        .agg(samples=("sample_id", "nunique"), subjects=("subject", "nunique"))
        .reset_index()
    )
    groups = (
        included.drop_duplicates("subject").groupby(["site", "label"]).size().unstack(fill_value=0)
        if len(included)
        else pd.DataFrame()
    )
    excluded = qc[qc["status"] != "included"][["modality", "sample_id", "reason"]]

    results = pd.DataFrame({"method": summary["method"], "folds": summary["n_folds"]})
    for metric in ("balanced_accuracy", "auc", "accuracy", "sensitivity", "specificity", "f1"):
        results[metric.replace("_", " ")] = [
            f"{m:.3f} ± {s:.3f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(m) else "n/a"
            for m, s, lo, hi in zip(
                summary[f"{metric}_mean"],
                summary[f"{metric}_sd"].fillna(0),
                summary[f"{metric}_ci_low"].fillna(np.nan),
                summary[f"{metric}_ci_high"].fillna(np.nan),
                strict=True,
            )
        ]
    results.insert(1, "description", [descriptions.get(m, "") for m in summary["method"]])

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>brainfuse report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>brainfuse report</h1>",
        f"<p class='muted'>brainfuse {escape(__version__)} · "
        f"{folds['fold'].nunique()} outer folds, "
        "grouped by subject, stratified by label; model selection on a validation split inside "
        "each training fold; each test fold used once.</p>",
        "<h2>Dataset</h2>",
        _table(dataset),
        "<p>Subjects per site and label (included samples):</p>",
        _table(groups.reset_index()) if len(groups) else "<p>none</p>",
        "<h2>Quality control</h2>",
        f"<p>{len(included)} samples included, {len(excluded)} excluded. "
        f"Full table: <a href='{escape(qc_link)}'>qc.tsv</a>.</p>",
        _table(excluded, ["excluded"] * len(excluded))
        if len(excluded)
        else "<p>No exclusions.</p>",
        "<h2>Results</h2>",
        "<p>Mean ± SD over test folds [95% t-interval]. Chance balanced accuracy is 0.5.</p>",
        _table(results),
        f"<figure><img alt='balanced accuracy per fold' src='{fold_spread_figure(per_fold)}'>"
        "<figcaption>Balanced accuracy of each test fold.</figcaption></figure>",
    ]
    if skipped:
        skipped_frame = pd.DataFrame({"method": list(skipped), "reason": list(skipped.values())})
        parts += ["<h2>Methods not run</h2>", _table(skipped_frame)]
    parts.append("</body></html>")
    atomic.write_text(out_html, "\n".join(parts))


def load_skipped(path: str | Path) -> dict[str, str]:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}
