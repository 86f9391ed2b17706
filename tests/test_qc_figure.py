"""The per-run fMRI QC figure: drawn on one reused figure per process, and optional.

A chunk job draws many runs one after another on the same matplotlib figure, so no run may leave
anything behind for the next; with ``qc.run_figures: false`` the run's step gets no figure path
and writes everything but the figure, and the workflow plans no figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from test_slurm import reduced_config, snakemake, write_config

from brainfuse.modalities.fmri.qc_figure import run_figure
from brainfuse.modalities.fmri.run import timeseries_run

FMRI_OUTPUTS_BUT_FIGURE = ("timeseries", "sidecar", "relmat", "relmat_raw", "coverage")
NETWORKS = ["Vis", "Vis", "Default", "Motor", "Default", "Motor"]


def _run(rng: np.random.Generator, volumes: int, n_nodes: int = 6) -> dict:
    timeseries = rng.normal(size=(volumes, n_nodes))
    return {
        "timeseries": timeseries,
        "fc": np.corrcoef(timeseries.T),
        "fd": rng.uniform(0, 0.6, size=volumes + 4),
    }


def test_a_run_draws_the_same_after_other_runs_on_the_reused_figure(tmp_path):
    rng = np.random.default_rng(0)
    first, second = _run(rng, 40), _run(rng, 25)
    included = {"sample_id": "sub-01_run-1", "status": "included"}
    excluded = {"sample_id": "sub-02_run-1", "status": "excluded", "reason": "too short"}
    run_figure(**first, networks=NETWORKS, qc=included, out_png=str(tmp_path / "a.png"))
    run_figure(**second, networks=[], qc=included, out_png=str(tmp_path / "b.png"))
    run_figure(**second, networks=NETWORKS, qc=excluded, out_png=str(tmp_path / "x.png"))
    run_figure(**first, networks=NETWORKS, qc=included, out_png=str(tmp_path / "again.png"))
    images = {name: np.asarray(Image.open(tmp_path / f"{name}.png")) for name in "abx"}
    again = np.asarray(Image.open(tmp_path / "again.png"))
    np.testing.assert_array_equal(again, images["a"])
    # one fixed layout: every run's picture has the same size, and the pictures differ
    assert {image.shape for image in images.values()} == {again.shape}
    assert not np.array_equal(images["a"], images["b"])
    assert not np.array_equal(images["b"], images["x"])
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def _table_run(tmp_path: Path, atlas, atlas_data_dir, figure: bool) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    tmp_path.mkdir()
    table = tmp_path / "sub-01_task-rest_seg-X_stat-mean_timeseries.tsv"
    series = rng.normal(size=(60, atlas.n_nodes))
    pd.DataFrame(series, columns=list(atlas.labels)).to_csv(table, sep="\t", index=False)
    endings = {"timeseries": "tsv", "sidecar": "json", "relmat": "tsv", "relmat_raw": "tsv"}
    endings |= {"coverage": "tsv", "figure": "png"}
    outputs = {name: tmp_path / "out" / f"{name}.{ending}" for name, ending in endings.items()}
    if not figure:
        del outputs["figure"]
    timeseries_run(
        table=str(table),
        entities={"subject": "01", "task": "rest"},
        atlas_cfg={"name": atlas.name, "data_dir": atlas_data_dir, "min_coverage": 0.5},
        params={"min_clean_seconds": 10, "tr_source": "exclude", "tr_tolerance": 0.01},
        default_tr=2.0,
        **{f"out_{name}": str(path) for name, path in outputs.items()},
    )
    return outputs


def test_a_table_run_without_a_figure_path_writes_everything_else(tmp_path, atlas, atlas_data_dir):
    with_figure = _table_run(tmp_path / "on", atlas, atlas_data_dir, figure=True)
    without = _table_run(tmp_path / "off", atlas, atlas_data_dir, figure=False)
    assert Image.open(with_figure["figure"]).format == "PNG"
    assert sorted(p.name for p in (tmp_path / "off" / "out").iterdir()) == sorted(
        p.name for p in without.values()
    )
    assert json.loads(without["sidecar"].read_text())["status"] == "included"
    for name in ("timeseries", "relmat", "coverage"):
        assert without[name].read_bytes() == with_figure[name].read_bytes(), name


def test_without_run_figures_the_workflow_plans_no_figure(tmp_path, atlas_data_dir):
    """The figure is an output of the fMRI chunk jobs only under ``qc.run_figures``; the dry run
    lists every planned job's outputs."""
    planned = {}
    for run_figures in (True, False):
        workdir = tmp_path / str(run_figures)
        config = reduced_config(atlas_data_dir, demo_subjects=8)
        config["qc"] = {"run_figures": run_figures}
        write_config(workdir, config)
        result = snakemake(workdir, "-n", "--cores", "1", "results/cache/fmri.parquet", timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert "rule fmri_cache" in output
        planned[run_figures] = output.count("desc-qc_bold.png")
    assert planned[True] > 0
    assert planned[False] == 0


def test_a_table_run_without_its_figure_imports_neither_torch_nor_matplotlib(
    tmp_path, atlas, atlas_data_dir
):
    """A chunk job's process, as sample_run.py drives it, stays light: no deep-learning stack to
    denoise a table, and no plotting when the figures are off."""
    table = tmp_path / "sub-01_task-rest_seg-X_stat-mean_timeseries.tsv"
    series = np.random.default_rng(2).normal(size=(60, atlas.n_nodes))
    pd.DataFrame(series, columns=list(atlas.labels)).to_csv(table, sep="\t", index=False)
    outputs = {name: str(tmp_path / f"{name}.tsv") for name in FMRI_OUTPUTS_BUT_FIGURE}
    script = f"""
import json, sys
from brainfuse.modalities.base import load_modality
fmri = load_modality("brainfuse.modalities.fmri.modality:FMRI")
atlas = {{"name": {atlas.name!r}, "data_dir": {atlas_data_dir!r}, "min_coverage": 0.5}}
section = {{"min_clean_seconds": 10, "tr_source": "exclude", "tr_tolerance": 0.01}}
params = {{"atlas": atlas, "section": section, "entities": {{"subject": "01", "task": "rest"}},
          "default_tr": 2.0, "tr_missing": "", "mean_fd": None}}
fmri.run_sample({{"table": {str(table)!r}, "sidecar": []}}, params, {outputs!r})
heavy = ("torch", "lightning", "torch_geometric", "matplotlib", "mne")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert json.loads(Path(outputs["sidecar"]).read_text())["status"] == "included"
