"""Kill the whole workflow mid-training with SIGKILL, run the same command again, get the result
of an uninterrupted run.

The workflow runs through the workstation profile (workflow/profiles/local) on the fMRI of the
smallest demo dataset (as in tests/test_slurm.py), with one torch method whose training stage
checkpoints every step. Once that stage's ``last.ckpt`` exists, Snakemake's whole process group
(Snakemake, the job's Snakemake process and the training script) gets SIGKILL: nothing runs
after it, no cleanup, no SIGTERM checkpoint. What a user then sees and does is what the test
does: the same command refuses to start because the dead run left its lock, ``--unlock``, the
same command again. The resumed stage must report the step of the checkpoint it found and end
with the predictions and weights of the same stage trained in one go.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_slurm import (
    assert_same_as_uninterrupted,
    checkpoint,
    checkpoint_step,
    demo_dataset,
    reduced_config,
    stage_dir,
    write_config,
)

pytestmark = [pytest.mark.resume, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflow" / "profiles" / "local"
METHOD, STAGE, FOLD = "gcn_fc", "train", 0
# 8 demo subjects in 2 folds leave 3 training subjects: batches of 1 and 30 epochs make 90 steps
# (about 5 s of training), no early stopping, a checkpoint after every step.
PARAMS = {"epochs": 30, "batch_size": 1, "patience": 30, "checkpoint_every_n_steps": 1}
TARGET = "results/eval/summary.tsv"
OUTPUTS = ("model.bin", "metrics.json", "predictions.tsv")


def command(workdir: Path, *args: str) -> list[str]:
    """The command a user types (the same one before and after the kill)."""
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        "--profile", str(PROFILE),
        "--cores", "2",
        *args,
    ]  # fmt: skip


ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def run(workdir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(workdir, *args), capture_output=True, text=True, timeout=timeout, env=ENV
    )


def kill_when_checkpointed(workdir: Path, last: Path, timeout: float = 300) -> str:
    """Start the workflow in a process group of its own; SIGKILL the group once the stage's
    ``last.ckpt`` exists. Returns the run's output."""
    log_path = workdir / "killed_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command(workdir, TARGET),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,  # its own process group: the kill reaches every job
        )
        try:
            deadline = time.monotonic() + timeout
            while not last.exists():
                assert proc.poll() is None, "the run ended before the first checkpoint"
                assert time.monotonic() < deadline, "no checkpoint within the time limit"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # The group is gone only when its last member is (the job processes are not our children).
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "processes of the killed run survived SIGKILL"
        time.sleep(0.1)
    return log_path.read_text()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def incomplete_markers(workdir: Path) -> set[str]:
    """Outputs Snakemake marked as being written by a job that has not finished."""
    folder = workdir / ".snakemake" / "incomplete"
    return {base64.urlsafe_b64decode(p.name).decode() for p in folder.iterdir() if p.is_file()}


def test_sigkilled_workflow_resumes_to_the_same_result(tmp_path, atlas_data_dir):
    bids = demo_dataset(tmp_path, atlas_data_dir)
    workdir = tmp_path / "work"
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(bids / "derivatives" / "fmriprep"),
        participants=str(bids / "participants.tsv"),
    )
    config["methods"] = {METHOD: {"stages": [STAGE], "params": PARAMS}}
    write_config(workdir, config)
    outputs = stage_dir(workdir, METHOD, FOLD, STAGE)
    last = checkpoint(workdir, METHOD, FOLD, STAGE)

    start = time.monotonic()
    killed_log = kill_when_checkpointed(workdir, last)
    print(f"run until the kill: {time.monotonic() - start:.0f} s")

    # The kill landed mid-training: a checkpoint, none of the stage's outputs, and Snakemake's
    # record that the job started and never finished.
    killed_step = checkpoint_step(last)
    assert killed_step > 0, killed_log[-3000:]
    assert not any((outputs / name).exists() for name in OUTPUTS), killed_log[-3000:]
    marked = {str((outputs / name).relative_to(workdir)) for name in OUTPUTS}
    assert marked <= incomplete_markers(workdir), killed_log[-3000:]
    assert not (workdir / TARGET).exists()

    # The dead run's lock stays behind (README, "Resuming"): the same command says so ...
    locked = run(workdir, TARGET, timeout=120)
    assert locked.returncode != 0
    assert "cannot be locked" in locked.stdout + locked.stderr, locked.stderr[-3000:]
    # ... and runs once the lock is removed.
    assert run(workdir, "--unlock", timeout=120).returncode == 0
    start = time.monotonic()
    rerun = run(workdir, TARGET)
    print(f"rerun: {time.monotonic() - start:.0f} s")
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert (workdir / TARGET).exists()

    # The stage ran again and started from the checkpoint the kill left.
    metrics = json.loads((outputs / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == killed_step, metrics
    assert metrics["steps"] > killed_step, metrics
    assert not incomplete_markers(workdir)

    # The same stage trained in one go, outside Snakemake, gives the same predictions and weights.
    assert_same_as_uninterrupted(workdir, config, METHOD, FOLD, STAGE, tmp_path / "reference")
