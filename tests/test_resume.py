"""Kill a training stage mid-run, start the same call again, and get the uninterrupted result.

What makes the outcome deterministic (see brainfuse.methods.torch.runner):

* SIGTERM: Lightning finishes the current batch, then ``SaveOnSigterm`` writes ``last.ckpt`` at
  that step and the process exits with status 143;
* SIGKILL: nothing runs; the resume point is the periodic ``last.ckpt`` (every
  ``checkpoint_every_n_steps`` steps);
* either way the checkpoint holds the loader position and the generator states, so the resumed
  run trains on the same batches with the same dropout masks and augmentations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch.runner import run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches

pytestmark = pytest.mark.resume

EVERY = 3  # periodic checkpoint interval (steps)
PARAMS = {
    # 12 training samples in batches of 2: 6 steps per epoch, up to 180 steps, so that a kill
    # sent when the first checkpoint appears lands well before the end.
    "epochs": 30, "batch_size": 2, "patience": 30, "checkpoint_every_n_steps": EVERY,
    "num_threads": 1, "dropout": 0.3,
    "augment": {"edge_drop": {"rate": 0.1}, "node_noise": {"sigma": 0.02, "p": 0.5}},
}  # fmt: skip

SCRIPT = """
import json, sys
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch.runner import run_torch_stage
call = json.loads(sys.argv[1])
run_torch_stage(StageRequest(**{**call, "outputs": StageOutputs(**call["outputs"])}))
"""


def _call(data: dict[str, str], out: Path) -> dict:
    return {
        "method": "gcn_fc", "stage": "fit", "fold": 0, "params": PARAMS,
        "cache_paths": {"fmri": data["fmri"]}, "folds_path": data["folds"], "previous": None,
        "positive": "patient", "seed": 7,
        "outputs": {"model": str(out / "model.bin"), "metrics": str(out / "metrics.json"),
                    "predictions": str(out / "predictions.tsv")},
        "checkpoint_dir": str(out / "ckpt"),
    }  # fmt: skip


def _request(call: dict) -> StageRequest:
    return StageRequest(**{**call, "outputs": StageOutputs(**call["outputs"])})


def _results(out: Path) -> tuple[dict, str]:
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("seconds", "resumed_from_step"):
        metrics.pop(key)
    return metrics, (out / "predictions.tsv").read_text()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_synthetic_caches(tmp_path_factory.mktemp("caches"), n_subjects=24, seed=1)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_torch_stage(_request(_call(data, out)))
    return _results(out)


def _kill_after_first_checkpoint(data: dict[str, str], out: Path, sig: signal.Signals) -> int:
    """Run the stage in a child process, send ``sig`` once ``last.ckpt`` exists; the step it
    holds afterwards."""
    script = out / "stage.py"
    script.write_text(SCRIPT)
    last = out / "ckpt" / "last.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, str(script), json.dumps(_call(data, out))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 300
        while not last.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, (
            "the stage ended before its first checkpoint: "
            + ((out / "child.log").read_text()[-2000:])
        )
        child.send_signal(sig)
        returncode = child.wait(timeout=300)
    expected = 128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL
    assert returncode == expected, (out / "child.log").read_text()[-3000:]
    assert not (out / "metrics.json").exists()
    return int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_stage_resumes_to_the_same_result(data, reference, tmp_path, sig, caplog):
    step = _kill_after_first_checkpoint(data, tmp_path, sig)
    assert step > 0
    if sig == signal.SIGKILL:
        assert step % EVERY == 0  # only the periodic checkpoint survives a SIGKILL

    # the same call, as a requeued job would make it; neither loading nor saving a checkpoint
    # says that weights_only was not set (Lightning logs it at INFO on every save without it)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO"):
        warnings.simplefilter("always")
        run_torch_stage(_request(_call(data, tmp_path)))
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [message for message in said if "weights_only" in message]

    resumed = json.loads((tmp_path / "metrics.json").read_text())
    assert resumed["resumed_from_step"] == step > 0
    metrics, predictions = _results(tmp_path)
    assert metrics == reference[0]
    assert predictions == reference[1]
    assert metrics["steps"] > step
