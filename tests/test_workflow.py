"""End to end: the Snakemake workflow on a reduced demo dataset.

One module-scoped run serves every assertion: report, summary, idempotence, targeted reruns and the
planted FC effect visible in the cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, atlas_data_dir):
    workdir = tmp_path_factory.mktemp("workflow")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["input"]["demo_subjects"] = 24
    config["atlas"]["data_dir"] = atlas_data_dir
    # 3 folds: every rule and stage still runs per fold, with 12 torch jobs fewer than 5 folds
    config["cv"]["n_folds"] = 3
    config["methods"] = {
        "majority": {"stages": ["fit"]},
        "logreg_fc": {"stages": ["fit"]},
        "svm_tangent": {"stages": ["fit"]},
        "logreg_sc": {"stages": ["fit"]},
        "logreg_eeg": {"stages": ["fit"]},
        "gcn_fc": {"stages": ["train"], "params": {"epochs": 15}},
        # SC+FC fusion with half their default epochs (here 0.96 and 1.0 balanced accuracy;
        # with the defaults 0.93 and 0.92 in a run of this test)
        "m3d_bfs": {"stages": ["encoders", "pretrain", "finetune"], "params": {"epochs": 15}},
        "connex": {"stages": ["train"], "params": {"epochs": 15}},
    }
    # the demo's learning curves (curves.in_report: demo) of its methods among demo_methods,
    # at one fraction to keep the run short
    config["curves"]["fractions"] = [0.5, 1.0]
    config["curves"]["demo_methods"] = ["logreg_fc", "gcn_fc"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_report_and_summary(demo_run):
    results = demo_run / "results"
    html = (results / "reports" / "index.html").read_text()
    assert "logreg_fc" in html and "Quality control" in html and "data:image/png;base64," in html
    summary = pd.read_csv(results / "eval" / "summary.tsv", sep="\t")
    assert set(summary["method"]) == {
        "majority",
        "logreg_fc",
        "svm_tangent",
        "logreg_sc",
        "logreg_eeg",
        "gcn_fc",
        "m3d_bfs",
        "connex",
    }
    for column in ("balanced_accuracy_mean", "balanced_accuracy_sd", "auc_mean", "auc_sd"):
        assert column in summary.columns
    # the demo's report has the learning curves without asking for them
    curves = pd.read_csv(results / "eval" / "curves.tsv", sep="\t")
    assert set(curves["method"]) == {"logreg_fc", "gcn_fc"}
    assert set(curves["fraction"]) == {0.5, 1.0} and curves["fold"].nunique() == 3
    assert "Learning curves" in html and "Leakage and shortcut diagnostics" in html
    # every interval lies within its metric's range (a subject-level bootstrap, not mean +- t*SE)
    bounds = summary.filter(regex="_ci_(low|high)$")
    assert len(bounds.columns) >= 4
    assert bounds.ge(0).all().all() and bounds.le(1).all().all()
    description = json.loads((results / "dataset_description.json").read_text())
    assert (
        description["GeneratedBy"][0]["Name"] == "brainfuse"
        and len(description["ConfigHash"]) == 16
    )


def test_linear_baseline_detects_planted_effect(demo_run):
    summary = pd.read_csv(demo_run / "results" / "eval" / "summary.tsv", sep="\t").set_index(
        "method"
    )
    assert summary.loc["logreg_fc", "balanced_accuracy_mean"] > 0.75
    assert summary.loc["logreg_sc", "balanced_accuracy_mean"] > 0.7
    assert summary.loc["majority", "balanced_accuracy_mean"] == pytest.approx(0.5)


def test_fusion_methods_beat_chance_with_every_stage_a_job(demo_run):
    results = demo_run / "results"
    summary = pd.read_csv(results / "eval" / "summary.tsv", sep="\t").set_index("method")
    for method in ("m3d_bfs", "connex"):
        assert summary.loc[method, "balanced_accuracy_mean"] > 0.75, summary.loc[method]
        assert summary.loc[method, "auc_mean"] > 0.8, summary.loc[method]
    for stage in ("encoders", "pretrain", "finetune"):
        for fold in range(3):
            metrics = json.loads(
                (
                    results / "models" / "m3d_bfs" / f"fold-{fold}" / stage / "metrics.json"
                ).read_text()
            )
            assert metrics["stage"] == stage and metrics["n_test"] > 0
    # the routing shares behind the report's sample-adaptivity figure
    tables = results / "models" / "m3d_bfs" / "fold-0" / "finetune" / "tables"
    routing = pd.read_csv(tables / "routing.tsv", sep="\t")
    assert {"sc", "fc", "shared"} == set(routing["moe"])


def test_report_recovers_planted_parcels(demo_run):
    results = demo_run / "results"
    summary = json.loads((results / "biomarkers" / "logreg_fc" / "summary.json").read_text())
    parcels = summary["ground_truth"]["fc"]["parcels"]
    assert parcels["precision"] >= 0.5 > parcels["chance"] * 3
    page = (results / "reports" / "logreg_fc.html").read_text()
    assert "precision" in page.lower()
    assert "href='logreg_fc.html'" in (results / "reports" / "index.html").read_text()


def test_planted_fc_difference_in_cache(demo_run):
    from brainfuse.core.cache import read_cache

    truth = json.loads((demo_run / "results" / "demo_bids" / "ground_truth.json").read_text())
    cache = read_cache(demo_run / "results" / "cache" / "fmri.parquet")
    names = cache.metadata["roi_names"]
    idx = [names.index(n) for n in truth["fmri"]["parcels"]]
    fc = np.arctanh(np.clip(cache.arrays["fc"][:, idx][:, :, idx], -0.99, 0.99))
    iu = np.triu_indices(len(idx), 1)
    planted = fc[:, iu[0], iu[1]].mean(axis=1)
    labels = cache.table["label"].to_numpy()
    patients, controls = planted[labels == "patient"], planted[labels == "control"]
    assert patients.mean() - controls.mean() > 3 * np.sqrt(
        patients.var() / len(patients) + controls.var() / len(controls)
    )


def test_denoising_removes_motion_and_strengthens_planted_effect(demo_run):
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.fmri.qcfc import qc_fc

    truth = json.loads((demo_run / "results" / "demo_bids" / "ground_truth.json").read_text())
    cache = read_cache(demo_run / "results" / "cache" / "fmri.parquet")
    fd = cache.table["mean_fd"].to_numpy()
    has_raw = np.isfinite(cache.arrays["fc_raw"]).any(axis=(1, 2))  # XCP-D runs have no raw FC
    before = qc_fc(cache.arrays["fc_raw"][has_raw], fd[has_raw])
    after = qc_fc(cache.arrays["fc"][has_raw], fd[has_raw])
    # raw FC carries motion (median |r| about 0.38 on the demo; the sites' noise and global-signal
    # levels add FC variance unrelated to motion), and denoising at least halves it
    assert before["median_abs_r"] > 0.3 and after["median_abs_r"] < before["median_abs_r"] / 2
    assert after["fraction_significant"] < 0.15

    names = cache.metadata["roi_names"]
    idx = [names.index(n) for n in truth["fmri"]["parcels"]]
    iu = np.triu_indices(len(idx), 1)
    labels = cache.table["label"].to_numpy()[has_raw]

    def effect(fc):
        z = np.arctanh(np.clip(fc[:, idx][:, :, idx][:, iu[0], iu[1]], -0.99, 0.99)).mean(axis=1)
        a, b = z[labels == "patient"], z[labels == "control"]
        return (a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)

    assert effect(cache.arrays["fc"][has_raw]) > effect(cache.arrays["fc_raw"][has_raw]) + 0.5


def test_xcpd_subjects_join_the_cache_and_train(demo_run):
    from brainfuse.core.cache import read_cache

    qc = pd.read_csv(demo_run / "results" / "qc" / "qc.tsv", sep="\t", dtype=str)
    tables = qc[qc["path"].str.contains("xcpd", na=False)]
    assert len(tables) >= 3 and (tables["status"] == "included").all()
    cache = read_cache(demo_run / "results" / "cache" / "fmri.parquet")
    xcpd_ids = set(tables["sample_id"])
    assert xcpd_ids <= set(cache.table["sample_id"])
    predictions = pd.read_csv(demo_run / "results" / "eval" / "predictions.tsv", sep="\t")
    assert xcpd_ids <= set(predictions.loc[predictions["method"] == "logreg_fc", "sample_id"])


def test_planted_eeg_alpha_effect_recovered(demo_run):
    from scipy import stats

    from brainfuse.core.cache import read_cache

    truth = json.loads((demo_run / "results" / "demo_bids" / "ground_truth.json").read_text())
    cache = read_cache(demo_run / "results" / "cache" / "eeg.parquet")
    assert cache.metadata["level"] == "source"
    bands = cache.metadata["bands"]
    alpha = cache.arrays["band_power"][:, bands.index(truth["eeg"]["band"])]
    labels = cache.table["label"].to_numpy()
    t = stats.ttest_ind(alpha[labels == "patient"], alpha[labels == "control"]).statistic
    names = cache.metadata["node_names"]
    planted = [names.index(n) for n in truth["eeg"]["parcels"]]
    # planted parcels rank far above chance (mean rank 50 of 100) among all parcels by t
    ranks = (-t).argsort().argsort()
    assert ranks[planted].mean() < 25
    assert (t[planted] > 0).all()


def test_excluded_runs_are_recorded(demo_run):
    qc = pd.read_csv(demo_run / "results" / "qc" / "qc.tsv", sep="\t", dtype=str)
    assert set(qc["modality"]) == {"fmri", "eeg", "sc"}
    excluded = qc[qc["status"] == "excluded"]
    assert excluded["reason"].str.len().gt(0).all()


def test_second_run_has_nothing_to_do(demo_run):
    result = snakemake(demo_run, "-n", "--cores", "2")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_deleting_one_output_reruns_only_its_dependents(demo_run):
    target = next((demo_run / "results" / "sub-02" / "func").glob("*_stat-mean_timeseries.tsv"))
    target.unlink()
    result = snakemake(demo_run, "-n", "--cores", "2", "--quiet", "rules")
    out = result.stdout + result.stderr
    counts = dict(
        line.split()[:2]
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    # one job: the chunk of `batching` fMRI runs holding sub-02's run (fmri_run_<k>)
    assert [n for rule, n in counts.items() if re.fullmatch(r"fmri_run_\d+", rule)] == ["1"]
    assert not any(re.fullmatch(r"(eeg|sc)_run_\d+", rule) for rule in counts)
    assert "demo_data" not in counts
    assert counts.get("fmri_cache") == "1"  # only the fMRI cache depends on it
    assert "eeg_cache" not in counts and "sc_cache" not in counts
    # Remake the file and the cache it feeds (the rest of the DAG would rerun from there as
    # usual). Snakemake does not remake a missing intermediate file for a target that is up to
    # date (the temp() semantics), hence the file itself among the targets.
    cache = demo_run / "results" / "cache" / "fmri.parquet"
    before = cache.stat().st_mtime_ns
    result = snakemake(demo_run, "--cores", "2", str(target.relative_to(demo_run)),
                       "results/cache/fmri.parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert target.exists() and cache.stat().st_mtime_ns > before
