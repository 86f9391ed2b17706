"""A modality and a method added from outside the package, through config `extensions`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_slurm import reduced_config, snakemake_command, snakemake_env, write_config

from brainfuse.core.errors import ConfigError
from brainfuse.extensions import load_extensions

DATA = Path(__file__).parent / "data"
EXTENSION = "toy_extension:register"


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(DATA))


def test_an_extension_adds_a_modality_and_a_method(on_path):
    catalog, modalities = load_extensions([EXTENSION])
    assert list(modalities) == ["fmri", "eeg", "sc", "strength"]
    assert catalog["logreg_strength"].modalities == ("strength",)
    plain_catalog, plain = load_extensions()
    assert "strength" not in plain and "logreg_strength" not in plain_catalog


def test_an_unloadable_extension_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_module"):
        load_extensions(["no_such_module:register"])


@pytest.mark.slow
def test_the_extension_runs_through_the_workflow(tmp_path, atlas_data_dir, small_demo_bids):
    import subprocess

    workdir = tmp_path / "work"
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        sc_dir=str(small_demo_bids / "derivatives" / "qsirecon"),
        participants=str(small_demo_bids / "participants.tsv"),
    )
    config["extensions"] = [EXTENSION]
    config["methods"] = {"logreg_sc": {"stages": ["fit"]}, "logreg_strength": {"stages": ["fit"]}}
    write_config(workdir, config)
    # the jobs import the extension too
    env = {**snakemake_env(), "PYTHONPATH": os.pathsep.join([str(DATA), *sys.path])}
    result = subprocess.run(
        snakemake_command(workdir, "--cores", "2", timeout=900),
        capture_output=True, text=True, env=env, cwd=workdir, timeout=960,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    from brainfuse.core.cache import read_cache

    results = workdir / "results"
    strength, sc = (
        read_cache(results / "cache" / "strength.parquet"),
        read_cache(results / "cache" / "sc.parquet"),
    )
    assert list(strength.table["sample_id"]) == list(sc.table["sample_id"])
    # the toy modality's per-sample step ran on every subject: strengths are SC column sums
    np.testing.assert_allclose(strength.arrays["strength"], sc.arrays["sc"].sum(1), rtol=1e-5)
    summary = pd.read_csv(results / "eval" / "summary.tsv", sep="\t")
    assert {"logreg_sc", "logreg_strength"} <= set(summary["method"])
    predictions = pd.read_csv(results / "eval" / "predictions.tsv", sep="\t", dtype=str)
    toy = predictions[predictions["method"] == "logreg_strength"]
    assert set(toy["subject"]) == set(sc.table["subject"].astype(str))  # each tested once
    assert (results / "reports" / "logreg_strength.html").exists()
    qc = pd.read_csv(results / "qc" / "qc.tsv", sep="\t")
    assert (qc["modality"] == "strength").sum() == len(sc.table)
