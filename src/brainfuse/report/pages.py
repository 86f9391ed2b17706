"""The HTML report: ``index.html`` and one page per method, self-contained (figures embedded as
data URIs, relative links only, no scripts or network resources) and with every piece of text
that comes from data or configuration escaped.

``index.html``: dataset and QC summary (FD distribution, exclusions, QC-FC), the comparison of
all methods and baselines (mean ± SD over test folds with 95% t-intervals, fold spread, ROC
curves), a label-permutation test of the best model against chance, the group FC difference,
an overview of the biomarkers of each method and, on data with a known ground truth (the demo),
how well each method recovered the planted parcels and edges.

``<method>.html``: the method's metrics per fold and its biomarkers (see
:mod:`brainfuse.explain`): top parcels on a glass brain and as a table (Schaefer names,
Yeo-7 networks), top edges, network/band/modality shares, stability across folds, MoE routing
by class where available, and recovery of the ground truth.
"""

from __future__ import annotations

import base64
import io
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from scipy import stats

from brainfuse import __version__
from brainfuse.core import atomic

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1240px;
margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2em;margin-top:1.6em}
h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d5dae4;padding:.3em .6em;text-align:right}
th{background:#f1f4f9}td:first-child,th:first-child{text-align:left}
td.text{text-align:left;max-width:22em}
table.results{font-size:.85em}table.results td{white-space:nowrap}
table.results td.text{white-space:normal}
.muted{color:#667085}.excluded{color:#b42318}.baseline{background:#fafbfd}
.best{background:#eef4ff;font-weight:600}
.ok{color:#067647;font-weight:600}.warn{color:#b54708;font-weight:600}
.callout{border-left:4px solid #3b5bdb;background:#f5f7ff;padding:.5em 1em;margin:1em 0}
figure{margin:1em 0}figcaption{color:#667085;font-size:.9em}
img{max-width:100%;height:auto}
nav{display:flex;flex-wrap:wrap;gap:.2em 1.1em}
"""

METRIC_NAMES = ("balanced_accuracy", "auc", "accuracy", "sensitivity", "specificity", "f1")
KIND_LABELS = {
    "haufe": "Haufe activation patterns of the linear model",
    "integrated_gradients": "integrated gradients",
}


# --------------------------------------------------------------------------- HTML helpers


def _fig_to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(
    frame: pd.DataFrame,
    classes: list[str] | None = None,
    raw_columns: Sequence[str] = (),
    text_columns: Sequence[str] = (),
    table_class: str = "",
) -> str:
    """An HTML table; cells are escaped except in ``raw_columns`` (already-built HTML)."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = []
    columns = list(frame.columns)
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{escape(classes[i])}"' if classes and classes[i] else ""
        cells = []
        for column, value in zip(columns, row, strict=True):
            content = str(value) if column in raw_columns else escape(_fmt(value))
            kind = ' class="text"' if column in text_columns else ""
            cells.append(f"<td{kind}>{content}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    attr = f" class='{escape(table_class, quote=True)}'" if table_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    if value is None:
        return "n/a"
    return str(value)


def _img(src: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{escape(alt, quote=True)}' src='{src}'>{cap}</figure>"


def _png(path: str | Path | None) -> str | None:
    if path and Path(path).exists():
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
    return None


def _href(target: str | Path, page_dir: Path) -> str:
    """A relative, URL-quoted link from ``page_dir`` to ``target``."""
    import os

    rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    return quote(Path(rel).as_posix())


def _page(title: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{escape(title)}</title>",
            f"<style>{STYLE}</style></head><body>",
            *body,
            f"<p class='muted'>brainfuse {escape(__version__)}</p>",
            "</body></html>",
        ]
    )


def _p_text(p: float | None) -> str:
    """``p = 0.013``, ``p < 0.0001`` or ``p = n/a``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "p = n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"


# --------------------------------------------------------------------------- statistics


def permutation_test(
    predictions: pd.DataFrame,
    best: str,
    methods: Sequence[str] | None = None,
    n_permutations: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Label-permutation test of pooled test predictions against chance.

    Subjects' labels are permuted (all samples of a subject move together, so several runs of
    one subject do not count as independent evidence) and the pooled balanced accuracy (of
    ``y_pred``) and AUC (of ``y_score``) are recomputed for ``best`` and for every method in
    ``methods`` under the same permutation. ``p`` compares ``best``'s statistic with its own
    null distribution; ``p_max`` with the distribution of the maximum over ``methods``, which
    accounts for having picked the best of several methods. ``p = (1 + #{null >= observed}) /
    (1 + n_permutations)``.
    """
    methods = list(dict.fromkeys([best, *(methods or [])]))
    subjects = sorted(set(predictions["subject"].astype(str)))
    by_subject = predictions.assign(subject=predictions["subject"].astype(str))
    labels = by_subject.groupby("subject")["y_true"].first().reindex(subjects)
    labels = labels.to_numpy().astype(int)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(labels) for _ in range(n_permutations)])
    position = {s: i for i, s in enumerate(subjects)}
    observed, null = {}, {}
    for method in methods:
        frame = predictions[predictions["method"] == method]
        if frame.empty or frame["y_true"].nunique() < 2:
            continue
        idx = np.array([position[s] for s in frame["subject"].astype(str)])
        y = frame["y_true"].to_numpy().astype(int)
        pred = frame["y_pred"].to_numpy().astype(int)
        ranks = stats.rankdata(frame["y_score"].to_numpy(dtype=float))
        observed[method] = (_bacc(y[None], pred)[0], _auc(y[None], ranks)[0])
        yp = perms[:, idx]
        null[method] = (_bacc(yp, pred), _auc(yp, ranks))
    if best not in observed:
        return {"method": best, "available": False}
    out: dict[str, Any] = {
        "method": best,
        "available": True,
        "n_permutations": int(n_permutations),
        "n_subjects": int(by_subject.loc[by_subject["method"] == best, "subject"].nunique()),
        "n_samples": int((predictions["method"] == best).sum()),
        "methods_compared": sorted(null),
    }
    for k, name in enumerate(("balanced_accuracy", "auc")):
        obs = observed[best][k]
        own = null[best][k]
        maxed = np.nanmax(np.stack([null[m][k] for m in null]), axis=0)
        out[name] = {
            "observed": float(obs),
            "null_mean": float(np.nanmean(own)),
            "p": float((1 + np.sum(own >= obs - 1e-12)) / (1 + n_permutations)),
            "p_max": float((1 + np.sum(maxed >= obs - 1e-12)) / (1 + n_permutations)),
        }
    return out


def _bacc(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Balanced accuracy of fixed predictions against each row of label matrix ``y``."""
    pos = y.sum(1)
    neg = y.shape[1] - pos
    tp = (y * pred).sum(1)
    tn = ((1 - y) * (1 - pred)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (tp / pos + tn / neg) / 2


def _auc(y: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of fixed score ranks against each row of label matrix ``y``."""
    pos = y.sum(1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((y * ranks).sum(1) - pos * (pos + 1) / 2) / (pos * neg)


def best_method(summary: pd.DataFrame) -> str | None:
    """The method with the highest mean balanced accuracy (then AUC), the majority baseline
    excluded."""
    candidates = summary[summary["method"] != "majority"]
    if candidates.empty:
        return None
    ordered = candidates.assign(
        _b=candidates["balanced_accuracy_mean"].fillna(-1), _a=candidates["auc_mean"].fillna(-1)
    ).sort_values(["_b", "_a"], ascending=False, kind="stable")
    return str(ordered["method"].iloc[0])


# --------------------------------------------------------------------------- sections


def fold_spread_figure(per_fold: pd.DataFrame, metric: str = "balanced_accuracy") -> str:
    """Per-fold metric of each method as points over a box (data URI)."""
    from brainfuse.report.figures import fold_spread_figure as draw

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fold_spread.png"
        draw(per_fold, path, metric)
        return _png(path) or ""


def fmri_qc_section(fmri_cache: str) -> str:
    """Motion summary and QC-FC before and after denoising (included runs)."""
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.fmri.qcfc import qc_fc

    cache = read_cache(
        fmri_cache,
        columns=["fc", "fc_raw", "mean_fd", "censored_fraction", "tsnr_mean", "sample_id"],
    )
    table = cache.table
    if len(table) == 0:
        return "<h3>fMRI motion and QC-FC</h3><p>No included fMRI runs.</p>"
    fd = pd.to_numeric(table["mean_fd"], errors="coerce").to_numpy(dtype=float)
    raw_ok = np.isfinite(cache.arrays["fc_raw"]).any(axis=(1, 2)) & np.isfinite(fd)
    rows = []
    for label, key in (("before denoising", "fc_raw"), ("after denoising", "fc")):
        result = qc_fc(cache.arrays[key][raw_ok], fd[raw_ok])
        rows.append(
            {
                "FC": label,
                "median |r(FC, FD)|": result["median_abs_r"],
                "edges with p < 0.05": result["fraction_significant"],
                "runs": result["n_samples"],
            }
        )

    def column(name):
        return pd.to_numeric(table[name], errors="coerce")

    motion = pd.DataFrame(
        {
            "measure": ["mean FD (mm)", "censored share", "parcel tSNR"],
            "median": [
                np.nanmedian(fd),
                column("censored_fraction").median(),
                column("tsnr_mean").median(),
            ],
            "max": [np.nanmax(fd), column("censored_fraction").max(), column("tsnr_mean").max()],
        }
    )
    return (
        "<h3>fMRI motion and QC-FC</h3>"
        + _table(motion)
        + "<p>QC-FC: correlation across runs between each edge's FC and mean framewise "
        "displacement. Near 0 and about 5% of edges at p &lt; 0.05 means motion no longer "
        "drives FC. Runs given as pre-parcellated tables have no raw FC and are left out.</p>"
        + _table(pd.DataFrame(rows))
    )


def _results_table(
    summary: pd.DataFrame,
    descriptions: Mapping[str, str],
    families: Mapping[str, str],
    pages: Mapping[str, str],
    best: str | None,
) -> str:
    results = pd.DataFrame(
        {
            "method": [
                f"<a href='{escape(pages[m], quote=True)}'>{escape(m)}</a>"
                if m in pages
                else escape(m)
                for m in summary["method"]
            ],
            "description": [descriptions.get(m, "") for m in summary["method"]],
            "kind": [families.get(m, "") for m in summary["method"]],
            "folds": summary["n_folds"],
        }
    )
    for metric in METRIC_NAMES:
        if f"{metric}_mean" not in summary:
            continue
        results[metric.replace("_", " ")] = [
            f"{m:.3f} ± {s:.3f}<br><span class='muted'>[{max(lo, 0):.2f}, {min(hi, 1):.2f}]</span>"
            if np.isfinite(m) and np.isfinite(s)
            else (f"{m:.3f}" if np.isfinite(m) else "n/a")
            for m, s, lo, hi in zip(
                summary[f"{metric}_mean"],
                summary[f"{metric}_sd"],
                summary[f"{metric}_ci_low"],
                summary[f"{metric}_ci_high"],
                strict=True,
            )
        ]
    classes = [
        "best" if m == best else ("baseline" if families.get(m) == "baseline" else "")
        for m in summary["method"]
    ]
    metric_columns = [m.replace("_", " ") for m in METRIC_NAMES]
    return _table(
        results,
        classes,
        raw_columns=("method", *metric_columns),
        text_columns=("description",),
        table_class="results",
    )


def _permutation_html(test: Mapping[str, Any] | None) -> str:
    if not test or not test.get("available"):
        return "<p>No permutation test: no method has test predictions of both classes.</p>"
    ba, auc = test["balanced_accuracy"], test["auc"]
    verdict = (
        "<span class='ok'>better than chance</span>"
        if ba["p_max"] < 0.05 or auc["p_max"] < 0.05
        else "<span class='warn'>not distinguishable from chance</span>"
    )
    return (
        "<div class='callout'>"
        f"<p>Best model by mean balanced accuracy: <b>{escape(test['method'])}</b>. "
        f"Its pooled test predictions ({test['n_samples']} samples of {test['n_subjects']} "
        f"subjects, all folds together) reach a balanced accuracy of {ba['observed']:.3f} "
        f"(permutation {_p_text(ba['p'])}; chance {ba['null_mean']:.2f}) and an AUC of "
        f"{auc['observed']:.3f} ({_p_text(auc['p'])}). Corrected for choosing the best of "
        f"{len(test['methods_compared'])} methods (maximum statistic over methods under the "
        f"same permutation): {_p_text(ba['p_max'])} (balanced accuracy), "
        f"{_p_text(auc['p_max'])} (AUC): {verdict}.</p>"
        f"<p class='muted'>Test: {test['n_permutations']} permutations of the subjects' labels "
        "over the pooled test predictions (each subject's samples keep one label); the "
        "predictions themselves are not recomputed, so this tests the association between "
        "the held-out predictions and the labels, not the training procedure (which would "
        "need retraining per permutation). Pooling scores across folds assumes their scales "
        "are comparable.</p></div>"
    )


def _recovery_rows(method: str, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for block, entry in (summary.get("ground_truth") or {}).items():
        row: dict[str, Any] = {"method": method, "input": block, "modality": entry["modality"]}
        for what in ("parcels", "edges"):
            if what in entry:
                e = entry[what]
                row[f"{what} P@{e['k']}"] = (
                    f"{e['precision']:.2f} (chance {e['chance']:.3f}, {_p_text(e['p_value'])})"
                )
            else:
                row[f"{what} P@10"] = "n/a"
        rows.append(row)
    return rows


def _recovery_sentence(method: str, summary: Mapping[str, Any]) -> str:
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
            f"edges (chance {edge['chance'] * edge['k']:.2f}, {_p_text(edge['p_value'])})"
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
            f"{expected:.1f}; hypergeometric {_p_text(e['p_value'])}): {verdict}"
            f"{edge_text}."
        )
    return " ".join(parts)


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
    if fold_cols:
        out["rank per fold"] = [
            ", ".join(str(int(ranks[c].loc[i])) for c in fold_cols) for i in rows.index
        ]
    return out


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
    if (rows["band"].astype(str) != "").any():
        out.insert(1, "band", rows["band"].to_numpy())
    return out


# --------------------------------------------------------------------------- method page


def _method_page(
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
) -> tuple[str, dict[str, Any] | None]:
    """The HTML of ``<method>.html`` and the method's attribution summary (if any)."""
    page_dir = out_html.parent
    body = [
        f"<nav><a href='{escape(index_href, quote=True)}'>← back to the report</a></nav>",
        f"<h1>{escape(method)}</h1>",
        f"<p>{escape(description)}</p>",
        f"<p class='muted'>{escape(family)} · stages: {escape(', '.join(stages) or 'n/a')}</p>",
        "<h2>Performance</h2>",
    ]
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
                        "95% CI low": max(lo, 0.0) if np.isfinite(lo) else lo,
                        "95% CI high": min(hi, 1.0) if np.isfinite(hi) else hi,
                    }
                )
        body.append(
            _table(pd.DataFrame(parts))
            + "<p class='muted'>Mean and SD over test folds; 95% t-interval over folds, "
            "clipped to [0, 1].</p>"
            if parts
            else "<p>No metrics.</p>"
        )
    folds = per_fold[per_fold["method"] == method].drop(columns=["method"])
    if len(folds):
        body += ["<p>Per test fold:</p>", _table(folds)]

    body.append("<h2>Biomarkers</h2>")
    summary = None
    if not biomarkers or not Path(biomarkers.get("summary", "")).exists():
        body.append(
            "<p>No biomarkers: the majority baseline predicts the training folds' most "
            "frequent class for everyone (chance level).</p>"
            if method == "majority"
            else "<p>No attribution was computed for this method.</p>"
        )
        return _page(f"brainfuse: {method}", body), None
    from brainfuse.explain.tables import read_table

    summary = json.loads(Path(biomarkers["summary"]).read_text())
    if summary.get("kind") == "none" or not summary.get("blocks"):
        notes = "; ".join(summary.get("notes") or []) or "no attribution available"
        body.append(f"<p>No biomarkers: {escape(notes)}.</p>")
        return _page(f"brainfuse: {method}", body), summary
    importance = read_table(biomarkers["importance"])
    edges = read_table(biomarkers["edges"])
    body.append(
        "<p>Attribution ("
        + escape(KIND_LABELS.get(summary["kind"], summary["kind"]))
        + "): "
        + escape("; ".join(summary.get("notes") or []))
        + ". Importance is a share: per fold, magnitudes are normalised to sum to 1 within "
        "each input, a parcel's importance in a connectivity input is the sum over its edges, "
        "and shares are averaged over folds.</p>"
    )
    error = summary.get("ig_completeness_error_max")
    if error is not None and error > 0.1:
        body.append(
            f"<p class='muted'>Integrated gradients add up to the change in log-odds only "
            f"approximately here (largest relative completeness error {error:.2f}): the model "
            "makes discrete choices (top-k edges or expert routing) along the integration "
            "path. Read the ranking, not the exact values.</p>"
        )
    links = [
        f"<a href='{_href(biomarkers[k], page_dir)}'>{escape(Path(biomarkers[k]).name)}</a>"
        for k in ("importance", "edges", "summary")
        if biomarkers.get(k) and Path(biomarkers[k]).exists()
    ]
    if links:
        body.append(f"<p>Tables: {' · '.join(links)}</p>")
    recovery = _recovery_sentence(method, summary)
    if recovery:
        body.append(
            "<div class='callout'><p><b>Ground truth (demo).</b> " + recovery + "</p>"
            "<p class='muted'>Precision at 10: the share of the 10 top-ranked parcels (edges) "
            "that carry a planted effect; chance is the planted share of all parcels "
            "(edges).</p></div>"
        )
    headline = summary.get("headline_block")
    figures = [
        (
            "top_parcels",
            f"Top 10 parcels of input '{headline}' at the atlas centroids; marker size and "
            "colour (percent of the input's importance) run from the 10th to the 1st.",
        ),
        (
            "top_edges",
            "Top 20 edges; red: higher pattern/attribution towards the positive "
            "class" + (f" ({positive})" if positive else "") + ", blue: towards the other class; "
            "nodes coloured by Yeo-7 network.",
        ),
        (
            "networks",
            "Share of importance per Yeo-7 network (bars) against the network's share "
            "of parcels (ticks); bands and inputs where the model has them.",
        ),
    ]
    for key, caption in figures:
        src = _png(biomarkers.get(key))
        if src:
            body.append(_img(src, f"{method} {key.replace('_', ' ')}", caption))
    for block in summary["blocks"]:
        info = summary["blocks"][block]
        body.append(
            f"<h3>Input '{escape(block)}' ({escape(info['modality'])}, {escape(info['kind'])})</h3>"
        )
        stab = info["stability"]
        parts = []
        if stab.get("spearman_mean") is not None:
            parts.append(
                f"mean Spearman correlation of parcel importance between folds "
                f"{stab['spearman_mean']:.2f}"
            )
        if stab.get("top_k_overlap_mean") is not None:
            parts.append(
                f"mean top-{stab['top_k']} parcel overlap {stab['top_k_overlap_mean']:.2f} "
                f"(chance {stab['chance_overlap']:.2f})"
            )
        edge_stab = info.get("edge_stability") or {}
        if edge_stab.get("top_k_overlap_mean") is not None:
            parts.append(
                f"top-{edge_stab['top_k']} edge overlap {edge_stab['top_k_overlap_mean']:.2f}"
            )
        if parts:
            body.append(f"<p>Stability across folds: {escape('; '.join(parts))}.</p>")
        truth = (summary.get("ground_truth") or {}).get(block) or {}
        top_parcels = _top_parcels(importance, block)
        if "parcels" in truth:
            hits = set(truth["parcels"]["hits"])
            top_parcels["planted (demo)"] = [
                "yes" if p in hits else "" for p in top_parcels["parcel"]
            ]
        body += [
            "<p>Top parcels (importance: share of the input's total, mean over folds):</p>",
            _table(top_parcels, text_columns=("parcel", "network")),
        ]
        if info["kind"] == "edges":
            top_edges = _top_edges(edges, block)
            if "edges" in truth and "band" not in top_edges:
                hits = {tuple(sorted(h)) for h in truth["edges"]["hits"]}
                top_edges["planted (demo)"] = [
                    "yes" if tuple(sorted((a, b))) in hits else ""
                    for a, b in zip(top_edges["parcel i"], top_edges["parcel j"], strict=True)
                ]
            body += [
                "<p>Top edges:</p>",
                _table(top_edges, text_columns=("parcel i", "parcel j")),
            ]
        pairs = pd.DataFrame(info.get("network_pairs") or [])
        if len(pairs):
            pairs = pairs.head(5).assign(
                networks=[" – ".join(p) for p in pairs["networks"].head(5)]
            )
            pairs = pairs.rename(columns={"enrichment": "share / edge share"})
            body += ["<p>Most enriched network pairs (edges):</p>", _table(pairs)]
        networks = pd.DataFrame(info["networks"])
        if len(networks):
            networks = networks.rename(columns={"enrichment": "share / parcel share"})
            body += ["<p>Networks:</p>", _table(networks)]
        if info.get("bands"):
            bands = pd.DataFrame(
                [
                    {"band": b, "share": v["share"], "SD over folds": v["sd"]}
                    for b, v in info["bands"].items()
                ]
            )
            body += ["<p>Frequency bands (sum of importance per band):</p>", _table(bands)]
    if len(summary["blocks"]) > 1:
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
        body += ["<h3>Inputs and modalities</h3>", _table(shares)]
        if summary["kind"] == "haufe":
            body.append(
                "<p class='muted'>For a linear model, these totals grow with the number of "
                "features of each input; compare inputs within a row of the tables above.</p>"
            )
    routing = summary.get("routing")
    if routing:
        body.append("<h3>Mixture-of-experts routing</h3>")
        src = _png(biomarkers.get("routing"))
        if src is None:
            from brainfuse.report.figures import routing_figure

            with tempfile.TemporaryDirectory() as tmp:
                src = _png(routing_figure(routing, Path(tmp) / "routing.png"))
        body.append(
            _img(
                src or "",
                f"{method} routing",
                "Mean share of each MoE's tokens routed to each "
                "expert, by class (test samples, all fusion blocks and folds).",
            )
        )
        records = pd.DataFrame(routing["records"])
        if len(records):
            body.append(_table(records))
    return _page(f"brainfuse: {method}", body), summary


# --------------------------------------------------------------------------- the report


def build_report(
    summary_path: str,
    per_fold_path: str,
    qc_path: str,
    folds_path: str,
    skipped: dict[str, str],
    descriptions: dict[str, str],
    out_html: str,
    fmri_cache: str | None = None,
    qc_link: str | None = None,
    predictions_path: str | None = None,
    figures: Mapping[str, str] | None = None,
    biomarkers: Mapping[str, Mapping[str, str]] | None = None,
    method_pages: Mapping[str, str] | None = None,
    truth_path: str | None = None,
    stages: Mapping[str, Sequence[str]] | None = None,
    families: Mapping[str, str] | None = None,
    positive: str | None = None,
    n_permutations: int = 5000,
    seed: int = 0,
) -> None:
    """Write ``index.html`` and one page per method.

    Parameters
    ----------
    summary_path, per_fold_path, qc_path, folds_path : str
        ``eval/summary.tsv``, ``eval/metrics_per_fold.tsv``, ``qc/qc.tsv``, ``folds/folds.tsv``.
    skipped, descriptions : dict
        Methods not run (name -> reason) and one-line descriptions of the others.
    out_html : str
        ``reports/index.html``; method pages go beside it unless ``method_pages`` says where.
    fmri_cache : str, optional
        For the QC-FC table.
    qc_link : str, optional
        Link target of the QC table (default: ``qc_path``, relative to the page).
    predictions_path : str, optional
        ``eval/predictions.tsv`` (permutation test; ROC curves when not in ``figures``).
    figures : mapping, optional
        PNG files to embed: ``roc``, ``fold_spread``, ``fc_difference``, ``fd_distribution``,
        ``exclusions``. ``fold_spread`` and ``roc`` are drawn here when missing.
    biomarkers : mapping, optional
        Method -> ``summary``, ``importance``, ``edges`` (attribution outputs) and the figures
        ``top_parcels``, ``top_edges``, ``networks``, ``routing`` (optional).
    method_pages : mapping, optional
        Method -> output path of its page (default ``<out dir>/<method>.html`` for every
        method in the summary).
    truth_path : str, optional
        The demo's ``ground_truth.json``; only its presence adds the recovery section.
    stages, families : mapping, optional
        Stages of each method; ``baseline`` or ``deep`` per method.
    positive : str, optional
        The positive class (captions).
    n_permutations, seed : int
        Label-permutation test of the best model.
    """
    out = Path(out_html)
    page_dir = out.parent
    figures = dict(figures or {})
    biomarkers = dict(biomarkers or {})
    stages = dict(stages or {})
    summary = pd.read_csv(summary_path, sep="\t")
    per_fold = pd.read_csv(per_fold_path, sep="\t")
    qc = pd.read_csv(qc_path, sep="\t", dtype=str, keep_default_na=False)
    folds = pd.read_csv(folds_path, sep="\t", dtype={"subject": str})
    predictions = (
        pd.read_csv(predictions_path, sep="\t", dtype={"subject": str})
        if predictions_path and Path(predictions_path).exists()
        else None
    )
    families = dict(families or {})
    for method in summary["method"]:
        families.setdefault(method, _family(method))
    pages = dict(method_pages or {m: str(page_dir / f"{m}.html") for m in summary["method"]})
    page_links = {m: _href(p, page_dir) for m, p in pages.items()}
    best = best_method(summary)
    has_truth = bool(truth_path) and Path(truth_path).exists()

    included = qc[qc["status"] == "included"]
    dataset = (
        included.groupby("modality")
        .agg(samples=("sample_id", "nunique"), subjects=("subject", "nunique"))
        .reset_index()
        if len(included)
        else pd.DataFrame(columns=["modality", "samples", "subjects"])
    )
    site = "site" if "site" in included.columns else None
    groups = (
        included.drop_duplicates("subject")
        .groupby([site or "modality", "label"])
        .size()
        .unstack(fill_value=0)
        if len(included) and "label" in included.columns
        else pd.DataFrame()
    )
    excluded = qc[qc["status"] != "included"][["modality", "sample_id", "reason"]]

    with tempfile.TemporaryDirectory() as tmp:
        from brainfuse.report import figures as draw

        if "fold_spread" not in figures or not Path(figures["fold_spread"]).exists():
            figures["fold_spread"] = draw.fold_spread_figure(per_fold, Path(tmp) / "spread.png")
        if predictions is not None and ("roc" not in figures or not Path(figures["roc"]).exists()):
            figures["roc"] = draw.roc_figure(predictions, Path(tmp) / "roc.png")
        embedded = {k: _png(v) for k, v in figures.items()}

        # method pages first: the index summarises what they found
        method_summaries: dict[str, dict[str, Any] | None] = {}
        for method, page in pages.items():
            row = summary[summary["method"] == method]
            html, attribution = _method_page(
                method,
                Path(page),
                _href(out, Path(page).parent),
                descriptions.get(method, ""),
                families.get(method, ""),
                stages.get(method, []),
                row.iloc[0] if len(row) else None,
                per_fold,
                biomarkers.get(method),
                positive,
            )
            atomic.write_text(page, html)
            method_summaries[method] = attribution

    permutation = None
    if predictions is not None and best is not None:
        compared = [m for m in summary["method"] if m != "majority"]
        permutation = permutation_test(predictions, best, compared, n_permutations, seed)

    qc_href = escape(qc_link if qc_link is not None else _href(qc_path, page_dir), quote=True)
    parts = [
        "<h1>brainfuse report</h1>",
        f"<p class='muted'>{folds['fold'].nunique()} outer folds, grouped by subject, "
        "stratified by label; model selection on a validation split inside each training "
        "fold; each test fold used once. Positive class: "
        f"{escape(str(positive)) if positive else 'n/a'}.</p>",
        "<nav>"
        + "".join(f"<a href='{escape(page_links[m], quote=True)}'>{escape(m)}</a>" for m in pages)
        + "</nav>",
        "<h2>Dataset</h2>",
        _table(dataset),
        f"<p>Subjects per {'site' if site else 'modality'} and label (included samples):</p>",
        _table(groups.reset_index()) if len(groups) else "<p>none</p>",
        "<h2>Quality control</h2>",
        f"<p>{len(included)} samples included, {len(excluded)} excluded. "
        f"Full table: <a href='{qc_href}'>qc.tsv</a>.</p>",
        _table(excluded, ["excluded"] * len(excluded), text_columns=("reason",))
        if len(excluded)
        else "<p>No exclusions.</p>",
    ]
    for key, alt, caption in (
        (
            "fd_distribution",
            "FD distribution",
            "Mean framewise displacement of every fMRI run (included and excluded).",
        ),
        ("exclusions", "exclusions by reason", "Excluded samples by reason and modality."),
    ):
        if embedded.get(key) and not (key == "exclusions" and excluded.empty):
            parts.append(_img(embedded[key], alt, caption))
    if fmri_cache and Path(fmri_cache).exists():
        parts.append(fmri_qc_section(fmri_cache))

    parts += [
        "<h2>Results</h2>",
        "<p>Mean ± SD over test folds [95% t-interval over folds, clipped to [0, 1]]. Chance "
        "balanced accuracy and AUC are 0.5. Baselines are shaded; the best model (mean "
        "balanced accuracy) is highlighted. Method names link to their pages.</p>",
        _results_table(summary, descriptions, families, page_links, best),
        _img(
            embedded["fold_spread"] or "",
            "balanced accuracy per fold",
            "Balanced accuracy of each test fold.",
        ),
    ]
    if embedded.get("roc"):
        parts.append(
            _img(
                embedded["roc"],
                "ROC curves",
                "ROC curves: each test fold (grey) and the "
                "pooled test predictions of all folds (blue); dashed: chance.",
            )
        )
    parts += ["<h3>Is the best model better than chance?</h3>", _permutation_html(permutation)]
    if embedded.get("fc_difference"):
        parts += [
            "<h2>Group difference in functional connectivity</h2>",
            _img(
                embedded["fc_difference"],
                "FC group difference",
                "Mean Fisher-z FC of the positive class minus the other class (all included "
                "runs, averaged per subject first), parcels ordered by Yeo-7 network. "
                "Descriptive: computed on all subjects, not cross-validated.",
            ),
        ]
    parts.append(_biomarker_overview(method_summaries, page_links))
    if has_truth:
        parts.append(_truth_section(method_summaries, summary))
    if skipped:
        skipped_frame = pd.DataFrame({"method": list(skipped), "reason": list(skipped.values())})
        parts += ["<h2>Methods not run</h2>", _table(skipped_frame, text_columns=("reason",))]
    atomic.write_text(out, _page("brainfuse report", parts))


def _family(method: str) -> str:
    try:
        from brainfuse.methods.catalog import METHODS

        spec = METHODS.get(method)
    except Exception:  # pragma: no cover - registry import problems must not stop a report
        spec = None
    if spec is None:
        return ""
    return "baseline" if spec.family == "sklearn" else "deep"


def _biomarker_overview(
    summaries: Mapping[str, dict[str, Any] | None], links: Mapping[str, str]
) -> str:
    rows = []
    for method, summary in summaries.items():
        if not summary or not summary.get("blocks"):
            continue
        block = summary.get("headline_block")
        info = summary["blocks"].get(block, {})
        ranked = sorted(info.get("networks", []), key=lambda n: -(n.get("enrichment") or 0))
        top = [f"{n['network']} ({n['enrichment']:.1f}×)" for n in ranked[:2]]
        stab = info.get("stability", {})
        rows.append(
            {
                "method": f"<a href='{escape(links.get(method, ''), quote=True)}'>"
                f"{escape(method)}</a>",
                "attribution": summary.get("kind", ""),
                "input": block,
                "top networks (importance / parcel share)": ", ".join(top),
                "Spearman between folds": stab.get("spearman_mean"),
                "top-10 overlap": stab.get("top_k_overlap_mean"),
                "chance overlap": stab.get("chance_overlap"),
            }
        )
    if not rows:
        return "<h2>Biomarkers</h2><p>No attributions were computed.</p>"
    return (
        "<h2>Biomarkers</h2><p>What each model relies on (details and top parcels on the "
        "method pages). Stability: agreement of parcel importance between outer folds (mean "
        "pairwise Spearman correlation; mean share of top-10 parcels in common).</p>"
        + _table(pd.DataFrame(rows), raw_columns=("method",))
    )


def _truth_section(summaries: Mapping[str, dict[str, Any] | None], summary: pd.DataFrame) -> str:
    rows, sentences = [], []
    for method, s in summaries.items():
        if not s or not s.get("ground_truth"):
            continue
        rows += _recovery_rows(method, s)
        sentence = _recovery_sentence(method, s)
        if sentence and _family(method) == "baseline":
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
    return text + _table(frame)


def load_skipped(path: str | Path) -> dict[str, str]:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


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
        from brainfuse.core.cache import read_cache

        cache = read_cache(fmri_cache, columns=["fc", "sample_id", "subject", "label"])
        networks = cache.metadata.get("roi_networks")
        if not networks:
            from brainfuse.core.atlas import network_of

            networks = [network_of(n) for n in cache.metadata.get("roi_names", [])]
        draw.fc_difference_figure(
            cache.arrays.get("fc", np.zeros((0, len(networks), len(networks)))),
            cache.table["label"],
            cache.table["subject"],
            networks,
            positive,
            out["fc_difference"],
        )
    else:
        draw.message_figure("No fMRI data: no FC group difference.", out["fc_difference"])
    draw.fd_distribution_figure(qc, out["fd_distribution"], fd_threshold)
    draw.exclusions_figure(qc, out["exclusions"])


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
