"""The fMRI rule's job on small synthetic runs: fixed node set, NaN parcels recorded, exclusions."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_img

from brainfuse.modalities.fmri.denoise import MOTION
from brainfuse.modalities.fmri.run import fmri_run

TR = 2.0
N_VOLUMES = 150


def _write_run(
    tmp_path, atlas, crop_top: int = 0, fd_level: float = 0.05, stem="sub-01_task-rest_run-1"
):
    rng = np.random.default_rng(0)
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = atlas.img.affine[:3, 3]
    labels = resample_img(
        atlas.img,
        target_affine=affine,
        target_shape=(31, 37, 31),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    lab = np.asarray(labels.dataobj).astype(int)
    if crop_top:
        lab = lab[:, :, : lab.shape[2] - crop_top]
    signals = rng.normal(size=(N_VOLUMES, atlas.n_nodes)) + 100
    data = np.zeros((*lab.shape, N_VOLUMES), dtype=np.float32)
    inside = lab > 0
    data[inside] = signals[:, lab[inside] - 1].T + rng.normal(
        0, 0.1, size=(inside.sum(), N_VOLUMES)
    )
    func = tmp_path / "func"
    func.mkdir(exist_ok=True)
    bold = func / f"{stem}_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((6.0, 6.0, 6.0, TR))  # the header's TR agrees with the sidecar's
    img.to_filename(bold)
    # an all-ones brain mask leaves every parcel's voxels in, as no mask would
    mask = func / f"{stem}_space-MNI152NLin6Asym_desc-brain_mask.nii.gz"
    nib.Nifti1Image(np.ones(lab.shape, dtype=np.uint8), affine).to_filename(mask)
    (func / f"{stem}_space-MNI152NLin6Asym_desc-preproc_bold.json").write_text(
        json.dumps({"RepetitionTime": TR})
    )
    motion = np.cumsum(rng.normal(0, fd_level / 3, size=(N_VOLUMES, 6)), axis=0)
    table = pd.DataFrame(motion, columns=MOTION)
    for m in MOTION:
        d = table[m].diff()
        table[f"{m}_derivative1"], table[f"{m}_power2"] = d, table[m] ** 2
        table[f"{m}_derivative1_power2"] = d**2
    table["framewise_displacement"] = (
        table[MOTION].diff().abs().sum(axis=1).where(table.index > 0) + fd_level
    )
    confounds = func / f"{stem}_desc-confounds_timeseries.tsv"
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    return bold, confounds, signals


def _run(tmp_path, atlas, bold, confounds, **params):
    out = tmp_path / "out"
    outputs = {
        k: str(out / f"x_{k}")
        for k in ("ts.tsv", "ts.json", "fc.tsv", "raw.tsv", "cov.tsv", "qc.png")
    }
    fmri_run(
        bold=str(bold),
        confounds=str(confounds),
        mask=str(bold).replace("_desc-preproc_bold.nii.gz", "_desc-brain_mask.nii.gz"),
        sidecar=str(bold).replace(".nii.gz", ".json"),
        entities={"subject": "01", "task": "rest", "run": "1"},
        atlas_cfg={"name": atlas.name, "min_coverage": 0.5, "data_dir": None},
        params={
            "strategy": "24P",
            "detrend": True,
            "high_pass": 0.01,
            "low_pass": 0.1,
            "fd_threshold": 0.5,
            "min_clean_seconds": 120,
            "dummy_scans": 0,
            "custom_columns": [],
            "tr_source": "exclude",
            "tr_tolerance": 0.01,
            **params,
        },
        out_timeseries=outputs["ts.tsv"],
        out_sidecar=outputs["ts.json"],
        out_relmat=outputs["fc.tsv"],
        out_relmat_raw=outputs["raw.tsv"],
        out_coverage=outputs["cov.tsv"],
        out_figure=outputs["qc.png"],
    )
    return outputs


@pytest.fixture(autouse=True)
def _same_atlas(monkeypatch, atlas):
    monkeypatch.setattr("brainfuse.modalities.fmri.run.atlas_from_config", lambda cfg: atlas)


def test_parcels_outside_field_of_view_are_nan_and_recorded(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas, crop_top=9)
    out = _run(tmp_path, atlas, bold, confounds)
    ts = pd.read_csv(out["ts.tsv"], sep="\t")
    assert list(ts.columns) == list(atlas.labels)  # the node set is fixed
    qc = json.loads(open(out["ts.json"]).read())
    assert qc["status"] == "included" and qc["n_nan_parcels"] > 0
    nan_cols = [c for c in ts.columns if ts[c].isna().all()]
    assert sorted(nan_cols) == sorted(qc["nan_parcels"])
    coverage = pd.read_csv(out["cov.tsv"], sep="\t").set_index("node")["coverage"]
    assert (coverage[nan_cols] < 0.5).all() and (coverage.drop(nan_cols) >= 0.5).all()
    assert np.isfinite(ts.drop(columns=nan_cols).to_numpy()).all()


def test_too_little_clean_data_is_excluded_with_reason(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas, fd_level=0.6)
    out = _run(tmp_path, atlas, bold, confounds)
    qc = json.loads(open(out["ts.json"]).read())
    assert qc["status"] == "excluded"
    assert "clean data" in qc["reason"] and "confounds_timeseries.tsv" in qc["reason"]
    assert len(pd.read_csv(out["ts.tsv"], sep="\t")) == 0
    assert open(out["qc.png"], "rb").read(4) == b"\x89PNG"


def test_missing_confounds_file_is_excluded(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    confounds.unlink()
    qc = json.loads(open(_run(tmp_path, atlas, bold, confounds)["ts.json"]).read())
    assert qc["status"] == "excluded" and "confounds file is missing" in qc["reason"]


def test_corrupt_nifti_is_excluded(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    bold.write_bytes(bold.read_bytes()[:5000])
    qc = json.loads(open(_run(tmp_path, atlas, bold, confounds)["ts.json"]).read())
    assert qc["status"] == "excluded" and bold.name in qc["reason"]
