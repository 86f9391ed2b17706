"""Real data end to end: ABIDE I (PCP) CC200 ROI tables as released (AFNI .1D named by FILE_ID,
phenotypes in a CSV, a TR per site), with no conversion, through baselines, a deep method and
the report.

The data live beside the repository (../shared/data/real/abide-pcp-cc200-150) or where
BRAINFUSE_ABIDE_DIR points; the test is skipped without them. It is opt-in, outside the default
suite: ``pytest -m real tests/test_abide_real.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ABIDE = Path(
    os.environ.get("BRAINFUSE_ABIDE_DIR")
    or ROOT.parent / "shared" / "data" / "real" / "abide-pcp-cc200-150"
)
METHODS = ("logreg_fc", "gcn_fc")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real,
    pytest.mark.skipif(
        not (ABIDE / "phenotypic.csv").exists(),
        reason=f"ABIDE CC200 folder not found at {ABIDE} (set BRAINFUSE_ABIDE_DIR)",
    ),
]


def abide_config(results_dir: Path) -> dict:
    """The config a user writes for the folder as downloaded: only what differs from defaults."""
    return {
        "results_dir": str(results_dir),
        "input": {
            "demo": False,
            "roi_tables": {"dir": str(ABIDE / "rois_cc200"), "pattern": "{FILE_ID}_rois_cc200.1D"},
            "participants": str(ABIDE / "phenotypic.csv"),
            "participant_column": "SUB_ID",
            "timeseries_tr": str(ABIDE / "site_tr.tsv"),
            "mean_fd_column": "func_mean_fd",
        },
        "label": {"column": "DX_GROUP", "positive": "1", "site_column": "SITE_ID"},
        "atlas": {"name": "CC200", "path": str(ABIDE / "CC200.nii.gz"), "labels": None},
        "cv": {"n_folds": 3},
        "methods": {
            "logreg_fc": {"stages": ["fit"]},
            "gcn_fc": {"stages": ["train"], "params": {"epochs": 3}},
        },
    }


@pytest.mark.timeout(7200)
def test_abide_cc200_runs_to_the_report(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")  # as in a checkout
    configfile = tmp_path / "abide.yaml"
    configfile.write_text(yaml.safe_dump(abide_config(tmp_path / "results"), sort_keys=False))
    result = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "--cores", "2",
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(configfile),
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=7000,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # the defaults' harmonise covariates are not ABIDE's column names: said once at planning
    assert "harmonise.covariates ['age', 'sex'] are neither columns of phenotypic.csv" in (
        result.stdout + result.stderr
    )

    results = tmp_path / "results"
    summary = pd.read_csv(results / "eval" / "summary.tsv", sep="\t")
    assert set(METHODS) <= set(summary["method"])
    qc = pd.read_csv(results / "qc" / "qc.tsv", sep="\t", dtype=str)
    fmri = qc[qc["modality"] == "fmri"]
    assert len(fmri) == len(pd.read_csv(ABIDE / "phenotypic.csv"))  # every subject has a table
    assert (fmri["status"] == "included").sum() > len(fmri) // 2
    assert (results / "reports" / "index.html").exists()
