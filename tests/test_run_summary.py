"""The end-of-run summary: exclusions grouped by cause, skipped methods, where the report is."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from brainfuse.run_summary import reason_group, run_summary

ROOT = Path(__file__).resolve().parents[1]
SUB05_BOLD = "/data/sub-05/func/sub-05_task-rest_bold.nii.gz"
TRUNCATED = "file is truncated (expected 1000 samples)"


def _qc_table(tmp_path: Path) -> Path:
    """Six fMRI samples (two causes, one repeated across subjects) and two EEG samples."""
    rows = [
        ("fmri", "sub-01", "included", ""),
        ("fmri", "sub-02", "included", ""),
        ("fmri", "sub-03", "excluded", "sub-03_task-rest_bold.nii.gz: confounds file is missing"),
        ("fmri", "sub-04", "excluded", "sub-04_task-rest_bold.nii.gz: confounds file is missing"),
        ("fmri", "sub-05", "excluded", f"{SUB05_BOLD}: confounds file is missing"),
        ("fmri", "sub-06", "excluded", "no label in participants.tsv for this subject"),
        ("eeg", "sub-01", "included", ""),
        ("eeg", "sub-02", "excluded", f"sub-02_ses-1_run-2_eeg.edf: {TRUNCATED}"),
    ]
    qc = pd.DataFrame(rows, columns=["modality", "sample_id", "status", "reason"])
    path = tmp_path / "qc.tsv"
    qc.to_csv(path, sep="\t", index=False)
    return path


def test_reasons_differing_only_by_subject_or_directory_group_together():
    assert reason_group(f"{SUB05_BOLD}: bad") == "sub-*_task-rest_bold.nii.gz: bad"
    assert reason_group("sub-02_ses-1_run-2_eeg.edf: x") == "sub-*_ses-*_run-*_eeg.edf: x"
    assert reason_group("no label in participants.tsv") == "no label in participants.tsv"
    # a non-BIDS name holding the (zero-padded) subject label, as ABIDE's ROI tables do
    table = "/abide/rois_cc200/OHSU_0050146_rois_cc200.1D: only 195 s of data (minimum 240 s)"
    assert (
        reason_group(table, "50146") == "OHSU_*_rois_cc200.1D: only 195 s of data (minimum 240 s)"
    )
    assert reason_group(table, "146") == reason_group(table)  # only a whole label is masked
    assert reason_group("only 1 run: 0.5 s", "1") == "only 1 run: 0.5 s"  # names only


def test_summary_counts_samples_and_groups_causes(tmp_path):
    text = run_summary(_qc_table(tmp_path), {}, tmp_path / "index.html")
    assert "fmri: 2 included, 4 excluded" in text
    assert "3 x sub-*_task-rest_bold.nii.gz: confounds file is missing" in text
    assert "1 x no label in participants.tsv for this subject" in text
    assert "eeg: 1 included, 1 excluded" in text
    assert f"1 x sub-*_ses-*_run-*_eeg.edf: {TRUNCATED}" in text
    assert "/data/" not in text
    # the most frequent cause comes first
    assert text.index("3 x") < text.index("1 x no label")


def test_summary_keeps_the_top_three_causes(tmp_path):
    rows = [("sc", f"sub-{i}", "excluded", f"cause {i % 5}") for i in range(10)]
    rows += [("sc", "sub-x", "excluded", "cause 0")]
    qc = pd.DataFrame(rows, columns=["modality", "sample_id", "status", "reason"])
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    text = run_summary(tmp_path / "qc.tsv", {}, tmp_path / "index.html")
    assert "3 x cause 0" in text
    assert sum(" x cause " in line for line in text.splitlines()) == 3
    assert "and 2 other reasons" in text


def test_summary_lists_skipped_methods_and_the_report(tmp_path):
    report = tmp_path / "reports" / "index.html"
    skipped = {"brainmass": "needs eeg data, which this dataset does not have"}
    before = run_summary(_qc_table(tmp_path), skipped, report)
    assert "methods skipped:" in before
    assert "brainmass: needs eeg data, which this dataset does not have" in before
    assert f"not made yet ({report})" in before
    report.parent.mkdir()
    report.write_text("<html></html>")
    assert f"report: {report}" in run_summary(_qc_table(tmp_path), skipped, report)
    assert "methods skipped" not in run_summary(_qc_table(tmp_path), {}, report)


def _snakemake(workdir: Path, *args: str) -> str:
    """The output of the real Snakefile run in ``workdir`` with a copy of config.yaml."""
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(workdir)]
        + ["--snakefile", str(ROOT / "Snakefile"), *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_dry_run_succeeds_without_a_summary(tmp_path):
    """The handler is parsed with the Snakefile; a dry run neither fails nor prints a summary."""
    (tmp_path / "results/qc").mkdir(parents=True)  # even where an earlier run left a QC table
    _qc_table(tmp_path).rename(tmp_path / "results/qc/qc.tsv")
    output = _snakemake(tmp_path, "-n")
    assert "brainfuse run summary" not in output


def test_a_finished_run_ends_with_the_summary(tmp_path):
    """``--touch`` completes every job without running one, so the success handler fires."""
    (tmp_path / "results/qc").mkdir(parents=True)
    _qc_table(tmp_path).rename(tmp_path / "results/qc/qc.tsv")
    output = _snakemake(tmp_path, "--touch")
    summary = output[output.index("brainfuse run summary") :]
    assert "3 x sub-*_task-rest_bold.nii.gz: confounds file is missing" in summary
    assert str(tmp_path / "results/reports/index.html") in summary


def test_wall_time_is_the_last_line(tmp_path):
    text = run_summary(_qc_table(tmp_path), {}, tmp_path / "index.html", wall_seconds=283.6)
    assert text.splitlines()[-1] == "wall time: 4 min 44 s"
    assert "wall time" not in run_summary(_qc_table(tmp_path), {}, tmp_path / "index.html")
