"""The HTML report on a small synthetic results tree: links and images resolve, user text is
escaped, the pages open in a headless browser without network."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

INJECT = "<script>alert('x')</script>"
#: where the headless Chromium test leaves its screenshots
SCREENSHOTS = Path(tempfile.gettempdir())
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


#: Debian's package; the test installs it where it can (root and apt-get)
CHROMIUM_PACKAGE = "chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page must not need it
    "--remote-debugging-pipe",
)
# what the page reports about itself once loaded: every image decoded, every table's size
PAGE_STATE = """
(async () => {
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  return {
    images: [...document.images].map(i => ({
      src: i.getAttribute('src').slice(0, 60), complete: i.complete, width: i.naturalWidth})),
    tables: [...document.querySelectorAll('table')].map(t => ({
      rows: t.rows.length, cells: t.querySelectorAll('td').length,
      height: t.getBoundingClientRect().height})),
  };
})()
"""


def _chromium() -> str:
    """The chromium binary, installed with apt-get where absent and possible; skips with the
    reason where it cannot be installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is absent and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", CHROMIUM_PACKAGE]
    try:
        # a stale package index is the usual reason an install fails: refresh it once
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
            result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
            if result.returncode:
                pytest.skip(f"apt-get install {CHROMIUM_PACKAGE} failed: {result.stderr[-300:]}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"apt-get install {CHROMIUM_PACKAGE} timed out")
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"apt-get installed {CHROMIUM_PACKAGE} but no chromium binary is on PATH")
    return found


class DevTools:
    """A headless Chromium driven through the Chrome DevTools protocol on a pipe.

    With ``--remote-debugging-pipe`` the browser reads commands from its file descriptor 3 and
    writes replies and events to descriptor 4, each a JSON message ended by a NUL byte: no
    port, no network and no client library.
    """

    def __init__(self, browser: str, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def as_fds_3_and_4() -> None:  # runs in the child before exec
            # duplicated above 10 first, so that neither end is overwritten by the other
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, replies_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=as_fds_3_and_4,
            pass_fds=(3, 4),
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Run one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> None:
        """Wait for an event of ``session`` (those already received count)."""
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self._receive())

    def _receive(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], deadline - time.monotonic())
            chunk = os.read(self._replies, 1 << 20) if ready else b""
            assert chunk, "chromium did not answer (closed the pipe or timed out)"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, page: Path, screenshot: Path) -> dict:
        """Load ``page`` in a new tab, save a full-page screenshot and return what it shows:
        ``errors`` (console errors, uncaught exceptions, failed loads), ``images``, ``tables``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        self.wait_for("Page.loadEventFired", session)
        state = self.send(
            "Runtime.evaluate",
            {"expression": PAGE_STATE, "awaitPromise": True, "returnByValue": True},
            session,
        )["result"]["value"]
        shot = self.send("Page.captureScreenshot", {"captureBeyondViewport": True}, session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = [_error_text(e) for e in self.events if e.get("sessionId") == session]
        self.send("Target.closeTarget", {"targetId": target})
        return {**state, "errors": [e for e in errors if e]}

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except AssertionError:
            pass  # it closes the pipe as it exits
        self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._replies)


def _error_text(event: dict) -> str | None:
    """The text of an event that reports an error in the page, None for any other event."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console: " + " ".join(
            str(a.get("value", a.get("description"))) for a in params["args"]
        )
    if method == "Runtime.exceptionThrown":
        return "exception: " + params["exceptionDetails"].get("text", "")
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        return "log: " + params["entry"].get("text", "")
    return None


@pytest.fixture(scope="module")
def devtools(tmp_path_factory):
    browser = DevTools(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def test_chromium_check_catches_broken_pages(devtools, tmp_path):
    """The check itself can fail: a missing image and a console error are reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img src='missing.png' alt='x'><table><tr><td>1</td></tr>"
        "</table><script>console.error('planted error')</script></body></html>"
    )
    seen = devtools.open(page, tmp_path / "broken.png")
    assert [i["width"] for i in seen["images"]] == [0]
    assert any("planted error" in e for e in seen["errors"]), seen["errors"]
    assert seen["tables"][0]["height"] > 0


def test_report_opens_in_headless_chromium(report, devtools):
    """The index and a method page: no console errors, every figure decoded, every table
    rendered; screenshots are saved for a person to look at."""
    for page, screenshot in (
        (report, SCREENSHOTS / "report_index.png"),
        (report.parent / "logreg_fc.html", SCREENSHOTS / "report_logreg_fc.png"),
    ):
        screenshot.unlink(missing_ok=True)
        seen = devtools.open(page, screenshot)
        assert seen["errors"] == [], f"{page.name}: {seen['errors']}"
        assert len(seen["images"]) == len(_parse(page).images) > 0
        for image in seen["images"]:
            assert image["complete"] and image["width"] > 0, f"{page.name}: {image['src']}"
        assert len(seen["tables"]) == _parse(page).tags.count("table") > 0
        for table in seen["tables"]:
            assert table["rows"] > 0 and table["cells"] > 0 and table["height"] > 0, page.name
        assert screenshot.stat().st_size > 20_000
