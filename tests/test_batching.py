"""Batching (config ``batching``): a modality's samples run in chunks, one job per chunk.

The real Snakefile runs the smallest demo dataset (8 subjects, read as real data) up to the
caches twice: in chunks of 3 samples, and with one job per fMRI run (as before chunks) and one
job for all EEG and for all SC samples, the latter without the per-run QC figures
(``qc.run_figures: false``). One fMRI run has lost its confounds file, so a chunk holds an
excluded sample. The chunked run must have one job per chunk, write every sample's own outputs
and log, record the exclusion and give the same caches and QC table as the other run, which
writes every output but the figures.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_slurm import reduced_config, snakemake, write_config

from brainfuse.core.cache import read_cache

CHUNK = 3
MODALITIES = ("fmri", "eeg", "sc")
# the second run's chunks: fMRI one run per job, EEG and SC all samples in one job each
SINGLE = {"default": 1, "eeg": 100, "sc": 100}
TARGETS = [f"results/cache/{m}.parquet" for m in MODALITIES] + ["results/qc/qc.tsv"]
FIGURE = "desc-qc_bold.png"  # the per-run QC figure, under qc.run_figures
# the files one fMRI run's step writes (besides its log), by the end of their names
FMRI_OUTPUTS = (
    "stat-mean_timeseries.tsv",
    "stat-mean_timeseries.json",
    "stat-pearsoncorrelation_relmat.tsv",
    "stat-pearsoncorrelation_desc-raw_relmat.tsv",
    "stat-coverage_bold.tsv",
    FIGURE,
)


@pytest.fixture(scope="module")
def bids(tmp_path_factory, small_demo_bids) -> tuple[Path, str]:
    """A copy of the small demo dataset in which one BOLD run has no confounds file, and the
    sample id of that run."""
    root = tmp_path_factory.mktemp("batching") / "bids"
    shutil.copytree(small_demo_bids, root)
    confounds = sorted(root.glob("derivatives/fmriprep/sub-*/func/*_desc-confounds_timeseries.tsv"))
    confounds[1].unlink()
    return root, confounds[1].name.removesuffix("_desc-confounds_timeseries.tsv")


def write_run_config(
    workdir: Path, root: Path, atlas_data_dir: str | None, batching: dict, run_figures: bool
) -> None:
    config = reduced_config(
        atlas_data_dir,
        demo=False,
        fmriprep_dir=str(root / "derivatives" / "fmriprep"),
        eeg_dir=str(root),
        sc_dir=str(root / "derivatives" / "qsirecon"),
        participants=str(root / "participants.tsv"),
    )
    config["methods"] = {"majority": {"stages": ["fit"]}}
    config["batching"] = batching
    config["qc"] = {"run_figures": run_figures}
    write_config(workdir, config)


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the job table Snakemake prints before running (or with -n)."""
    counts = {}
    for line in output[output.index("Job stats:") :].splitlines()[3:]:
        words = line.split()
        if len(words) != 2 or not words[1].isdigit():
            break
        counts[words[0]] = int(words[1])
    return counts


def run_to_caches(workdir: Path, *args: str) -> str:
    result = snakemake(workdir, "--cores", "2", *TARGETS, *args, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def chunk_jobs(counts: dict[str, int], modality: str) -> dict[str, int]:
    return {rule: n for rule, n in counts.items() if re.fullmatch(rf"{modality}_run_\d+", rule)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bids, atlas_data_dir) -> dict[int, tuple[Path, dict[str, int]]]:
    """Chunk size -> the finished working directory and the jobs it ran per rule."""
    root, _ = bids
    done = {}
    for chunk, batching in ((CHUNK, {"default": CHUNK}), (1, SINGLE)):
        workdir = tmp_path_factory.mktemp(f"chunk{chunk}") / "work"
        write_run_config(workdir, root, atlas_data_dir, batching, run_figures=chunk == CHUNK)
        done[chunk] = (workdir, job_counts(run_to_caches(workdir)))
    return done


def qc_of(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "results" / "qc" / "qc.tsv", sep="\t")


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [CHUNK, 1])
def test_one_job_per_chunk_of_samples(runs, chunk):
    workdir, counts = runs[chunk]
    qc = qc_of(workdir)
    for modality in MODALITIES:
        n_samples = int((qc["modality"] == modality).sum())
        jobs = chunk_jobs(counts, modality)
        size = chunk if chunk == CHUNK else SINGLE.get(modality, SINGLE["default"])
        assert n_samples > CHUNK
        assert sum(jobs.values()) == len(jobs) == math.ceil(n_samples / size), modality


@pytest.mark.slow
def test_every_sample_has_its_own_outputs_and_log(runs):
    results = runs[CHUNK][0] / "results"
    qc = qc_of(runs[CHUNK][0])
    fmri = qc.loc[qc["modality"] == "fmri", "sample_id"]
    for sample in fmri:
        subject = sample.split("_")[0]
        for ending in FMRI_OUTPUTS:
            assert len(list(results.glob(f"{subject}/*/{sample}_*{ending}"))) == 1, (sample, ending)
        log = results / subject / "logs" / f"{sample}_fmri.log"
        assert sample in log.read_text()  # the step logged into its own sample's log
    for modality in ("eeg", "sc"):
        for sample in qc.loc[qc["modality"] == modality, "sample_id"]:
            subject = sample.split("_")[0]
            log = results / subject / "logs" / f"{sample}_{modality}.log"
            assert log.exists(), log


@pytest.mark.slow
def test_without_run_figures_every_output_but_the_figures(runs):
    qc = qc_of(runs[1][0])
    results = runs[1][0] / "results"
    for sample in qc.loc[qc["modality"] == "fmri", "sample_id"]:
        subject = sample.split("_")[0]
        for ending in FMRI_OUTPUTS:
            found = list(results.glob(f"{subject}/*/{sample}_*{ending}"))
            assert len(found) == (ending != FIGURE), (sample, ending)
    assert not list(results.glob("sub-*/figures"))


@pytest.mark.slow
def test_an_excluded_sample_is_recorded_in_its_chunk(runs, bids):
    _, missing = bids
    workdir = runs[CHUNK][0]
    sidecar = next((workdir / "results").glob(f"sub-*/func/{missing}_*_timeseries.json"))
    record = json.loads(sidecar.read_text())
    assert record["status"] == "excluded"
    assert "confounds file is missing" in record["reason"]
    qc = qc_of(workdir).set_index("sample_id")
    assert qc.loc[missing, "status"] == "excluded"
    assert (qc.loc[qc["modality"] == "fmri", "status"] == "included").sum() >= 2


@pytest.mark.slow
def test_caches_equal_those_of_one_job_per_sample(runs):
    chunked, single = runs[CHUNK][0] / "results", runs[1][0] / "results"
    for modality in MODALITIES:
        a = read_cache(chunked / "cache" / f"{modality}.parquet")
        b = read_cache(single / "cache" / f"{modality}.parquet")
        assert a.table.equals(b.table), modality
        assert set(a.arrays) == set(b.arrays)
        for name in a.arrays:
            np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    # timing_s: the wall time of an EEG step, not a result
    chunked_qc, single_qc = (qc_of(runs[c][0]).drop(columns="timing_s") for c in (CHUNK, 1))
    pd.testing.assert_frame_equal(chunked_qc, single_qc)


@pytest.mark.slow
def test_a_lost_output_reruns_its_chunk_alone(runs):
    """Rerunning is per chunk: asking again for one sample's lost output reruns its chunk (the
    last one here) and the cache after it, no other chunk."""
    workdir, counts = runs[CHUNK]
    n_chunks = len(chunk_jobs(counts, "fmri"))
    relmat = sorted((workdir / "results").glob("sub-*/func/*_stat-pearsoncorrelation_relmat.tsv"))
    relmat[-1].unlink()
    planned = job_counts(run_to_caches(workdir, str(relmat[-1].relative_to(workdir)), "-n"))
    assert n_chunks > 1
    assert chunk_jobs(planned, "fmri") == {f"fmri_run_{n_chunks - 1}": 1}
    assert planned["fmri_cache"] == 1
    assert not chunk_jobs(planned, "eeg") and not chunk_jobs(planned, "sc")


def test_batching_names_only_modalities(tmp_path, atlas_data_dir):
    config = reduced_config(atlas_data_dir, demo_subjects=8)
    config["batching"] = {"default": 4, "fmir": 2}
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "batching: ['fmir'] are not modalities" in result.stdout + result.stderr
