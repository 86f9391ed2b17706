"""Benchmark of ingest at dataset scale: N pre-parcellated tables through the real rules.

Writes N synthetic pre-parcellated ROI tables (XCP-D names and JSON sidecars, ``--volumes`` rows
by the atlas's parcels, one subject each) and ``--bold`` small preprocessed BOLD runs (fMRIPrep
names with confounds, brain mask and sidecar; one run simulated by the demo's generator at
``--voxel-size`` mm and copied under each subject's name). A config based on the checkout's
``config.yaml`` with ``input.demo: false`` points the workflow at them, and Snakemake runs the
real rules (``fmri_run_<chunk>`` jobs of ``batching`` samples, then ``fmri_cache``) up to
``cache/fmri.parquet``, with or without the per-run QC figures (``--run-figures`` or
``--no-run-figures``; the config's ``qc.run_figures`` otherwise):

1. the tables alone: a dry run first (discovery and the pybids index, reported as
   ``plan_seconds``), then the run itself, timed as a whole (``seconds``: Snakemake's start,
   parsing, every job and the cache);
2. the BOLD runs alone, the same way (``seconds_per_bold``), where ``--bold`` is above 0.

The reference is the same tables read and denoised in this one Python process with pandas and
numpy alone: each table read with ``pandas.read_csv``, its linear trend removed by least squares,
its Pearson FC computed. ``ingest_ratio`` is the workflow's seconds over the reference's. The
last line printed is ``ingest_ratio=... seconds_per_sample=... tables=N ... run_figures=...``.

    brainfuse bench ingest                       # 1,000 tables and 1,000 BOLD runs, 2 cores
    brainfuse bench ingest --tables 200 --bold 20 --chunk 50 --keep /tmp/ingest200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[3]
SPACE = "MNI152NLin6Asym"
TR = 2.0
CACHE = "results/cache/fmri.parquet"


def _description(root: Path, name: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    description = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainfuse.benchmarks.ingest (synthetic)"}],
    }
    (root / "dataset_description.json").write_text(json.dumps(description, indent=2))


def subject_labels(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{i:0{width}d}" for i in range(1, n + 1)]


def write_participants(root: Path, subjects: list[str]) -> Path:
    """participants.tsv with alternating classes (the workflow needs a label per subject)."""
    root.mkdir(parents=True, exist_ok=True)
    groups = ["patient" if i % 2 else "control" for i in range(len(subjects))]
    path = root / "participants.tsv"
    table = pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "group": groups})
    table.to_csv(path, sep="\t", index=False)
    return path


def write_tables(
    root: Path, subjects: list[str], labels: list[str], atlas_name: str, volumes: int, seed: int
) -> list[Path]:
    """One XCP-D style parcel time-series table (and its TR sidecar) per subject."""
    xcpd = root / "derivatives" / "xcpd"
    _description(xcpd, "XCP-D style tables (synthetic)")
    rng = np.random.default_rng(seed)
    paths = []
    for sub in subjects:
        func = xcpd / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_task-rest_run-1_space-{SPACE}"
        path = func / f"{stem}_seg-{atlas_name}_stat-mean_timeseries.tsv"
        series = rng.standard_normal((volumes, len(labels))).astype(np.float32)
        pd.DataFrame(series, columns=labels).to_csv(path, sep="\t", index=False)
        path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": TR}))
        paths.append(path)
    return paths


def write_bold_runs(
    root: Path, subjects: list[str], atlas, volumes: int, voxel_size: float, seed: int
) -> None:
    """One small BOLD run per subject: the demo generator's run, copied under each name."""
    import nibabel as nib

    from brainfuse.demo.bold import simulate_bold_run
    from brainfuse.demo.grid import make_bold_grid

    fmriprep = root / "derivatives" / "fmriprep"
    _description(fmriprep, "fMRIPrep style runs (synthetic)")
    grid = make_bold_grid(atlas, voxel_size)
    rng = np.random.default_rng(seed)
    bold, confounds, _ = simulate_bold_run(
        grid, np.eye(atlas.n_nodes), rng, volumes, TR, motion_level=0.1, site="siteA"
    )
    volume = np.zeros(grid.shape + (volumes,), dtype=np.float32)
    volume[grid.mask] = bold.T
    image = nib.Nifti1Image(volume, grid.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_zooms((voxel_size,) * 3 + (TR,))
    template = root / "template"
    template.mkdir(parents=True, exist_ok=True)
    files = {
        "desc-preproc_bold.nii.gz": template / "bold.nii.gz",
        "desc-brain_mask.nii.gz": template / "mask.nii.gz",
        "desc-preproc_bold.json": template / "bold.json",
    }
    nib.save(image, files["desc-preproc_bold.nii.gz"])
    nib.save(
        nib.Nifti1Image(grid.mask.astype(np.uint8), grid.affine), files["desc-brain_mask.nii.gz"]
    )
    files["desc-preproc_bold.json"].write_text(json.dumps({"RepetitionTime": TR}))
    confounds_file = template / "confounds.tsv"
    confounds.to_csv(confounds_file, sep="\t", index=False, na_rep="n/a")
    for sub in subjects:
        func = fmriprep / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_task-rest_run-1"
        for suffix, source in files.items():
            shutil.copyfile(source, func / f"{stem}_space-{SPACE}_{suffix}")
        shutil.copyfile(confounds_file, func / f"{stem}_desc-confounds_timeseries.tsv")
    shutil.rmtree(template)


def write_config(
    workdir: Path,
    participants: Path,
    atlas_data_dir: str | None,
    xcpd_dir: Path | None = None,
    fmriprep_dir: Path | None = None,
    chunk: int | None = None,
    run_figures: bool | None = None,
) -> Path:
    """The checkout's config.yaml pointed at one input tree, up to the fMRI cache (``chunk``
    and ``run_figures`` replace ``batching.default`` and ``qc.run_figures`` where given)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["input"].update(
        demo=False,
        xcpd_dir=str(xcpd_dir) if xcpd_dir else None,
        fmriprep_dir=str(fmriprep_dir) if fmriprep_dir else None,
        eeg_dir=None,
        sc_dir=None,
        participants=str(participants),
        pybids_db_dir=str(workdir / "results" / ".pybids"),
    )
    config["atlas"]["data_dir"] = atlas_data_dir
    # the planning check needs labels and folds that work; nothing here trains
    config["methods"] = {"majority": {"stages": ["fit"]}}
    config["cv"]["n_folds"] = 2
    if chunk is not None:
        config["batching"] = {"default": chunk}
    if run_figures is not None:
        config["qc"] = {"run_figures": run_figures}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, configfile: Path, cores: int, *args: str) -> float:
    """Wall seconds of one Snakemake process making the fMRI cache."""
    cmd = [
        sys.executable, "-m", "snakemake", CACHE,
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", str(cores), *args,
        "--quiet", "rules",  # last: it takes several values
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise RuntimeError(f"snakemake failed ({result.returncode}):\n{output[-4000:]}")
    return seconds


def reference_seconds(tables: list[Path]) -> float:
    """Read and denoise every table in this process with pandas and numpy: linear detrend by
    least squares, then Pearson FC."""
    start = time.perf_counter()
    for path in tables:
        series = pd.read_csv(path, sep="\t").to_numpy(np.float64)
        trend = np.vander(np.arange(len(series), dtype=np.float64), 2)
        beta, *_ = np.linalg.lstsq(trend, series, rcond=None)
        np.corrcoef((series - trend @ beta).T)
    return time.perf_counter() - start


def timed_run(
    workdir: Path, participants: Path, atlas_data_dir: str | None, cores: int, **inputs
) -> tuple[float, float]:
    """(plan seconds, run seconds) of the workflow on one input tree."""
    config = write_config(workdir, participants, atlas_data_dir, **inputs)
    plan = snakemake(workdir, config, cores, "--dry-run")
    return plan, snakemake(workdir, config, cores)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brainfuse bench ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tables", type=int, default=1000, help="pre-parcellated tables")
    parser.add_argument("--bold", type=int, default=None, help="BOLD runs (default: --tables)")
    parser.add_argument("--volumes", type=int, default=150, help="time points per run")
    parser.add_argument("--voxel-size", type=float, default=8.0, help="BOLD voxel size (mm)")
    parser.add_argument("--chunk", type=int, default=None, help="batching.default (config's)")
    parser.add_argument(
        "--run-figures",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="qc.run_figures (default: config.yaml's)",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atlas-data-dir", default=os.environ.get("NILEARN_DATA"))
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args(argv)
    n_bold = args.tables if args.bold is None else args.bold

    from brainfuse.core.atlas import load_atlas

    atlas = load_atlas(data_dir=args.atlas_data_dir)
    root = args.keep or Path(tempfile.mkdtemp(prefix="brainfuse-ingest-"))
    try:
        data = root / "data"
        subjects = subject_labels(max(args.tables, n_bold))
        participants = write_participants(data, subjects)
        labels = list(atlas.labels)
        tables = write_tables(
            data, subjects[: args.tables], labels, atlas.name, args.volumes, args.seed
        )
        plan, seconds = timed_run(
            root / "tables",
            participants,
            args.atlas_data_dir,
            args.cores,
            xcpd_dir=data / "derivatives" / "xcpd",
            chunk=args.chunk,
            run_figures=args.run_figures,
        )
        reference = reference_seconds(tables)
        results = {
            "ingest_ratio": seconds / reference,
            "seconds_per_sample": seconds / args.tables,
            "tables": args.tables,
            "seconds": seconds,
            "plan_seconds": plan,
            "reference_seconds": reference,
        }
        print(f"{args.tables} tables to the fMRI cache: {seconds:.1f} s (dry run {plan:.1f} s)")
        print(f"the same tables read and denoised in one process: {reference:.2f} s")
        if n_bold:
            write_bold_runs(
                data, subjects[:n_bold], atlas, args.volumes, args.voxel_size, args.seed
            )
            bold_plan, bold_seconds = timed_run(
                root / "bold",
                participants,
                args.atlas_data_dir,
                args.cores,
                fmriprep_dir=data / "derivatives" / "fmriprep",
                chunk=args.chunk,
                run_figures=args.run_figures,
            )
            print(f"{n_bold} BOLD runs to the fMRI cache: {bold_seconds:.1f} s")
            results |= {"bold_runs": n_bold, "seconds_per_bold": bold_seconds / n_bold}
        config = yaml.safe_load((root / "tables" / "config.yaml").read_text())
        results |= {"cores": args.cores, "run_figures": config["qc"]["run_figures"]}
        print(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()
            )
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
