"""Workflow start-up at scale: a 200-subject placeholder dataset, planned twice by snakemake -n.

The first dry run builds the pybids index in ``input.pybids_db_dir``; the second reuses it
unchanged: its files are not rewritten, and a subject added between the two runs is not seen
(the README's advice, "delete that folder after adding subjects", is what makes it appear).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from brainfuse.benchmarks.dag import dry_run, job_count, make_config, make_tree

N_SUBJECTS = 200
TIMEOUT = 300  # seconds per dry run (about 15 s each on two idle cores)


def _index_state(db_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(db_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(db_dir.rglob("*"))
        if p.is_file()
    }


def test_dry_run_200_subjects_reuses_pybids_index(tmp_path):
    roots = make_tree(tmp_path / "data", N_SUBJECTS)
    configfile = make_config(tmp_path, roots)
    db_dir = tmp_path / "results" / ".pybids"
    assert not db_dir.exists()

    _, out = dry_run(tmp_path, configfile, TIMEOUT)
    jobs = job_count(out)
    # one job per chunk of `batching` fMRI runs, EEG recordings and SC matrices
    chunk = yaml.safe_load(configfile.read_text())["batching"]["default"]
    # (the job table is printed twice: before the job list and at its end)
    chunks = {line for line in out.splitlines() if re.fullmatch(r"(fmri|eeg|sc)_run_\d+\s+1", line)}
    assert len(chunks) == 3 * math.ceil(N_SUBJECTS / chunk) > 3, out[-3000:]
    state = _index_state(db_dir)
    assert {Path(name).parts[0] for name in state} == {"bold", "eeg", "sc"}, state

    # A new subject after the index was built: the cached index does not know it.
    make_tree(tmp_path / "data", N_SUBJECTS + 1)
    _, out = dry_run(tmp_path, configfile, TIMEOUT)
    assert job_count(out) == jobs, out[-3000:]
    assert _index_state(db_dir) == state
