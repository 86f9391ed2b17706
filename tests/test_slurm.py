"""The workflow through workflow/profiles/slurm: a dry run, and a real run on a local SLURM.

``test_profile_dry_run`` (no cluster, seconds) checks that Snakemake accepts every profile key and
that the profile groups the per-sample jobs and sends training to the GPU partition.

``test_workflow_on_slurm`` (marked ``slurm`` and ``slow``) runs the workflow up to
``results/eval/summary.tsv`` on a one-node cluster from tests/slurm_cluster.py: Debian's Slurm
22.05 packages (installed with apt when missing; the test is skipped only where apt cannot be
used), munged, slurmctld and slurmd on localhost with fake GPUs. Its input is the fMRI of the
smallest demo dataset (8 subjects, written locally by the workflow's own demo_data rule) given
as real data: an fMRIPrep derivatives tree, discovered with pybids. That keeps the run to a few
minutes on two cores: every SLURM job, and every member of a group job, is a Snakemake process
of its own (5-30 s each, depending on how busy the machine is), and the plugin polls job states
after 10 s, 30 s, 60 s, ... so each level of the DAG costs about 30 s; EEG, SC and the report
levels are left out for that reason (tests/test_workflow.py runs them locally). The
repository's profile is used, changed only where a one-node test cluster needs it
(:func:`local_profile`). The assertions read what slurmctld recorded about every job: training
jobs asked for a GPU in the GPU partition, the rest did not, and the fMRI runs went in as group
jobs. The cluster is always shut down and its state removed, also when the run fails or times
out.
"""

from __future__ import annotations

import math
import os
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
METHODS = {"majority": {"stages": ["fit"]}, "logreg_fc": {"stages": ["fit"]}}
RUN_TIMEOUT = 480  # seconds for the SLURM run (then SIGINT, and SIGKILL 30 s later)
# per-sample group -> outputs counting its samples (under results/)
GROUP_OUTPUTS = {"fmri": "sub-*/func/*_stat-mean_timeseries.tsv"}
TARGET = "results/eval/summary.tsv"


def snakemake(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """snakemake under ``timeout -s INT``: with the SLURM executor it ignores SIGTERM."""
    cmd = [
        "timeout", "-s", "INT", "-k", "30", str(int(timeout)),
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("SLURM_CONF", None)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout + 60, env=env, cwd=workdir
    )


def reduced_config(atlas_data_dir: str | None, **inputs) -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["input"].update(inputs)
    config["cv"]["n_folds"] = N_FOLDS
    config["atlas"]["data_dir"] = atlas_data_dir
    config["methods"] = METHODS
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
    - sized for two shared cores: at most 4 jobs at a time (the four training jobs run together;
      most of a short job's time is Snakemake starting and the plugin waiting to poll), fMRI
      groups of 5 runs (two group jobs side by side), no retries
    - SLURM logs kept for the failure message
    """
    profile = dict(profile)
    profile.pop("slurm-qos", None)
    profile.update(
        {
            "jobs": 4,
            "retries": 0,
            "latency-wait": 10,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 10,
            "slurm-no-account": True,
            "slurm-keep-successful-logs": True,
            "group-components": [
                "fmri=5" if c.startswith("fmri=") else c
                for c in profile.get("group-components", [])
            ],
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
    """Every profile key is accepted; per-sample rules are grouped, training asks for a GPU."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    workdir = tmp_path / "dry"
    write_config(workdir, reduced_config(atlas_data_dir, demo_subjects=12))
    result = snakemake(workdir, "--profile", str(PROFILE.parent), "--dry-run", timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for group in ("fmri", "eeg", "sc"):
        assert f"Group job {group} " in out, f"no group job {group}"
    blocks = out.split("rule ")
    train = [b for b in blocks if b.startswith("train_stage:")]
    assert train and all("slurm_partition=gpu" in b and "gpu=1" in b for b in train)
    per_sample = [b for b in blocks if b.split(":")[0] in ("fmri_run", "eeg_run", "sc_run")]
    assert per_sample and all("slurm_partition=cpu" in b and "gpu=" not in b for b in per_sample)


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
    result = snakemake(workdir, "--cores", "1", target, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "demo_bids"


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 180)
def test_workflow_on_slurm(local_slurm: LocalSlurm, tmp_path, atlas_data_dir):
    bids = demo_dataset(tmp_path, atlas_data_dir)
    workdir = tmp_path / "work"
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(bids / "derivatives" / "fmriprep"),
        participants=str(bids / "participants.tsv"),
    )
    write_config(workdir, config)
    cpu, gpu = local_slurm.partitions[:2]
    profile = local_profile(yaml.safe_load(PROFILE.read_text()), cpu, gpu)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))

    start = time.monotonic()
    result = snakemake(workdir, "--profile", str(profile_dir), TARGET, timeout=RUN_TIMEOUT)
    print(f"snakemake on SLURM: {time.monotonic() - start:.0f} s")
    jobs = local_slurm.jobs()

    def context() -> str:
        slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
        tails = [f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in slurm_logs[-3:]]
        return "\n".join(
            [result.stdout[-3000:], result.stderr[-5000:], *tails, local_slurm.log_tail(1500)]
        )

    assert result.returncode == 0, context()
    assert (workdir / TARGET).exists(), context()

    # Every SLURM job of this run, as slurmctld recorded it (it keeps them for MinJobAge).
    assert jobs, "slurmctld knows no jobs"
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        assert job["JobState"] == "COMPLETED", job
        rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append(job)

    train = by_rule.pop("train_stage", [])
    assert len(train) == len(METHODS) * N_FOLDS, sorted(by_rule)  # one job per method and fold
    for job in train:
        assert job["Partition"] == gpu, job
        assert "gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            assert job["Partition"] == cpu, (rule, job)
            assert "gpu" not in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job

    # fMRI runs go in group jobs of up to `group-components` runs each; a group job's comment
    # names the group and its rules: rule_fmri_fmri_run.
    components = dict(item.split("=") for item in profile["group-components"])
    assert set(GROUP_OUTPUTS) <= set(components), "the profile does not group per-sample jobs"
    for group, pattern in GROUP_OUTPUTS.items():
        samples = len(list((workdir / "results").glob(pattern)))
        submitted = by_rule.get(f"{group}_{group}_run", [])
        expected = math.ceil(samples / int(components[group]))
        assert samples > 1 and len(submitted) == expected, (group, samples, sorted(by_rule))
        assert f"{group}_run" not in by_rule, f"{group}_run was submitted one job per sample"
