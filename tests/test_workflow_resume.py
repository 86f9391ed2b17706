"""Interrupt the whole workflow mid-training, run the same command again, get the result of an
uninterrupted run.

The workflow runs through the workstation profile (workflow/profiles/local) on the fMRI of the
smallest demo dataset (as in tests/test_slurm.py), with one torch method whose training stage
checkpoints every step. Once that stage's ``last.ckpt`` exists, Snakemake's whole process group
(Snakemake, the job's Snakemake process and the training script) gets a signal:

* SIGKILL: nothing runs after it, no cleanup. What a user then sees and does is what the test
  does: the same command refuses to start because the dead run left its lock, ``--unlock``, the
  same command again;
* SIGINT (Ctrl-C in the terminal): Snakemake cleans up, and the same command runs at once.

Either way the stage's outputs must not exist after the interruption, and the rerun stage must
report the step of the checkpoint it found and end with the predictions and weights of the same
stage trained in one go outside Snakemake.
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


def signal_when_checkpointed(
    workdir: Path, last: Path, sig: signal.Signals, timeout: float = 300
) -> tuple[int, str]:
    """Start the workflow in a process group of its own and send ``sig`` to the whole group once
    the stage's ``last.ckpt`` exists, as a terminal's Ctrl-C (SIGINT) or a kill of the session
    (SIGKILL) reaches every process of the run. Returns Snakemake's exit status and output."""
    log_path = workdir / f"{sig.name}_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command(workdir, TARGET),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,  # its own process group: the signal reaches every job
            # A shell that starts pytest in the background leaves SIGINT ignored, and ignored
            # signals are inherited: give the run a terminal's default handling.
            preexec_fn=_default_sigint,
        )
        try:
            deadline = time.monotonic() + timeout
            while not last.exists():
                assert proc.poll() is None, "the run ended before the first checkpoint"
                assert time.monotonic() < deadline, "no checkpoint within the time limit"
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, sig)
            returncode = proc.wait(timeout=120)
    # The group is gone only when its last member is (the job processes are not our children).
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, f"processes of the run survived {sig.name}"
        time.sleep(0.1)
    return returncode, log_path.read_text()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


@pytest.fixture(scope="module")
def bids(small_demo_bids) -> Path:
    return small_demo_bids


def prepare(workdir: Path, bids: Path, atlas_data_dir: str | None) -> dict:
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(bids / "derivatives" / "fmriprep"),
        participants=str(bids / "participants.tsv"),
    )
    config["methods"] = {METHOD: {"stages": [STAGE], "params": PARAMS}}
    write_config(workdir, config)
    return config


def assert_cut_off_mid_training(workdir: Path, output: str) -> int:
    """The signal landed mid-training: a checkpoint, none of the stage's outputs. Returns the
    checkpoint's step."""
    step = checkpoint_step(checkpoint(workdir, METHOD, FOLD, STAGE))
    outputs = stage_dir(workdir, METHOD, FOLD, STAGE)
    assert step > 0, output[-3000:]
    assert not any((outputs / name).exists() for name in OUTPUTS), output[-3000:]
    assert not (workdir / TARGET).exists()
    return step


def assert_resumed(workdir: Path, config: dict, step: int, reference: Path) -> None:
    """The stage ran again, from the checkpoint at ``step``, to the uninterrupted result."""
    metrics = json.loads((stage_dir(workdir, METHOD, FOLD, STAGE) / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == step, metrics
    assert metrics["steps"] > step, metrics
    assert not incomplete_markers(workdir)
    assert_same_as_uninterrupted(workdir, config, METHOD, FOLD, STAGE, reference)


def test_sigkilled_workflow_resumes_to_the_same_result(bids, tmp_path, atlas_data_dir):
    workdir = tmp_path / "work"
    config = prepare(workdir, bids, atlas_data_dir)
    start = time.monotonic()
    returncode, output = signal_when_checkpointed(
        workdir, checkpoint(workdir, METHOD, FOLD, STAGE), signal.SIGKILL
    )
    print(f"run until the kill: {time.monotonic() - start:.0f} s")
    assert returncode == -signal.SIGKILL
    step = assert_cut_off_mid_training(workdir, output)
    # Snakemake recorded that the job started and never finished.
    outputs = stage_dir(workdir, METHOD, FOLD, STAGE)
    marked = {str((outputs / name).relative_to(workdir)) for name in OUTPUTS}
    assert marked <= incomplete_markers(workdir), output[-3000:]

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
    assert_resumed(workdir, config, step, tmp_path / "reference")


def test_interrupted_workflow_resumes_without_unlock(bids, tmp_path, atlas_data_dir):
    """Ctrl-C (SIGINT to the run's process group): Snakemake stops its jobs and cleans up after
    itself, so the same command resumes at once; the stage resumes from its periodic checkpoint
    (Lightning saves nothing on an interrupt)."""
    workdir = tmp_path / "work"
    config = prepare(workdir, bids, atlas_data_dir)
    returncode, output = signal_when_checkpointed(
        workdir, checkpoint(workdir, METHOD, FOLD, STAGE), signal.SIGINT
    )
    assert returncode != 0, output[-3000:]
    step = assert_cut_off_mid_training(workdir, output)
    rerun = run(workdir, TARGET)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert_resumed(workdir, config, step, tmp_path / "reference")
