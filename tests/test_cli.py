"""The brainfuse command line: inspect prints what a user needs to know about an artifact."""

import subprocess
import sys

import numpy as np
import pandas as pd

from brainfuse.cli import BENCHES, main
from brainfuse.core.cache import write_cache


def test_inspect_cache(tmp_path, capsys):
    path = tmp_path / "sc.parquet"
    table = pd.DataFrame(
        {"sample_id": ["sub-01", "sub-02"], "subject": ["01", "02"], "label": ["a", "b"]}
    )
    write_cache(path, table, {"sc": np.ones((2, 3, 3), np.float32)}, {"atlas": "Schaefer100"})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rows: 2" in out and "sc: shape (2, 3, 3)" in out and "Schaefer100" in out
    assert "label: {'a': 1, 'b': 1}" in out


def test_inspect_table_and_json(tmp_path, capsys):
    (tmp_path / "s.tsv").write_text("method\tauc_mean\nlogreg_fc\t0.9\n")
    (tmp_path / "m.json").write_text('{"auc": 0.9}')
    main(["inspect", str(tmp_path / "s.tsv"), str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert "logreg_fc" in out and '"auc": 0.9' in out


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "brainfuse.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("demo-data", "inspect", "bench", "run"):
        assert command in result.stdout
    assert set(BENCHES) == {"parcellation", "eeg", "train", "dag", "ingest", "methods", "encoders"}
