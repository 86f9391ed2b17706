"""What a changed config value reruns (README, "Resuming"): dry runs against one completed run.

One small run (the fMRI of the smallest demo dataset, a baseline and a torch method, through to
the report) is completed once per module; each test writes a config with one value changed and
asks Snakemake, with its default rerun triggers, which jobs it would run. Each rule gets only the
config keys its step reads as ``params``, so a value reruns the steps that read it and what
depends on them.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml
from test_slurm import reduced_config, snakemake, write_config

pytestmark = pytest.mark.slow

N_FOLDS = 2
METHODS = {
    "majority": {"stages": ["fit"]},
    "gcn_fc": {"stages": ["train"], "params": {"epochs": 2}},
}
TRAINING = ("fit_baseline", "train_stage")
FMRI = ("fmri_run", "fmri_cache")  # fmri_run: the chunk jobs fmri_run_0, fmri_run_1, ...
REPORT = ("evaluate", "report_figures", "report")


@pytest.fixture(scope="module")
def completed(tmp_path_factory, atlas_data_dir, small_demo_bids) -> tuple[Path, dict]:
    bids = small_demo_bids
    workdir = tmp_path_factory.mktemp("config_reruns") / "work"
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(bids / "derivatives" / "fmriprep"),
        participants=str(bids / "participants.tsv"),
    )
    config["methods"] = METHODS
    config["batching"] = {"default": 4}  # several chunk jobs of fMRI runs
    write_config(workdir, config)
    result = snakemake(workdir, "--cores", "2", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir, config


def planned_jobs(workdir: Path, config: dict) -> dict[str, int]:
    """Jobs per rule that Snakemake would run with ``config`` (a dry run, default triggers)."""
    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=False))  # the key order matters
    result = snakemake(
        workdir, "--configfile", str(changed), "-n", "--quiet", "rules", "--cores", "2",
        timeout=120,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    counts: dict[str, int] = {}
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["total"]:
            break  # a dry run prints its job stats twice: read the first table only
        if len(words) == 2 and words[1].isdigit() and words[0] != "all":
            # the chunks of a modality's samples (fmri_run_0, fmri_run_1, ...) count as fmri_run
            rule = re.sub(r"_run_\d+$", "_run", words[0])
            counts[rule] = counts.get(rule, 0) + int(words[1])
    assert counts or "Nothing to be done" in out, out[-3000:]
    return counts


def changed(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, key = path.split(".")
    section = config
    for name in parents:
        section = section[name]
    assert key in section, path
    section[key] = value
    return config


def n_bold_runs(workdir: Path) -> int:
    return len(list((workdir / "results").glob("sub-*/func/*_stat-mean_timeseries.tsv")))


def test_unchanged_config_reruns_nothing(completed):
    workdir, config = completed
    assert planned_jobs(workdir, config) == {}


def test_fmri_value_reruns_every_run_and_everything_downstream(completed):
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, "fmri.fd_threshold", 0.4))
    assert jobs["fmri_run"] == math.ceil(n_bold_runs(workdir) / config["batching"]["default"])
    assert n_bold_runs(workdir) > 1
    assert jobs["fmri_cache"] == jobs["folds"] == 1
    assert jobs["fit_baseline"] == jobs["train_stage"] == N_FOLDS
    assert all(jobs[rule] == 1 for rule in REPORT)  # report_figures also plots fd_threshold


def test_cache_only_value_reruns_the_cache_not_the_runs(completed):
    """fmri.sequence_length is read by the fMRI cache alone: no per-run step reruns."""
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, "fmri.sequence_length", 150))
    assert "fmri_run" not in jobs
    assert jobs["fmri_cache"] == jobs["folds"] == 1
    assert jobs["fit_baseline"] == jobs["train_stage"] == N_FOLDS
    assert all(jobs[rule] == 1 for rule in REPORT)


def test_method_params_rerun_only_that_method(completed):
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, "methods.gcn_fc.params.epochs", 3))
    assert jobs["train_stage"] == N_FOLDS
    assert jobs["attribution"] == jobs["biomarker_figures"] == 1  # gcn_fc's biomarkers
    assert all(jobs[rule] == 1 for rule in REPORT)
    assert not any(rule in jobs for rule in ("fit_baseline", "folds", *FMRI))


def test_seed_reruns_folds_and_training_not_preprocessing(completed):
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, "seed", 1))
    assert jobs["folds"] == 1
    assert jobs["fit_baseline"] == jobs["train_stage"] == N_FOLDS
    assert not any(rule in jobs for rule in FMRI)


def test_cv_value_reruns_folds_and_training(completed):
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, "cv.val_fraction", 0.3))
    assert jobs["folds"] == 1
    assert jobs["fit_baseline"] == jobs["train_stage"] == N_FOLDS
    assert not any(rule in jobs for rule in FMRI)


def test_resources_rerun_only_the_config_record(completed):
    """Resources change how a job runs, not what it computes; dataset_description.json records
    the whole config (and its hash), so it alone is rewritten."""
    workdir, config = completed
    resources = changed(config, "resources.train.mem_mb", 8000)
    jobs = planned_jobs(workdir, changed(resources, "resources.train.runtime", 5))
    assert jobs == {"dataset_description": 1}


def test_key_order_reruns_the_cache_not_the_runs(completed):
    """The per-run step gets its keys in a fixed order; the cache records the section as
    written, so reordering it rebuilds the cache and what follows, not the runs."""
    workdir, config = completed
    reordered = copy.deepcopy(config)
    reordered["fmri"] = dict(reversed(list(config["fmri"].items())))
    jobs = planned_jobs(workdir, reordered)
    assert "fmri_run" not in jobs and jobs["fmri_cache"] == 1


@pytest.mark.parametrize(
    ("path", "value"),
    [("harmonise.method", "combat"), ("confounds", ["age", "mean_fd"])],
)
def test_harmonise_and_confounds_rerun_training_and_diagnostics_not_preprocessing(
    completed, path, value
):
    """The in-fold adjustment is fitted inside each training job (and the shortcut probes):
    changing it refits every method on every fold, and leaves the runs, caches and folds."""
    workdir, config = completed
    jobs = planned_jobs(workdir, changed(config, path, value))
    assert jobs["fit_baseline"] == jobs["train_stage"] == N_FOLDS
    assert jobs["diagnostics"] == 1
    assert all(jobs[rule] == 1 for rule in REPORT)
    assert not any(rule in jobs for rule in ("folds", *FMRI))
