"""``index.html``: the dataset, QC, the comparison of all methods, and the biomarker overview.

Dataset and QC summary (FD distribution, exclusions, QC-FC), the comparison of all methods and
baselines (mean ± SD over test folds with 95% intervals, the paired difference of each method
to the best classical baseline with a verdict, fold spread, ROC curves), metrics per site and
their spread, label-permutation tests of every method against chance, the group FC difference,
an overview of the biomarkers of each method and, on data with a known ground truth (the
demo), how well each method recovered the planted parcels and edges.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.evaluate import site_spread
from brainfuse.report.curves import curves_section, read_curves
from brainfuse.report.diagnostics import (
    adjustment_section,
    diagnostics_section,
    read_diagnostics,
)
from brainfuse.report.html import (
    METRIC_NAMES,
    html_img,
    html_page,
    html_table,
    p_text,
    png_uri,
    relative_href,
)
from brainfuse.report.method_page import method_page
from brainfuse.report.permutation import permutation_tests
from brainfuse.report.recovery import truth_section


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


def delta_text(row: Mapping[str, Any] | None) -> str:
    """``+0.123 [0.05, 0.20] better``: a row of ``deltas.tsv`` as HTML (verdict coloured)."""
    if row is None:
        return "n/a"
    if row["method"] == row["baseline"]:
        return "<span class='muted'>the reference baseline</span>"
    css = {"better": "ok", "worse": "warn"}.get(str(row["verdict"]), "muted")
    interval = (
        f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
        if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])
        else "[no interval]"
    )
    return (
        f"{row['delta']:+.3f} <span class='muted'>{interval}</span> "
        f"<span class='{css}'>{escape(str(row['verdict']))}</span>"
    )


def delta_rows(deltas: pd.DataFrame | None, metric: str) -> dict[str, dict[str, Any]]:
    """Method -> its row of ``deltas.tsv`` for ``metric`` (empty without deltas)."""
    if deltas is None or deltas.empty:
        return {}
    rows = deltas[deltas["metric"] == metric]
    return {str(r["method"]): r for r in rows.to_dict("records")}


#: the results table's column of the difference to the best baseline
DELTA_COLUMN = "Δ balanced accuracy vs best baseline"


def _results_table(
    summary: pd.DataFrame,
    descriptions: Mapping[str, str],
    families: Mapping[str, str],
    pages: Mapping[str, str],
    best: str | None,
    deltas: pd.DataFrame | None = None,
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
    by_method = delta_rows(deltas, "balanced_accuracy")
    raw = ["method", *(m.replace("_", " ") for m in METRIC_NAMES)]
    if by_method:
        results.insert(4, DELTA_COLUMN, [delta_text(by_method.get(m)) for m in summary["method"]])
        raw.append(DELTA_COLUMN)
    classes = [
        "best" if m == best else ("baseline" if families.get(m) == "baseline" else "")
        for m in summary["method"]
    ]
    return html_table(
        results,
        classes,
        raw_columns=tuple(raw),
        text_columns=("description",),
        table_class="results",
    )


def _permutation_html(tests: Mapping[str, Any] | None, best: str | None) -> str:
    """The best model's test in words, then every method's p-values in a table."""
    if not tests or not tests.get("available") or best not in tests.get("methods", {}):
        reason = (tests or {}).get("reason") or "no method has test predictions of both classes"
        return f"<p>No permutation test: {escape(reason)}.</p>"
    test = {"method": best, **tests, **tests["methods"][best]}
    ba, auc = test["balanced_accuracy"], test["auc"]
    chance = (
        f"chance {ba['null_mean']:.2f}"
        if ba.get("null_mean") is not None
        else "chance level not estimable: no permutation left both classes"
    )
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
        f"(permutation {p_text(ba['p'])}; {chance}) and an AUC of "
        f"{auc['observed']:.3f} ({p_text(auc['p'])}). Corrected for choosing the best of "
        f"{len(test['methods_compared'])} methods (maximum statistic over methods under the "
        f"same permutation): {p_text(ba['p_max'])} (balanced accuracy), "
        f"{p_text(auc['p_max'])} (AUC): {verdict}.</p>"
        f"<p class='muted'>Test: {test['n_permutations']} permutations of the subjects' labels "
        "over the pooled test predictions (each subject's samples keep one label); the "
        "predictions themselves are not recomputed, so this tests the association between "
        "the held-out predictions and the labels, not the training procedure (which would "
        "need retraining per permutation). Pooling scores across folds assumes their scales "
        "are comparable.</p></div>" + _permutation_table(tests)
    )


def _permutation_table(tests: Mapping[str, Any]) -> str:
    """Every tested method: observed statistics, chance, uncorrected and corrected p."""
    rows = []
    for method, result in tests["methods"].items():
        ba, auc = result["balanced_accuracy"], result["auc"]
        significant = min(ba["p_max"], auc["p_max"]) < 0.05
        rows.append(
            {
                "method": method,
                "subjects": result["n_subjects"],
                "balanced accuracy": ba["observed"],
                "p": ba["p"],
                "p corrected": ba["p_max"],
                "AUC": auc["observed"],
                "p (AUC)": auc["p"],
                "p corrected (AUC)": auc["p_max"],
                "verdict": "better than chance"
                if significant
                else "not distinguishable from chance",
            }
        )
    n = len(rows)
    return (
        "<p>Every method against chance, under the same permutations:</p>"
        + html_table(pd.DataFrame(rows))
        + f"<p class='muted'>Multiple comparisons: {n} methods are tested, so even if none "
        f"were better than chance, {0.05 * n:.2f} of them would be expected to reach "
        "p &lt; 0.05 uncorrected. The corrected p "
        "compares each method's statistic with the maximum over all methods under each "
        "permutation (single-step max-statistic correction), which controls the chance of "
        "any false 'better than chance' among them; the verdict uses the corrected p of "
        "balanced accuracy or AUC.</p>"
    )


@dataclass
class ReportInputs:
    """What the ``report`` rule reads and where it writes.

    Attributes
    ----------
    summary_path, per_fold_path, qc_path, folds_path : str
        ``eval/summary.tsv``, ``eval/metrics_per_fold.tsv``, ``qc/qc.tsv``, ``folds/folds.tsv``.
    out_html : str
        ``reports/index.html``; method pages go beside it unless ``method_pages`` says where.
    folds_summary_path : str, optional
        ``folds/folds.json``: how the folds group and why there are that many (e.g. fewer
        than configured with ``cv.n_folds: auto`` after exclusions).
    skipped, descriptions : dict
        Methods not run (name -> reason) and one-line descriptions of the others.
    modality_sections : sequence of str
        HTML sections of the modalities about their own data (e.g. the fMRI QC-FC table,
        :meth:`~brainfuse.modalities.base.Modality.report_section`).
    qc_link : str, optional
        Link target of the QC table (default: ``qc_path``, relative to the page).
    predictions_path : str, optional
        ``eval/predictions.tsv`` (permutation test; ROC curves when not in ``figures``).
    figures : mapping
        PNG files to embed: ``roc``, ``fold_spread``, ``fc_difference``, ``fd_distribution``,
        ``exclusions``. ``fold_spread`` and ``roc`` are drawn here when missing.
    biomarkers : mapping
        Method -> ``summary``, ``importance``, ``edges`` (attribution outputs) and the figures
        ``top_parcels``, ``top_edges``, ``networks``, ``routing`` (optional).
    method_pages : mapping, optional
        Method -> output path of its page (default ``<out dir>/<method>.html`` for every
        method in the summary).
    truth_path : str, optional
        The demo's ``ground_truth.json``; only its presence adds the recovery section.
    stages, families : mapping
        Stages of each method; ``baseline`` or ``deep`` per method.
    harmonise, confounds : optional
        The config's ``harmonise`` section and ``confounds``: what the models were trained
        with (the "Harmonisation and confounds" section; none: no section).
    origins : mapping, optional
        Method -> the catalog method it is (a config variant's origin; itself otherwise): the
        learning curves compare the pre-training of methods with one origin.
    pretraining : mapping, optional
        Method -> what its encoder was pre-trained on (each fold's training subjects, a corpus
        or an ``init`` file; :func:`brainfuse.methods.pretrained.pretraining_summary`), for
        the methods with a pre-training stage.
    positive : str, optional
        The positive class (captions).
    deltas_path, per_site_path : str, optional
        ``eval/deltas.tsv`` (each method's paired difference to the best baseline) and
        ``eval/per_site.tsv`` (metrics per site).
    diagnostics_path : str, optional
        ``eval/diagnostics.tsv``: site, motion and label predictability of each feature set
        before and after in-fold ComBat (:mod:`brainfuse.diagnostics`).
    curves_path, curves_figure : str, optional
        ``eval/curves.tsv`` and its figure (the learning curves, :mod:`brainfuse.curves`);
        the "Learning curves" section appears when the table exists.
    n_permutations, seed : int
        Label-permutation tests of every method.
    """

    summary_path: str
    per_fold_path: str
    qc_path: str
    folds_path: str
    out_html: str
    folds_summary_path: str | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    modality_sections: Sequence[str] = ()
    qc_link: str | None = None
    predictions_path: str | None = None
    figures: Mapping[str, str] = field(default_factory=dict)
    biomarkers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    method_pages: Mapping[str, str] | None = None
    truth_path: str | None = None
    stages: Mapping[str, Sequence[str]] = field(default_factory=dict)
    families: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    harmonise: Mapping[str, Any] | None = None
    confounds: Sequence[str] = ()
    pretraining: Mapping[str, str] = field(default_factory=dict)
    positive: str | None = None
    deltas_path: str | None = None
    per_site_path: str | None = None
    diagnostics_path: str | None = None
    curves_path: str | None = None
    curves_figure: str | None = None
    n_permutations: int = 5000
    seed: int = 0


def build_report(inputs: ReportInputs) -> None:
    """Write ``index.html`` and one page per method (see :class:`ReportInputs`)."""
    out = Path(inputs.out_html)
    page_dir = out.parent
    summary = pd.read_csv(inputs.summary_path, sep="\t")
    per_fold = pd.read_csv(inputs.per_fold_path, sep="\t")
    qc = pd.read_csv(inputs.qc_path, sep="\t", dtype=str, keep_default_na=False)
    folds = pd.read_csv(inputs.folds_path, sep="\t", dtype={"subject": str})
    predictions = (
        pd.read_csv(inputs.predictions_path, sep="\t", dtype={"subject": str})
        if inputs.predictions_path and Path(inputs.predictions_path).exists()
        else None
    )
    deltas = _read_optional(inputs.deltas_path)
    per_site = _read_optional(inputs.per_site_path)
    pages = dict(inputs.method_pages or {m: str(page_dir / f"{m}.html") for m in summary["method"]})
    families = dict(inputs.families)
    page_links = {m: relative_href(p, page_dir) for m, p in pages.items()}
    best = best_method(summary)

    permutation = None
    if predictions is not None and best is not None:
        compared = [m for m in summary["method"] if m != "majority"]
        permutation = permutation_tests(predictions, compared, inputs.n_permutations, inputs.seed)
    evaluation = _Evaluation(deltas, per_site, permutation)

    with tempfile.TemporaryDirectory() as tmp:
        figures = _complete_figures(inputs.figures, per_fold, predictions, Path(tmp))
        if per_site is not None and per_site["site"].nunique() > 1:
            from brainfuse.report.figures import per_site_figure

            figures["per_site"] = per_site_figure(per_site, Path(tmp) / "per_site.png")
        embedded = {k: png_uri(v) for k, v in figures.items()}
        # method pages first: the index summarises what they found
        method_summaries = _write_method_pages(
            inputs, pages, families, summary, per_fold, evaluation
        )
    parts = [
        "<h1>brainfuse report</h1>",
        f"<p class='muted'>{escape(_folds_sentence(folds, inputs.folds_summary_path))} "
        "Model selection on a validation split inside each training fold; each test fold "
        "used once. Positive class: "
        f"{escape(str(inputs.positive)) if inputs.positive else 'n/a'}.</p>",
        "<nav>"
        + "".join(f"<a href='{escape(page_links[m], quote=True)}'>{escape(m)}</a>" for m in pages)
        + "</nav>",
        *_dataset_section(inputs, qc, embedded, page_dir),
        *_results_section(
            summary, inputs.descriptions, families, page_links, best, embedded, evaluation
        ),
        *_pretraining_section(inputs.pretraining, page_links),
        *_per_site_section(per_site, embedded, _group_by(inputs.folds_summary_path)),
        adjustment_section(inputs.harmonise, inputs.confounds),
        diagnostics_section(read_diagnostics(inputs.diagnostics_path)),
        curves_section(
            read_curves(inputs.curves_path),
            inputs.curves_figure,
            origins=inputs.origins,
            pretraining=inputs.pretraining,
        ),
        _biomarker_overview(method_summaries, page_links),
    ]
    if inputs.truth_path and Path(inputs.truth_path).exists():
        parts.append(truth_section(method_summaries, families))
    if inputs.skipped:
        skipped = pd.DataFrame(
            {"method": list(inputs.skipped), "reason": list(inputs.skipped.values())}
        )
        parts += ["<h2>Methods not run</h2>", html_table(skipped, text_columns=("reason",))]
    atomic.write_text(out, html_page("brainfuse report", parts))


@dataclass
class _Evaluation:
    """What the report adds to the summary: ``deltas.tsv``, ``per_site.tsv`` and the
    permutation tests (each None where absent)."""

    deltas: pd.DataFrame | None
    per_site: pd.DataFrame | None
    permutation: Mapping[str, Any] | None


def _read_optional(path: str | None) -> pd.DataFrame | None:
    """A TSV written by ``evaluate`` or None where the report is built without it."""
    if not path or not Path(path).exists():
        return None
    return pd.read_csv(path, sep="\t", dtype={"site": str})


def _group_by(summary_path: str | None) -> str | None:
    """``cv.group_by`` as ``folds.json`` records it (None without it)."""
    if not summary_path or not Path(summary_path).exists():
        return None
    return json.loads(Path(summary_path).read_text()).get("group_by")


def _complete_figures(
    figures: Mapping[str, str], per_fold: pd.DataFrame, predictions: pd.DataFrame | None, tmp: Path
) -> dict[str, str]:
    """``figures`` with the fold spread and ROC curves drawn into ``tmp`` where missing (a
    report built outside the workflow has no ``report_figures`` job)."""
    from brainfuse.report import figures as draw

    figures = dict(figures)
    if "fold_spread" not in figures or not Path(figures["fold_spread"]).exists():
        figures["fold_spread"] = draw.fold_spread_figure(per_fold, tmp / "spread.png")
    if predictions is not None and ("roc" not in figures or not Path(figures["roc"]).exists()):
        figures["roc"] = draw.roc_figure(predictions, tmp / "roc.png")
    return figures


def _write_method_pages(
    inputs: ReportInputs,
    pages: Mapping[str, str],
    families: Mapping[str, str],
    summary: pd.DataFrame,
    per_fold: pd.DataFrame,
    evaluation: _Evaluation,
) -> dict[str, dict[str, Any] | None]:
    """Write every method's page; returns each method's attribution summary (or None)."""
    out = Path(inputs.out_html)
    method_summaries: dict[str, dict[str, Any] | None] = {}
    for method, page in pages.items():
        row = summary[summary["method"] == method]
        html, attribution = method_page(
            method,
            Path(page),
            relative_href(out, Path(page).parent),
            inputs.descriptions.get(method, ""),
            families.get(method, ""),
            inputs.stages.get(method, []),
            row.iloc[0] if len(row) else None,
            per_fold,
            inputs.biomarkers.get(method),
            inputs.positive,
            deltas=evaluation.deltas,
            per_site=evaluation.per_site,
            permutation=(evaluation.permutation or {}).get("methods", {}).get(method),
            pretraining=inputs.pretraining.get(method, ""),
        )
        atomic.write_text(page, html)
        method_summaries[method] = attribution
    return method_summaries


def _folds_sentence(folds: pd.DataFrame, summary_path: str | None) -> str:
    """How many outer folds, how they group, and why that many (``folds.json``)."""
    n_folds = folds["fold"].nunique()
    if not summary_path or not Path(summary_path).exists():
        return f"{n_folds} outer folds, grouped by subject, stratified by label."
    summary = json.loads(Path(summary_path).read_text())
    grouping = "site (leave-site-out)" if summary["group_by"] == "site" else "subject"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["subjects_per_class"].items()))
    return (
        f"{n_folds} outer folds, grouped by {grouping}, stratified by label "
        f"({summary['reason']}; included subjects per class: {counts})."
    )


def subjects_per_group(included: pd.DataFrame, group: str) -> pd.DataFrame:
    """Subjects per ``group`` (site or modality) and label, from QC rows of included samples.

    A subject counts once per label it has samples of: with the label taken from an entity
    (rest and task runs of every subject) each subject is in both columns.
    """
    if included.empty or "label" not in included.columns:
        return pd.DataFrame()
    pairs = included.drop_duplicates(["subject", "label"])
    return pairs.groupby([group, "label"]).size().unstack(fill_value=0)


def _dataset_section(
    inputs: ReportInputs, qc: pd.DataFrame, embedded: Mapping[str, str | None], page_dir: Path
) -> list[str]:
    """Samples and subjects per modality, site and label; exclusions; QC figures."""
    included = qc[qc["status"] == "included"]
    dataset = (
        included.groupby("modality")
        .agg(samples=("sample_id", "nunique"), subjects=("subject", "nunique"))
        .reset_index()
        if len(included)
        else pd.DataFrame(columns=["modality", "samples", "subjects"])
    )
    site = "site" if "site" in included.columns else None
    groups = subjects_per_group(included, site or "modality")
    excluded = qc[qc["status"] != "included"][["modality", "sample_id", "reason"]]
    qc_link = inputs.qc_link
    qc_href = escape(
        qc_link if qc_link is not None else relative_href(inputs.qc_path, page_dir), quote=True
    )
    parts = [
        "<h2>Dataset</h2>",
        html_table(dataset),
        f"<p>Subjects per {'site' if site else 'modality'} and label (included samples):</p>",
        html_table(groups.reset_index()) if len(groups) else "<p>none</p>",
        "<h2>Quality control</h2>",
        f"<p>{len(included)} samples included, {len(excluded)} excluded. "
        f"Full table: <a href='{qc_href}'>qc.tsv</a>.</p>",
        html_table(excluded, ["excluded"] * len(excluded), text_columns=("reason",))
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
            parts.append(html_img(embedded[key], alt, caption))
    parts.extend(inputs.modality_sections)
    return parts


def _results_section(
    summary: pd.DataFrame,
    descriptions: Mapping[str, str],
    families: Mapping[str, str],
    page_links: Mapping[str, str],
    best: str | None,
    embedded: Mapping[str, str | None],
    evaluation: _Evaluation,
) -> list[str]:
    """The comparison of methods, their differences to the best baseline, fold spread, ROC
    curves, permutation tests, FC difference."""
    parts = [
        "<h2>Results</h2>",
        "<p>Mean ± SD over test folds [95% interval: "
        + escape(_interval_method(summary))
        + "]. Chance balanced accuracy and AUC are 0.5. Baselines are shaded; the best model "
        "(mean balanced accuracy) is highlighted. Method names link to their pages.</p>",
        _results_table(summary, descriptions, families, page_links, best, evaluation.deltas),
        *_deltas_section(evaluation.deltas),
        html_img(
            embedded["fold_spread"] or "",
            "balanced accuracy per fold",
            "Balanced accuracy of each test fold.",
        ),
    ]
    if embedded.get("roc"):
        parts.append(
            html_img(
                embedded["roc"],
                "ROC curves",
                "ROC curves: each test fold (grey) and the "
                "pooled test predictions of all folds (blue); dashed: chance.",
            )
        )
    parts += [
        "<h3>Is each model better than chance?</h3>",
        _permutation_html(evaluation.permutation, best),
    ]
    if embedded.get("fc_difference"):
        parts += [
            "<h2>Group difference in functional connectivity</h2>",
            html_img(
                embedded["fc_difference"],
                "FC group difference",
                "Mean Fisher-z FC of the positive class minus the other class (all included "
                "runs, averaged per subject first); parcels grouped by network where the atlas "
                "labels networks, otherwise in atlas order (the axes say which). "
                "Descriptive: computed on all subjects, not cross-validated.",
            ),
        ]
    return parts


def _pretraining_section(
    pretraining: Mapping[str, str], page_links: Mapping[str, str]
) -> list[str]:
    """What each self-supervised method's encoder was pre-trained on (none: no section)."""
    rows = {m: text for m, text in pretraining.items() if text}
    if not rows:
        return []
    names = [
        f"<a href='{escape(page_links[m], quote=True)}'>{escape(m)}</a>"
        if m in page_links
        else escape(m)
        for m in rows
    ]
    table = pd.DataFrame({"method": names, "encoder pre-trained on": list(rows.values())})
    return [
        "<h3>What each encoder was pre-trained on</h3>",
        "<p>Self-supervised pre-training reads no label. In every fold it sees either that "
        "fold's training subjects or a corpus of other subjects, pre-trained on once; the "
        "planning check refuses a corpus holding a subject of this study.</p>",
        html_table(table, raw_columns=("method",), text_columns=("encoder pre-trained on",)),
    ]


def _deltas_section(deltas: pd.DataFrame | None) -> list[str]:
    """Each method's paired difference to the best baseline, how the baseline was picked."""
    if deltas is None or deltas.empty:
        return ["<p>No difference to a baseline: no classical baseline ran.</p>"]
    baseline = str(deltas["baseline"].iloc[0])
    table = pd.DataFrame({"method": list(dict.fromkeys(deltas["method"]))})
    for metric in dict.fromkeys(deltas["metric"]):
        rows = delta_rows(deltas, metric)
        table[f"Δ {metric.replace('_', ' ')}"] = [delta_text(rows.get(m)) for m in table["method"]]
    return [
        "<h3>Compared with the best baseline</h3>",
        f"<p>Difference of each method to <b>{escape(baseline)}</b>, the classical "
        "(scikit-learn) baseline with the highest mean balanced accuracy over the test folds, "
        "the majority baseline left out. Verdict: <i>better</i> where the whole interval is "
        "above 0, <i>worse</i> where it is below 0, otherwise <i>not distinguishable</i>.</p>",
        html_table(table, raw_columns=tuple(table.columns)),
        "<p class='muted'>Interval: "
        + escape(str(deltas["ci_method"].iloc[0]))
        + ". The baseline is picked on the same test folds the methods are judged on, which "
        "favours it; picking it again in every resample makes the interval carry that choice "
        "(a method must beat whichever baseline looks best in the resample), so a verdict of "
        "<i>better</i> is conservative. Subjects every compared method predicted: "
        + ", ".join(sorted({str(n) for n in deltas["n_subjects"]}))
        + ".</p>",
    ]


def _per_site_section(
    per_site: pd.DataFrame | None, embedded: Mapping[str, str | None], group_by: str | None
) -> list[str]:
    """Each method's spread of balanced accuracy and AUC across sites."""
    if per_site is None or per_site["site"].nunique() < 2:
        return []
    spread = site_spread(per_site)
    table = pd.DataFrame({"method": spread["method"], "sites": spread["sites"]})
    for metric, name in (("balanced_accuracy", "balanced accuracy"), ("auc", "AUC")):
        table[f"{name}: sites defined"] = spread[f"{metric}_sites"]
        table[f"{name}: mean ± SD"] = [
            f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else (f"{m:.3f}" if np.isfinite(m) else "n/a")
            for m, s in zip(spread[f"{metric}_mean"], spread[f"{metric}_sd"], strict=True)
        ]
        table[f"{name}: min–max"] = [
            f"{lo:.2f}–{hi:.2f}" if np.isfinite(lo) else "n/a"
            for lo, hi in zip(spread[f"{metric}_min"], spread[f"{metric}_max"], strict=True)
        ]
    how = (
        "The folds leave whole sites out (cv.group_by: site), so each site's subjects were "
        "predicted by models that never saw that site."
        if group_by == "site"
        else "The folds are grouped by subject, not site: a site's test subjects were predicted "
        "by models trained with other subjects of the same site."
    )
    parts = [
        "<h2>Results per site</h2>",
        f"<p>Each method's pooled test predictions split by the subjects' site (qc.tsv). {how} "
        "A site whose test subjects are all of one class has no balanced accuracy or AUC; "
        "those sites are left out of the spread. Per-site values: eval/per_site.tsv.</p>",
        html_table(table),
    ]
    if embedded.get("per_site"):
        parts.append(
            html_img(
                embedded["per_site"],
                "balanced accuracy per site",
                "Balanced accuracy on each site's test subjects (point size: subjects); bar: "
                "mean over sites; dashed: chance.",
            )
        )
    return parts


#: the biomarker overview's column of each method's most enriched networks
TOP_NETWORKS = "top networks (importance / parcel share)"


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
        top = [
            f"{n['network']} ({n['enrichment']:.1f}×)"
            if n.get("enrichment") is not None
            else f"{n['network']} (no enrichment: no importance)"
            for n in ranked[:2]
        ]
        stab = info.get("stability", {})
        rows.append(
            {
                "method": f"<a href='{escape(links.get(method, ''), quote=True)}'>"
                f"{escape(method)}</a>",
                "attribution": summary.get("kind", ""),
                "input": block,
                TOP_NETWORKS: ", ".join(top),
                "Spearman between folds": stab.get("spearman_mean"),
                "top-10 overlap": stab.get("top_k_overlap_mean"),
                "chance overlap": stab.get("chance_overlap"),
            }
        )
    if not rows:
        return "<h2>Biomarkers</h2><p>No attributions were computed.</p>"
    table = pd.DataFrame(rows)
    if not (table[TOP_NETWORKS] != "").any():
        # the atlas has no network labels: no column that would claim networks
        table = table.drop(columns=TOP_NETWORKS)
    return (
        "<h2>Biomarkers</h2><p>What each model relies on (details and top parcels on the "
        "method pages). Stability: agreement of parcel importance between outer folds (mean "
        "pairwise Spearman correlation; mean share of top-10 parcels in common).</p>"
        + html_table(table, raw_columns=("method",))
    )


def _interval_method(summary: pd.DataFrame) -> str:
    """How ``summary.tsv``'s intervals were computed (its ``ci_method`` column)."""
    methods = summary["ci_method"].dropna().unique() if "ci_method" in summary else []
    return "; ".join(map(str, methods)) or "not computed"
