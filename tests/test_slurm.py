"""The workflow through workflow/profiles/slurm: a dry run, and a real run on a local SLURM.

``test_profile_dry_run`` (no cluster, seconds) checks that Snakemake accepts every profile key,
that the per-sample steps go in chunk jobs (config ``batching``), that torch training goes to the
GPU partition and that the baselines stay on CPU.

``test_workflow_on_slurm`` (marked ``slurm`` and ``slow``) runs the workflow up to
``results/eval/summary.tsv`` on a one-node cluster from tests/slurm_cluster.py: Debian's Slurm
22.05 packages (installed with apt when missing; the test is skipped only where apt cannot be
used), munged, slurmctld and slurmd on localhost with fake GPUs. Its input is the fMRI of the
smallest demo dataset (8 subjects, written locally by the workflow's own demo_data rule) given
as real data: an fMRIPrep derivatives tree, discovered with pybids. That keeps the run to a few
minutes on two cores: every SLURM job is a Snakemake process of its own (5-30 s each, depending
on how busy the machine is), and the plugin polls job states
after 10 s, 30 s, 60 s, ... so each level of the DAG costs about 30 s; EEG, SC and the report
levels are left out for that reason (tests/test_workflow.py runs them locally). The
repository's profile is used, changed only where a one-node test cluster needs it
(:func:`local_profile`). The assertions read what slurmctld recorded about every job: torch
training jobs (rule ``train_stage``) asked for a GPU in the GPU partition, the baselines (rule
``fit_baseline``) and everything else did not, and the fMRI runs went in as one job per chunk
of ``batching`` runs.

During the run, one training job is killed as SLURM kills a job at its time limit (SIGTERM to
its step, as the profile's ``--signal=TERM@120`` sends it before the limit, then ``scancel``) once
it has written a checkpoint. Snakemake must submit it again (the profile's ``retries``), and the
new job must resume from that checkpoint and end with the predictions and weights of the same
stage trained in one go. The cluster is always shut down and its state removed, also when the
run fails or times out.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, LocalSlurm, ensure_installed

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
GPU_KEYS = ("gpu", "gpu_model", "gres")
N_SUBJECTS, N_FOLDS = 8, 2  # the smallest demo the schema allows
# Two baselines (CPU jobs) and one torch method (GPU jobs). With 3 training subjects per fold,
# batches of 1 and 40 epochs make 120 steps, a checkpoint after each (a few seconds of
# training): the job to kill is found while it trains.
TORCH_PARAMS = {"epochs": 40, "batch_size": 1, "patience": 40, "checkpoint_every_n_steps": 1}
METHODS = {
    "majority": {"stages": ["fit"]},
    "logreg_fc": {"stages": ["fit"]},
    "gcn_fc": {"stages": ["train"], "params": TORCH_PARAMS},
}
KILLED = ("gcn_fc", 0, "train")  # the training job killed mid-run: method, fold, stage
RUN_TIMEOUT = 600  # seconds for the SLURM run (then SIGINT, and SIGKILL 30 s later)
# modality -> outputs counting its samples (under results/), and the samples per SLURM job
CHUNKED_OUTPUTS = {"fmri": "sub-*/func/*_stat-mean_timeseries.tsv"}
SLURM_CHUNK = 5
TARGET = "results/eval/summary.tsv"


def snakemake_command(workdir: Path, *args: str, timeout: float) -> list[str]:
    """snakemake under ``timeout -s INT``: with the SLURM executor it ignores SIGTERM."""
    return [
        "timeout", "-s", "INT", "-k", "30", str(int(timeout)),
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        *args,
    ]  # fmt: skip


def snakemake_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("SLURM_CONF", None)
    return env


def snakemake(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(workdir, *args, timeout=timeout),
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        env=snakemake_env(),
        cwd=workdir,
    )


def reduced_config(atlas_data_dir: str | None, **inputs) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["input"].update(inputs)
    config["cv"]["n_folds"] = N_FOLDS
    config["atlas"]["data_dir"] = atlas_data_dir
    config["methods"] = METHODS
    config["curves"]["in_report"] = False  # the demo's learning curves: tests/test_workflow.py
    return config


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def local_profile(profile: dict, cpu: str, gpu: str) -> dict:
    """The repository's profile with the changes a one-node test cluster needs.

    - no slurmdbd here: status from ``squeue`` (slurmctld keeps finished jobs for MinJobAge =
      300 s, more than 3 x the first check after 10 s; the plugin then waits 20 s, 30 s, ...
      between checks until a job ends), no account (nothing to validate it against)
    - the local partition names, and GPU jobs ask for the plain fake GPU (no model)
    - sized for two shared cores: at most 4 jobs at a time (most of a short job's time is
      Snakemake starting and the plugin waiting to poll); the profile's ``retries`` stay, the
      killed training job needs them
    - SLURM logs kept for the failure message
    """
    profile = dict(profile)
    profile.pop("slurm-qos", None)
    profile.update(
        {
            "jobs": 4,
            "latency-wait": 10,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 10,
            "slurm-no-account": True,
            "slurm-keep-successful-logs": True,
        }
    )
    defaults = dict(profile.get("default-resources") or {})
    defaults.pop("slurm_account", None)
    defaults["slurm_partition"] = cpu
    profile["default-resources"] = defaults
    per_rule = {}
    for rule, resources in (profile.get("set-resources") or {}).items():
        resources = {k: v for k, v in resources.items() if k not in ("slurm_account", "gpu_model")}
        is_gpu = any(resources.get(k) for k in GPU_KEYS)
        if resources.pop("gres", None):
            resources["gpu"] = 1
        resources["slurm_partition"] = gpu if is_gpu else cpu
        per_rule[rule] = resources
    profile["set-resources"] = per_rule
    return profile


def test_profile_dry_run(tmp_path, atlas_data_dir):
    """Every profile key is accepted; per-sample steps run in chunk jobs, torch training stages
    ask for a GPU, baselines and chunk jobs do not."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    workdir = tmp_path / "dry"
    write_config(workdir, reduced_config(atlas_data_dir, demo_subjects=12))
    result = snakemake(workdir, "--profile", str(PROFILE.parent), "--dry-run", timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    blocks = out.split("rule ")
    for modality in ("fmri", "eeg", "sc"):
        # 12 subjects: one chunk of the default 50 samples per modality
        chunks = [b for b in blocks if re.match(rf"{modality}_run_\d+:", b)]
        assert len(chunks) == 1, modality
    train = [b for b in blocks if b.startswith("train_stage:")]
    assert len(train) == N_FOLDS  # gcn_fc: one stage per fold
    assert all("slurm_partition=gpu" in b and "gpu=1" in b for b in train)
    cpu_rules = r"(fmri|eeg|sc)_run_\d+|fit_baseline"
    cpu_jobs = [b for b in blocks if re.fullmatch(cpu_rules, b.split(":")[0])]
    baselines = [b for b in cpu_jobs if b.startswith("fit_baseline:")]
    assert len(baselines) == (len(METHODS) - 1) * N_FOLDS
    assert all("slurm_partition=cpu" in b and "gpu=" not in b for b in cpu_jobs)


@pytest.fixture(scope="module")
def local_slurm():
    """A running one-node cluster (partitions ``cpu`` and ``gpu``), stopped after the module."""
    try:
        install_seconds = ensure_installed()
    except ClusterUnavailable as err:
        pytest.skip(str(err))
    cluster = LocalSlurm()
    try:
        cluster.start()
    except ClusterUnavailable as err:
        cluster.stop()
        pytest.skip(str(err))
    print(f"slurm install {install_seconds:.1f} s, cluster start {cluster.start_seconds:.1f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


def demo_dataset(tmp_path: Path, atlas_data_dir: str | None) -> Path:
    """The demo dataset, written locally by the workflow's own demo_data rule (all fMRI as BOLD)."""
    workdir = tmp_path / "demo"
    config = reduced_config(atlas_data_dir, demo_subjects=N_SUBJECTS, demo_xcpd_subjects=0)
    write_config(workdir, config)
    target = "results/demo_bids/ground_truth.json"
    result = snakemake(workdir, "--cores", "2", target, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "demo_bids"


def stage_dir(workdir: Path, method: str, fold: int, stage: str) -> Path:
    return workdir / "results" / "models" / method / f"fold-{fold}" / stage


def checkpoint(workdir: Path, method: str, fold: int, stage: str) -> Path:
    return workdir / "results" / "checkpoints" / method / f"fold-{fold}" / stage / "last.ckpt"


def checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def assert_same_as_uninterrupted(
    workdir: Path, config: dict, method: str, fold: int, stage: str, out: Path
) -> dict:
    """The stage's outputs in ``workdir`` equal those of the same stage trained in one go outside
    Snakemake (same caches, folds, parameters and thread count): identical predictions.tsv and
    model weights. Returns the workflow's metrics.json."""
    import torch

    from brainfuse.methods.catalog import default_catalog
    from brainfuse.methods.request import StageOutputs, StageRequest
    from brainfuse.methods.run import run_stage

    done = stage_dir(workdir, method, fold, stage)
    saved = torch.load(done / "model.bin", map_location="cpu", weights_only=True)
    request = StageRequest(
        method=method,
        stage=stage,
        fold=fold,
        cache_paths={
            m: str(workdir / "results" / "cache" / f"{m}.parquet")
            for m in default_catalog()[method].modalities
        },
        folds_path=str(workdir / "results" / "folds" / "folds.tsv"),
        positive=config["label"]["positive"],
        seed=config["seed"],
        outputs=StageOutputs(
            model=str(out / "model.bin"),
            metrics=str(out / "metrics.json"),
            predictions=str(out / "predictions.tsv"),
        ),
        # the job's thread count (the rule's threads), as the job recorded it
        params={
            **config["methods"][method].get("params", {}),
            "num_threads": saved["params"]["num_threads"],
        },
        checkpoint_dir=str(out / "checkpoints"),
    )
    run_stage(request)
    reference = json.loads((out / "metrics.json").read_text())
    metrics = json.loads((done / "metrics.json").read_text())
    assert reference["resumed_from_step"] == 0
    assert (done / "predictions.tsv").read_text() == (out / "predictions.tsv").read_text()
    weights = saved["state_dict"]
    uninterrupted = torch.load(out / "model.bin", map_location="cpu", weights_only=True)
    assert weights.keys() == uninterrupted["state_dict"].keys()
    for key, tensor in weights.items():
        assert torch.equal(tensor, uninterrupted["state_dict"][key]), key
    for key in ("steps", "epochs", "best_step", "best_val", "auc"):
        assert metrics[key] == reference[key], key
    return metrics


def running_job(comment: str) -> str | None:
    """The id of the running SLURM job whose comment (rule and wildcards) is ``comment``."""
    result = subprocess.run(
        ["squeue", "--noheader", "--format=%i %T %k"], capture_output=True, text=True, timeout=30
    )
    for line in result.stdout.splitlines():
        job_id, state, job_comment = [*line.split(maxsplit=2), ""][:3]
        if job_comment.strip() == comment and state == "RUNNING":
            return job_id
    return None


def kill_like_a_time_limit(job_id: str, stage_log: Path, timeout: float = 60) -> str:
    """What SLURM does to a training job near its time limit with the profile's
    ``--signal=TERM@120``: SIGTERM to the processes of the job's steps (the training script
    saves a checkpoint and exits), then, at the limit, the kill (``scancel``: SIGTERM to every
    process including the batch shell and ``srun``, SIGKILL ``KillWait`` later). Returns the
    stage log's lines about SIGTERM, read before the resubmitted job rewrites the log."""

    def alive() -> bool:
        result = subprocess.run(
            ["squeue", "--noheader", "--jobs", job_id, "--states=RUNNING,COMPLETING"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return bool(result.stdout.strip())

    def sigterm_lines() -> str:
        lines = stage_log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "SIGTERM" in line)

    # Job steps only, as sbatch --signal without `B:` does. Signalling the batch step too
    # (`--full`) reaches `srun`, which then kills the step before the script can save.
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True, timeout=30)
    deadline = time.monotonic() + 30
    # "interrupted by SIGTERM" is the script's last word, after the checkpoint (if any)
    while alive() and "interrupted by" not in sigterm_lines() and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    deadline = time.monotonic() + timeout
    while alive():
        assert time.monotonic() < deadline, f"SLURM job {job_id} outlived scancel"
        time.sleep(0.2)
    return sigterm_lines()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 240)
def test_workflow_on_slurm(local_slurm: LocalSlurm, tmp_path, atlas_data_dir, small_demo_bids):
    """The workflow on SLURM: jobs in the right partitions with the right GPU requests, fMRI
    runs in chunk jobs, and a training job killed as at a time limit is resubmitted by Snakemake
    and resumes from its checkpoint to the result of an uninterrupted run."""
    bids = small_demo_bids
    workdir = tmp_path / "work"
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(bids / "derivatives" / "fmriprep"),
        participants=str(bids / "participants.tsv"),
    )
    config["batching"] = {"default": SLURM_CHUNK}  # two fMRI chunk jobs side by side
    write_config(workdir, config)
    cpu, gpu = local_slurm.partitions[:2]
    profile = local_profile(yaml.safe_load(PROFILE.read_text()), cpu, gpu)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))

    method, fold, stage = KILLED
    comment = f"rule_train_stage_wildcards_{method}_{fold}_{stage}"
    last = checkpoint(workdir, method, fold, stage)
    outputs = stage_dir(workdir, method, fold, stage)
    stage_log = workdir / "results" / "logs" / "train" / f"{method}_fold-{fold}_{stage}.log"
    killed: dict = {}
    out_path = tmp_path / "snakemake.out"
    start = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            snakemake_command(workdir, "--profile", str(profile_dir), TARGET, timeout=RUN_TIMEOUT),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=snakemake_env(),
            cwd=workdir,
        )
        try:
            # Kill the training job once it has checkpointed; then let Snakemake carry on.
            while proc.poll() is None:
                if not killed and last.exists():
                    job_id = running_job(comment)
                    assert job_id, f"no running SLURM job {comment} while {last} exists"
                    killed["sigterm_log"] = kill_like_a_time_limit(job_id, stage_log)
                    killed["job"] = next(j for j in local_slurm.jobs() if j["JobId"] == job_id)
                    killed["step"] = checkpoint_step(last)
                    killed["done"] = (outputs / "metrics.json").exists()
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()  # `timeout` has already had its chance
            proc.wait(timeout=60)
    print(f"snakemake on SLURM: {time.monotonic() - start:.0f} s; killed: {killed}")
    output = out_path.read_text()
    jobs = local_slurm.jobs()

    def context() -> str:
        slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
        tails = [f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in slurm_logs[-3:]]
        return "\n".join([output[-8000:], *tails, local_slurm.log_tail(1500)])

    assert proc.returncode == 0, context()
    assert (workdir / TARGET).exists(), context()

    # The kill landed mid-training, in the GPU job: a checkpoint, no outputs yet.
    assert killed, f"{last} never appeared"
    assert killed["step"] > 0 and not killed["done"], killed
    # The training script itself got the SIGTERM and stopped on it (saving a checkpoint, unless
    # the signal came during validation).
    assert "interrupted by SIGTERM" in killed["sigterm_log"], killed
    assert killed["job"]["Partition"] == gpu, killed["job"]
    assert "gpu:1" in killed["job"].get("TresPerJob", "") + killed["job"].get("TresPerNode", "")

    # Every SLURM job of this run, as slurmctld recorded it (it keeps them for MinJobAge).
    assert jobs, "slurmctld knows no jobs"
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        if job["JobId"] == killed["job"]["JobId"]:
            assert job["JobState"] in ("CANCELLED", "FAILED"), job
            continue
        assert job["JobState"] == "COMPLETED", job
        rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append(job)

    # Torch training stages asked for a GPU in the GPU partition, one job per fold, and the
    # killed one was submitted again (the profile's `retries`).
    torch_methods = [m for m, spec in METHODS.items() if spec.get("params")]
    train = by_rule.pop("train_stage", [])
    assert len(train) == len(torch_methods) * N_FOLDS, sorted(by_rule)
    assert sum(job["Comment"] == comment for job in train) == 1
    for job in train:
        assert job["Partition"] == gpu, job
        assert "gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    # Baselines and everything else: CPU partition, no GPU.
    baselines = by_rule.get("fit_baseline", [])
    assert len(baselines) == (len(METHODS) - len(torch_methods)) * N_FOLDS, sorted(by_rule)
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            assert job["Partition"] == cpu, (rule, job)
            assert "gpu" not in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job

    # The resubmitted job resumed from the checkpoint the killed one left, and ended where an
    # uninterrupted run ends.
    metrics = assert_same_as_uninterrupted(
        workdir, config, method, fold, stage, tmp_path / "reference"
    )
    assert metrics["resumed_from_step"] == killed["step"], (metrics, killed)
    assert metrics["steps"] > killed["step"]

    # fMRI runs go in one SLURM job per chunk of `batching` runs (rules fmri_run_0, ...).
    for modality, pattern in CHUNKED_OUTPUTS.items():
        samples = len(list((workdir / "results").glob(pattern)))
        chunks = [r for r in by_rule if re.fullmatch(rf"{modality}_run_\d+", r)]
        expected = math.ceil(samples / SLURM_CHUNK)
        assert samples > SLURM_CHUNK and len(chunks) == expected, (modality, sorted(by_rule))
        assert all(len(by_rule[r]) == 1 for r in chunks), sorted(by_rule)
