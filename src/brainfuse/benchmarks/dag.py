"""Benchmark of workflow start-up at scale: input discovery and the DAG for N subjects.

Writes a placeholder dataset (empty data files under real BIDS / fMRIPrep names, valid JSON
sidecars, ``dataset_description.json`` files and a ``participants.tsv``) for N subjects: one
preprocessed BOLD run per subject in an fMRIPrep derivatives tree with its confounds, mask and
sidecar, and one EEG recording per subject in a raw BIDS tree with its channels, electrodes and
sidecar files. A config based on the checkout's ``config.yaml`` with ``input.demo: false`` points
the workflow at it, and ``snakemake -n`` runs twice in a fresh process each time: the first builds
the pybids index in ``input.pybids_db_dir``, the second reuses it. The last line printed is
``dag_seconds=<first> dag_seconds_cached=<second> subjects=<N>``.

    brainfuse bench dag --subjects 1000
    python -m brainfuse.benchmarks.dag --subjects 200 --keep /tmp/dag200   # keep the tree

Each time is the wall time of the whole ``snakemake -n`` process (Python start-up, parsing the
Snakefile, discovery, DAG, job listing). ``--profile-out FILE`` additionally runs the cached dry
run under ``cProfile`` and writes the statistics to FILE (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
SPACE = "MNI152NLin6Asym"
CHANNELS = ("Fp1", "Fp2", "C3", "C4", "O1", "O2", "Pz", "Cz")


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _description(root: Path, name: str, derivative: bool) -> None:
    desc = {"Name": name, "BIDSVersion": "1.9.0"}
    if derivative:
        desc |= {"DatasetType": "derivative", "GeneratedBy": [{"Name": name}]}
    _touch(root / "dataset_description.json", json.dumps(desc, indent=2))


def make_tree(root: Path, n_subjects: int, runs: int = 1) -> dict[str, Path]:
    """Write the placeholder fMRIPrep + BIDS EEG + QSIRecon dataset; returns its input roots.

    Layout: ``root/bids`` (raw BIDS with EEG and ``participants.tsv``),
    ``root/bids/derivatives/fmriprep`` and ``root/bids/derivatives/qsirecon`` (one SC matrix
    per subject): three modalities per subject.
    """
    bids = Path(root) / "bids"
    fmriprep = bids / "derivatives" / "fmriprep"
    qsirecon = bids / "derivatives" / "qsirecon"
    _description(bids, "brainfuse-bench", derivative=False)
    _description(fmriprep, "fMRIPrep", derivative=True)
    _description(qsirecon, "QSIRecon", derivative=True)
    width = max(3, len(str(n_subjects)))
    subjects = [f"{i:0{width}d}" for i in range(1, n_subjects + 1)]
    rows = ["participant_id\tgroup"] + [
        f"sub-{s}\t{'patient' if i % 2 else 'control'}" for i, s in enumerate(subjects)
    ]
    _touch(bids / "participants.tsv", "\n".join(rows) + "\n")
    bold_sidecar = json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"})
    eeg_sidecar = json.dumps(
        {
            "TaskName": "rest",
            "SamplingFrequency": 500,
            "PowerLineFrequency": 50,
            "EEGReference": "Cz",
        }
    )
    channels = "name\ttype\tunits\tstatus\n" + "".join(f"{c}\tEEG\tuV\tgood\n" for c in CHANNELS)
    electrodes = "name\tx\ty\tz\n" + "".join(f"{c}\t0\t0\t0\n" for c in CHANNELS)
    for s in subjects:
        func = fmriprep / f"sub-{s}" / "func"
        for run in range(1, runs + 1):
            base = f"sub-{s}_task-rest_run-{run}"
            _touch(func / f"{base}_space-{SPACE}_desc-preproc_bold.nii.gz")
            _touch(func / f"{base}_space-{SPACE}_desc-preproc_bold.json", bold_sidecar)
            _touch(func / f"{base}_space-{SPACE}_desc-brain_mask.nii.gz")
            _touch(func / f"{base}_desc-confounds_timeseries.tsv", "framewise_displacement\n")
        eeg = bids / f"sub-{s}" / "eeg"
        _touch(eeg / f"sub-{s}_task-rest_eeg.edf")
        _touch(eeg / f"sub-{s}_task-rest_eeg.json", eeg_sidecar)
        _touch(eeg / f"sub-{s}_task-rest_channels.tsv", channels)
        _touch(eeg / f"sub-{s}_electrodes.tsv", electrodes)
        dwi = qsirecon / f"sub-{s}" / "dwi"
        _touch(dwi / f"sub-{s}_space-T1w_seg-Schaefer100_desc-sift2_relmat.tsv")
    return {"bids": bids, "fmriprep": fmriprep, "qsirecon": qsirecon}


def make_config(workdir: Path, roots: dict[str, Path]) -> Path:
    """The checkout's config.yaml, pointed at the placeholder tree; returns the written path."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["input"].update(
        demo=False,
        fmriprep_dir=str(roots["fmriprep"]),
        eeg_dir=str(roots["bids"]),
        sc_dir=str(roots["qsirecon"]),
        xcpd_dir=None,
        participants=str(roots["bids"] / "participants.tsv"),
        pybids_db_dir=str(workdir / "results" / ".pybids"),
    )
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dry_run(
    workdir: Path, configfile: Path, timeout: float, profile_out: Path | None = None
) -> tuple[float, str]:
    """One ``snakemake -n`` in a new process; returns (wall seconds, its output)."""
    prefix = [sys.executable]
    if profile_out is not None:
        prefix += ["-m", "cProfile", "-o", str(profile_out)]
    cmd = [
        *prefix, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--dry-run", "--cores", "1", "--quiet", "rules",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"snakemake -n failed ({result.returncode}):\n{output[-4000:]}")
    return seconds, output


def job_count(output: str) -> int:
    """The ``total`` row of Snakemake's job table."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brainfuse bench dag", description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="BOLD runs per subject")
    parser.add_argument("--keep", type=Path, default=None, help="write the tree here and keep it")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per dry run")
    parser.add_argument(
        "--profile-out", type=Path, default=None, help="cProfile the cached dry run into FILE"
    )
    args = parser.parse_args(argv)

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="brainfuse-dag-")
        workdir = Path(tmp.name)
    else:
        workdir = args.keep
        shutil.rmtree(workdir / "results" / ".pybids", ignore_errors=True)
    try:
        t0 = time.perf_counter()
        roots = make_tree(workdir / "data", args.subjects, args.runs)
        configfile = make_config(workdir, roots)
        print(f"placeholder tree: {args.subjects} subjects in {time.perf_counter() - t0:.1f} s")
        first, out = dry_run(workdir, configfile, args.timeout)
        print(f"snakemake -n, building the pybids index: {first:.1f} s ({job_count(out)} jobs)")
        cached, out = dry_run(workdir, configfile, args.timeout)
        print(f"snakemake -n, reusing the pybids index:  {cached:.1f} s ({job_count(out)} jobs)")
        if args.profile_out is not None:
            dry_run(workdir, configfile, args.timeout, profile_out=args.profile_out)
            print(f"cProfile of the cached dry run: {args.profile_out}")
        print(f"dag_seconds={first:.2f} dag_seconds_cached={cached:.2f} subjects={args.subjects}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
