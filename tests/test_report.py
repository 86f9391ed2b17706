"""The HTML report on a small synthetic results tree: links and images resolve, user text is
escaped, the pages open in a headless browser without network."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

INJECT = "<script>alert('x')</script>"
SCREENSHOT = Path("/tmp/report_index.png")
METHODS = ("majority", "logreg_fc", "gcn_fc")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler attribute {name}={value!r}"

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text())
    parser.close()
    return parser


def _predictions(rng, subjects, labels, folds):
    rows = []
    for method, skill in (("majority", 0.0), ("logreg_fc", 2.5), ("gcn_fc", 1.0)):
        for subject, label in zip(subjects, labels, strict=True):
            fold = folds[subject]
            y = int(label == "patient")
            for run in (1, 2) if subject.endswith("1") else (1,):
                score = 1 / (1 + np.exp(-(skill * (y - 0.5) * 2 + rng.normal(0, 1))))
                if method == "majority":
                    score = 0.0
                rows.append(
                    {
                        "method": method,
                        "fold": fold,
                        "sample_id": f"sub-{subject}_run-{run}",
                        "subject": subject,
                        "label": label,
                        "y_true": y,
                        "y_score": score,
                        "y_pred": int(score >= 0.5),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory):
    """A results folder as the workflow leaves it (evaluation, QC, folds, biomarkers,
    figures, ground truth), with markup injected into every kind of user text."""
    from brainfuse.evaluate import evaluate
    from brainfuse.explain.blocks import BlockInfo, FoldBlock, MethodAttribution
    from brainfuse.explain.outputs import write_outputs
    from brainfuse.report import figures
    from brainfuse.report.step import make_report_figures

    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    subjects = [f"{i:02d}" for i in range(18)]
    labels = ["patient" if i % 2 else "control" for i in range(18)]
    folds = {s: i % 3 for i, s in enumerate(subjects)}

    pred_dir = root / "models"
    pred_dir.mkdir()
    predictions = _predictions(rng, subjects, labels, folds)
    files = []
    for (method, fold), frame in predictions.groupby(["method", "fold"]):
        path = pred_dir / f"{method}_{fold}.tsv"
        frame.to_csv(path, sep="\t", index=False)
        files.append(str(path))
    qc_rows = []
    for subject, label in zip(subjects, labels, strict=True):
        qc_rows.append(
            {
                "modality": "fmri",
                "sample_id": f"sub-{subject}_run-1",
                "status": "included",
                "reason": "",
                "subject": subject,
                "label": label if subject != "03" else INJECT,
                "site": "siteA" if int(subject) % 3 else f"site{INJECT}",
                "mean_fd": f"{rng.uniform(0.05, 0.3):.3f}",
            }
        )
    qc_rows.append(
        {
            "modality": "fmri",
            "sample_id": "sub-99_run-1",
            "status": "excluded",
            "reason": f"sub-99_bold.tsv: only 90 s of clean data {INJECT}",
            "subject": "99",
            "label": "control",
            "site": "siteB",
            "mean_fd": "n/a",
        }
    )
    (root / "qc").mkdir()
    pd.DataFrame(qc_rows).to_csv(root / "qc" / "qc.tsv", sep="\t", index=False)
    eval_dir = root / "eval"
    evaluate(
        files,
        str(eval_dir / "predictions.tsv"),
        str(eval_dir / "metrics_per_fold.tsv"),
        str(eval_dir / "summary.tsv"),
        baselines=["logreg_fc"],
        qc_path=str(root / "qc" / "qc.tsv"),
        out_deltas=str(eval_dir / "deltas.tsv"),
        out_per_site=str(eval_dir / "per_site.tsv"),
        n_resamples=500,
    )
    folds_rows = [
        {"fold": f, "subject": s, "role": "test" if folds[s] == f else "train"}
        for f in range(3)
        for s in subjects
    ]
    (root / "folds").mkdir()
    pd.DataFrame(folds_rows).to_csv(root / "folds" / "folds.tsv", sep="\t", index=False)

    # biomarkers of logreg_fc (Haufe) and gcn_fc (IG) on 30 parcels, one name with markup
    n = 30
    names = [
        f"7Networks_{'LH' if i < n // 2 else 'RH'}_{net}_{i}"
        for i, net in enumerate(["Vis", "Vis", "SomMot", "DorsAttn", "Cont", "Default"] * 5)
    ]
    names[5] = f"7Networks_LH_Default_{INJECT}"
    networks = [n_.split("_")[2] for n_ in names]
    centroids = np.column_stack(
        [np.where(np.arange(n) < n // 2, -40, 40), np.linspace(-80, 50, n), np.linspace(-10, 50, n)]
    ).astype(float)
    planted = [1, 4, 8, 17, 25]
    truth = {
        "fmri": {
            "parcels": [names[i] for i in planted],
            "edges": [[names[1], names[4]], [names[4], names[8]]],
        }
    }
    (root / "demo_bids").mkdir()
    (root / "demo_bids" / "ground_truth.json").write_text(json.dumps(truth))
    biomarkers = {}
    for method, kind in (("logreg_fc", "haufe"), ("gcn_fc", "integrated_gradients")):
        per_fold = {}
        for f in range(3):
            m = np.abs(rng.normal(0, 0.1, (n, n)))
            for i in planted:
                for j in planted:
                    m[i, j] += 1.0 if i != j else 0.0
            m = (m + m.T) / 2
            np.fill_diagonal(m, 0)
            per_fold[f] = FoldBlock(m[None], m[None] * np.sign(rng.normal(size=(1, n, n))))
        result = MethodAttribution(
            method,
            kind,
            [0, 1, 2],
            {"fc": per_fold},
            {"fc": BlockInfo(names, networks)},
            [f"note {INJECT}"],
        )
        out = root / "biomarkers" / method
        paths = {
            k: str(out / f)
            for k, f in (
                ("summary", "summary.json"),
                ("importance", "importance.tsv"),
                ("edges", "edges.tsv"),
            )
        }
        summary = write_outputs(
            result, paths["importance"], paths["edges"], paths["summary"], truth, description=INJECT
        )
        from brainfuse.explain.tables import read_table

        importance, edges = read_table(paths["importance"]), read_table(paths["edges"])
        paths["top_parcels"] = figures.top_parcels_figure(
            importance, names, centroids, out / "top_parcels.png", "fc"
        )
        paths["top_edges"] = figures.top_edges_figure(
            edges, names, centroids, out / "top_edges.png", "fc", k=6
        )
        paths["networks"] = figures.networks_figure(summary, out / "networks.png")
        biomarkers[method] = paths

    report_figures = {
        k: str(root / "reports" / "figures" / f"{k}.png")
        for k in ("roc", "fold_spread", "fc_difference", "fd_distribution", "exclusions")
    }
    make_report_figures(
        str(eval_dir / "predictions.tsv"),
        str(eval_dir / "metrics_per_fold.tsv"),
        str(root / "qc" / "qc.tsv"),
        report_figures,
        None,
        "patient",
        0.5,
    )
    return {"root": root, "biomarkers": biomarkers, "figures": report_figures}


@pytest.fixture(scope="module")
def report(results_tree):
    from brainfuse.report.index_page import ReportInputs, build_report

    root = results_tree["root"]
    out = root / "reports" / "index.html"
    descriptions = {m: f"description of {m} {INJECT}" for m in METHODS}
    inputs = ReportInputs(
        summary_path=str(root / "eval" / "summary.tsv"),
        per_fold_path=str(root / "eval" / "metrics_per_fold.tsv"),
        qc_path=str(root / "qc" / "qc.tsv"),
        folds_path=str(root / "folds" / "folds.tsv"),
        skipped={"svm_sc": f"needs sc data {INJECT}"},
        descriptions=descriptions,
        out_html=str(out),
        predictions_path=str(root / "eval" / "predictions.tsv"),
        deltas_path=str(root / "eval" / "deltas.tsv"),
        per_site_path=str(root / "eval" / "per_site.tsv"),
        figures=results_tree["figures"],
        biomarkers=results_tree["biomarkers"],
        truth_path=str(root / "demo_bids" / "ground_truth.json"),
        stages={m: ["fit"] for m in METHODS},
        families={m: "deep" if m == "gcn_fc" else "baseline" for m in METHODS},
        positive="patient",
        n_permutations=500,
    )
    build_report(inputs)
    return out


def _pages(index: Path) -> list[Path]:
    return [index, *(index.parent / f"{m}.html" for m in METHODS)]


def test_every_page_is_written(report):
    for page in _pages(report):
        assert page.exists(), page


def test_images_are_embedded_or_resolve(report):
    for page in _pages(report):
        parsed = _parse(page)
        for src in parsed.images:
            if src.startswith("data:"):
                assert src.startswith("data:image/png;base64,"), src[:40]
                assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
            else:
                assert not urlparse(src).scheme and not src.startswith("/"), src
                assert (page.parent / unquote(src)).exists(), src
    index = _parse(report)
    assert len(index.images) >= 5  # fold spread, ROC, FC difference, FD, exclusions
    method_page = _parse(report.parent / "logreg_fc.html")
    assert len(method_page.images) == 3  # top parcels, top edges, networks


def test_links_are_relative_and_exist(report):
    for page in _pages(report):
        for href in _parse(page).links:
            parsed = urlparse(href)
            assert not parsed.scheme and not parsed.netloc and not href.startswith("/"), href
            target = (page.parent / unquote(parsed.path)).resolve()
            assert target.exists(), f"{page.name}: {href}"
    index_links = set(_parse(report).links)
    assert {f"{m}.html" for m in METHODS} <= index_links
    assert (
        "../biomarkers/logreg_fc/importance.tsv" in _parse(report.parent / "logreg_fc.html").links
    )


def test_user_text_is_escaped(report):
    for page in _pages(report):
        html = page.read_text()
        parsed = _parse(page)
        assert "script" not in parsed.tags, page.name
        assert INJECT not in html
        assert "&lt;script&gt;" in html, page.name  # shown as text, not run
    text = "".join(_parse(report).text)
    for where in (
        "description of logreg_fc",
        "needs sc data",
        "site<script>",
        "only 90 s of clean data",
    ):
        assert where in text, where
    parcels = "".join(_parse(report.parent / "logreg_fc.html").text)
    assert f"7Networks_LH_Default_{INJECT}" in parcels


def test_report_content(report, results_tree):
    index = report.read_text()
    text = "".join(_parse(report).text)
    assert "Quality control" in text and "Recovery of the planted effects" in text
    assert "Best model by mean balanced accuracy: logreg_fc" in text
    assert "permutations of the subjects' labels" in text
    assert "clearly above chance" in text  # the planted parcels top logreg_fc's ranking
    assert "data:image/png;base64," in index
    page = "".join(_parse(report.parent / "logreg_fc.html").text)
    assert "Haufe" in page and "Stability across folds" in page
    assert "5 of its top 10 parcels are planted fmri parcels" in page
    majority = "".join(_parse(report.parent / "majority.html").text)
    assert "No biomarkers" in majority and "most frequent class" in majority

    # every method against the best classical baseline, with its interval and a verdict
    assert "Δ balanced accuracy vs best baseline" in text
    assert "Compared with the best baseline" in text and "picked again" in text
    assert "-0.500 [-0.50, -0.50] worse" in text  # the majority baseline
    assert "the reference baseline" in text
    # a permutation test of every method, with the multiple-comparison note
    assert "Every method against chance" in text and "max-statistic correction" in text
    # per-site spread (two sites in the QC table)
    assert "Results per site" in text and "grouped by subject, not site" in text
    assert index.count("data:image/png;base64,") >= 6  # ... and the per-site figure
    gcn = "".join(_parse(report.parent / "gcn_fc.html").text)
    assert "Difference to logreg_fc" in gcn and "Label permutation test" in gcn
    assert "Per site" in gcn and "siteA" in gcn


def test_permutation_test_detects_signal_and_not_noise():
    from brainfuse.report.permutation import permutation_test

    rng = np.random.default_rng(0)
    subjects = [f"s{i}" for i in range(40)]
    y = np.array([i % 2 for i in range(40)])
    rows = []
    for method, signal in (("good", 3.0), ("noise", 0.0)):
        score = signal * (y - 0.5) + rng.normal(0, 1, 40)
        rows += [
            {"method": method, "subject": s, "y_true": t, "y_score": v, "y_pred": int(v > 0)}
            for s, t, v in zip(subjects, y, score, strict=True)
        ]
    frame = pd.DataFrame(rows)
    good = permutation_test(frame, "good", ["good", "noise"], n_permutations=999)
    assert good["auc"]["p"] < 0.01 and good["balanced_accuracy"]["p_max"] < 0.01
    noise = permutation_test(frame, "noise", ["noise"], n_permutations=999)
    assert noise["auc"]["p"] > 0.05
    assert abs(noise["auc"]["null_mean"] - 0.5) < 0.05
    # the corrected p-value is never smaller than the uncorrected one
    both = permutation_test(frame, "noise", ["good", "noise"], n_permutations=999)
    assert both["auc"]["p_max"] >= both["auc"]["p"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_headless_chromium(report):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); HTML checked only")
    SCREENSHOT.unlink(missing_ok=True)
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page must not need it
            "--window-size=1280,2400",
            f"--screenshot={SCREENSHOT}",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 20_000
