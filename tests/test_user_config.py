"""A user's config file means what it says: it replaces config.yaml instead of merging into it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
import yaml

from brainfuse.config import read_config
from brainfuse.core.errors import InputError
from brainfuse.modalities.eeg.recording import load_recording

ROOT = Path(__file__).resolve().parents[1]
NILEARN_DATA = os.environ.get("NILEARN_DATA") or str(ROOT.parent / "shared/data/nilearn_data")
TWO_METHODS = {"majority": {"stages": ["fit"]}, "logreg_fc": {"stages": ["fit"]}}


def _user_config(tmp_path: Path, **sections) -> Path:
    """A small demo config file holding only what differs from the schema's defaults."""
    config = {
        "input": {"demo": True, "demo_subjects": 8},
        "cv": {"n_folds": 2},  # 4 subjects per class: the planning check refuses 5 folds
        "atlas": {"data_dir": NILEARN_DATA},
        "methods": TWO_METHODS,
        **sections,
    }
    path = tmp_path / "my_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _dry_run(workdir: Path, *args: str) -> str:
    """The job list of a dry run of the real Snakefile in ``workdir``, which holds a copy of
    config.yaml as the checkout does (where ``snakemake`` is run)."""
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--directory",
            str(workdir),
            "--snakefile",
            str(ROOT / "Snakefile"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def _planned_methods(output: str) -> set[str]:
    return set(re.findall(r"\bmethod=([A-Za-z0-9_]+)", output))


def test_config_file_replaces_the_default_methods(tmp_path):
    """Two methods in the user's file plan jobs of exactly those two, not config.yaml's others."""
    output = _dry_run(tmp_path, "--configfile", str(_user_config(tmp_path)))
    assert _planned_methods(output) == set(TWO_METHODS)


def test_config_overrides_apply_on_top_of_a_config_file(tmp_path):
    output = _dry_run(
        tmp_path, "--configfile", str(_user_config(tmp_path)), "--config", "results_dir=elsewhere"
    )
    assert "elsewhere/reports/index.html" in output
    assert not re.search(r"(^|[\s,])results/", output)
    assert _planned_methods(output) == set(TWO_METHODS)


def test_without_a_config_file_config_yaml_runs_with_overrides(tmp_path):
    """``snakemake --cores all`` in the checkout reads config.yaml: every method it lists."""
    output = _dry_run(tmp_path, "--config", "results_dir=elsewhere")
    default_methods = yaml.safe_load((ROOT / "config.yaml").read_text())["methods"]
    assert _planned_methods(output) == set(default_methods)
    assert "elsewhere/reports/index.html" in output


def test_one_band_config_keeps_exactly_that_band(tmp_path):
    """A file naming one EEG band plans a run, and its config holds that band alone."""
    path = _user_config(tmp_path, eeg={"bands": {"alpha": [8, 13]}})
    _dry_run(tmp_path, "--configfile", str(path))
    config = read_config(yaml.safe_load(path.read_text()))
    assert config.section("eeg")["bands"] == {"alpha": [8, 13]}


def test_montage_mismatch_names_the_configured_montage(tmp_path):
    """The message names eeg.montage as written, and MNE's layout only where it was renamed."""
    names = [f"Chan{i}" for i in range(14)] + ["Cz", "Pz"]
    data = 1e-5 * np.random.default_rng(0).standard_normal((len(names), 800))
    raw = mne.io.RawArray(data, mne.create_info(names, 100.0, "eeg"), verbose=False)
    path = tmp_path / "sub-01_task-rest_eeg.edf"
    mne.export.export_raw(path, raw, fmt="edf", verbose=False)
    builtin = mne.channels.get_builtin_montages()
    with pytest.raises(InputError) as info:
        load_recording(path, {"montage": "standard_1005"})
    reason = info.value.reason
    assert "2 of 16" in reason and "montage standard_1005" in reason
    if "standard_1005" not in builtin:  # MNE 1.13 renamed it colin27_1005
        assert "(MNE layout colin27_1005)" in reason
    with pytest.raises(InputError) as info:
        load_recording(path, {"montage": "spherical_1020"})
    assert "montage spherical_1020 " in info.value.reason
    assert "MNE layout" not in info.value.reason


def test_auto_folds_are_planned_from_the_discovered_subjects(tmp_path):
    """cv.n_folds: auto on 8 demo subjects (4 per class) plans the largest feasible number: 4."""
    config = _user_config(tmp_path, cv={"n_folds": "auto"})
    output = _dry_run(tmp_path, "--configfile", str(config))
    folds = {int(f) for f in re.findall(r"\bfold=([0-9]+)", output)}
    assert folds == {0, 1, 2, 3}
