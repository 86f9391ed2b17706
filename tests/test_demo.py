"""The synthetic demo dataset: layout, formats, determinism and the planted effects.

One small dataset (8 subjects, short runs, 6 mm voxels, 30 s of EEG) serves most tests; three
tiny ones check determinism. The effects are checked with independent, simple analyses (the
atlas resampled by nilearn, plain least squares, Welch spectra), not with the generator's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfuse.demo import dataset as demo
from brainfuse.demo import eeg as demo_eeg

N_SUBJECTS = 8
N_VOLUMES = 120
TR = 2.0
VOXEL = 6.0
EEG_SECONDS = 30.0
EEG_SFREQ = 200.0
SPACE = "MNI152NLin6Asym"
CONFOUNDS_36P = [
    f"{base}{suffix}"
    for base in (
        "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
        "global_signal", "csf", "white_matter",
    )
    for suffix in ("", "_derivative1", "_power2", "_derivative1_power2")
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, atlas):
    root = tmp_path_factory.mktemp("demo")
    truth = demo.make_demo_dataset(
        root,
        atlas,
        n_subjects=N_SUBJECTS,
        seed=3,
        n_volumes=N_VOLUMES,
        tr=TR,
        voxel_size=VOXEL,
        eeg_seconds=EEG_SECONDS,
        eeg_sfreq=EEG_SFREQ,
    )
    return root, truth


def _func(root: Path, sub: str, run: int) -> str:
    return str(root / "derivatives" / "fmriprep" / sub / "func" / f"{sub}_task-rest_run-{run}")


def _bold(root: Path, sub: str, run: int) -> Path:
    return Path(_func(root, sub, run) + f"_space-{SPACE}_desc-preproc_bold.nii.gz")


def _confounds(root: Path, sub: str, run: int) -> pd.DataFrame:
    return pd.read_csv(_func(root, sub, run) + "_desc-confounds_timeseries.tsv", sep="\t")


@pytest.fixture(scope="module")
def parcel_series(dataset, atlas):
    """Per run: parcel-mean BOLD after dropping non-steady-state volumes, confounds and FD."""
    from nilearn.image import resample_to_img

    root, truth = dataset
    first = nib.load(_bold(root, "sub-01", 1))
    labels = resample_to_img(
        atlas.img, first, interpolation="nearest", force_resample=True, copy_header=True
    )
    labels = np.asarray(labels.dataobj).astype(int)
    runs = []
    for sub, info in truth["subjects"].items():
        for run in info["runs"]:
            data = np.asarray(nib.load(_bold(root, sub, run)).dataobj)
            conf = _confounds(root, sub, run)
            keep = conf["non_steady_state_outlier00"].to_numpy() == 0
            ts = np.stack([data[labels == v].mean(axis=0) for v in atlas.label_values], axis=1)
            runs.append(
                {
                    "sub": sub,
                    "group": info["group"],
                    "ts": ts[keep],
                    "conf": conf[keep].reset_index(drop=True),
                    "mean_fd": float(conf["framewise_displacement"].mean()),
                }
            )
    return runs


def _clean_36p(ts: np.ndarray, conf: pd.DataFrame) -> np.ndarray:
    design = np.column_stack([np.ones(len(conf)), conf[CONFOUNDS_36P].fillna(0.0).to_numpy()])
    return ts - design @ np.linalg.lstsq(design, ts, rcond=None)[0]


def _mean_fc(ts: np.ndarray) -> float:
    fc = np.corrcoef(ts.T)
    return float(fc[np.triu_indices_from(fc, 1)].mean())


# ------------------------------------------------------------------------------------------
# Layout and metadata
# ------------------------------------------------------------------------------------------


def test_layout(dataset, atlas):
    root, truth = dataset
    for name in ("dataset_description.json", "participants.tsv", "participants.json", "README"):
        assert (root / name).is_file(), name
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.9.0"
    for deriv in ("fmriprep", "qsirecon"):
        d = json.loads((root / "derivatives" / deriv / "dataset_description.json").read_text())
        assert d["DatasetType"] == "derivative"
        assert "synthetic" in json.dumps(d["GeneratedBy"]).lower()
    assert json.loads((root / "ground_truth.json").read_text()) == truth
    assert list(truth["subjects"]) == [f"sub-{i:02d}" for i in range(1, N_SUBJECTS + 1)]
    for sub, info in truth["subjects"].items():
        eeg = root / sub / "eeg"
        for suffix in ("eeg.edf", "eeg.json", "channels.tsv"):
            assert (eeg / f"{sub}_task-rest_{suffix}").is_file()
        for suffix in ("electrodes.tsv", "coordsystem.json"):
            assert (eeg / f"{sub}_{suffix}").is_file()
        for run in info["runs"]:
            stem = _func(root, sub, run)
            for suffix in (
                f"_space-{SPACE}_desc-preproc_bold.nii.gz",
                f"_space-{SPACE}_desc-preproc_bold.json",
                f"_space-{SPACE}_desc-brain_mask.nii.gz",
                "_desc-confounds_timeseries.tsv",
                "_desc-confounds_timeseries.json",
            ):
                assert Path(stem + suffix).is_file(), stem + suffix
        sc = root / "derivatives" / "qsirecon" / sub / "dwi"
        assert (sc / f"{sub}_space-T1w_seg-{atlas.name}_desc-sift2_relmat.tsv").is_file()
    # No sessions, nothing unexpected at the top of a subject folder.
    assert {p.name for p in (root / "sub-01").iterdir()} == {"eeg"}


def test_participants_balanced(dataset):
    root, truth = dataset
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "age", "sex", "site", "group"]
    # three sites of unequal sizes; the groups are balanced overall and within each site (an
    # odd-sized site has one extra of either group)
    sizes = table["site"].value_counts()
    assert sorted(sizes.index) == ["siteA", "siteB", "siteC"] and sizes.sum() == N_SUBJECTS
    assert sizes.to_dict() == truth["site_sizes"] and len(set(sizes)) > 1
    counts = table.groupby(["site", "group"]).size().unstack()
    assert ((counts["control"] - counts["patient"]).abs() <= 1).all(), counts
    assert (table["group"] == "patient").sum() == N_SUBJECTS // 2
    runs = [info["runs"] for info in truth["subjects"].values()]
    assert all(r[0] == 1 for r in runs)
    assert sum(r == [1, 2] for r in runs) == round(N_SUBJECTS / 4)
    assert table["group"].tolist() == [truth["subjects"][s]["group"] for s in table.participant_id]


def test_ground_truth(dataset, atlas):
    _, truth = dataset
    fmri = truth["fmri"]
    assert len(fmri["parcels"]) == 10 and len(fmri["edges"]) == 45
    assert set(fmri["parcels"]) <= set(atlas.labels)
    networks = {atlas.networks[atlas.labels.index(p)] for p in fmri["parcels"]}
    assert 2 <= len(networks) <= 3
    assert truth["eeg"]["band_hz"] == [8, 13] and len(truth["eeg"]["parcels"]) == 6
    sc = truth["sc"]
    assert len(sc["parcels"]) == 6 and set(sc["parcels"]) <= set(atlas.labels)
    # every planted edge touches a planted parcel, and each planted parcel has many edges
    assert all(set(edge) & set(sc["parcels"]) for edge in sc["edges"])
    assert len(sc["edges"]) > 6 * 10
    assert truth["label_column"] == "group" and truth["groups"] == ["control", "patient"]


# ------------------------------------------------------------------------------------------
# fMRI files
# ------------------------------------------------------------------------------------------


def test_bold_header_and_grid(dataset, atlas):
    root, _ = dataset
    img = nib.load(_bold(root, "sub-01", 1))
    assert img.get_data_dtype() == np.float32
    assert img.shape[3] == N_VOLUMES
    assert img.header.get_zooms() == pytest.approx((VOXEL, VOXEL, VOXEL, TR))
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert img.shape[:3] != atlas.img.shape[:3]
    # Same axes and orientation as the atlas, coarser voxels.
    assert np.allclose(np.sign(img.affine[:3, :3]), np.sign(atlas.img.affine[:3, :3]))
    assert not np.allclose(img.affine, atlas.img.affine)
    mask_img = nib.load(
        str(_bold(root, "sub-01", 1)).replace("desc-preproc_bold", "desc-brain_mask")
    )
    assert mask_img.get_data_dtype() == np.uint8
    assert np.allclose(mask_img.affine, img.affine) and mask_img.shape == img.shape[:3]
    mask = np.asarray(mask_img.dataobj).astype(bool)
    data = np.asarray(img.dataobj)
    assert np.all(data[~mask] == 0)
    assert np.all(data[mask].min(axis=1) > 0)
    sidecar = json.loads(
        Path(str(_bold(root, "sub-01", 1)).replace(".nii.gz", ".json")).read_text()
    )
    assert sidecar["RepetitionTime"] == TR and sidecar["SkullStripped"] is True


def test_confounds_columns_and_values(dataset):
    root, _ = dataset
    tsv = Path(_func(root, "sub-01", 1) + "_desc-confounds_timeseries.tsv")
    header, values = (line.split("\t") for line in tsv.read_text().splitlines()[:2])
    first_row = dict(zip(header, values, strict=True))
    conf = _confounds(root, "sub-01", 1)
    required = CONFOUNDS_36P + [
        "framewise_displacement", "dvars", "std_dvars", "non_steady_state_outlier00", "cosine00",
    ] + [f"a_comp_cor_{i:02d}" for i in range(6)]  # fmt: skip
    assert set(required) <= set(conf.columns)
    assert len(conf) == N_VOLUMES
    for col in ("framewise_displacement", "dvars", "std_dvars", "trans_x_derivative1"):
        assert first_row[col] == "n/a", col
    assert conf.loc[1:, required].notna().all().all()
    assert conf["non_steady_state_outlier00"].tolist() == [1.0] + [0.0] * (N_VOLUMES - 1)

    # FD is Power's: translations plus rotations (radians) on a 50 mm sphere.
    motion = conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    step = np.abs(np.diff(motion, axis=0))
    fd = step[:, :3].sum(1) + 50 * step[:, 3:].sum(1)
    assert np.allclose(conf["framewise_displacement"][1:], fd)
    assert np.allclose(conf["trans_x_power2"], conf["trans_x"] ** 2)

    # The global signal is the mean over the brain mask of the data as written.
    img = nib.load(_bold(root, "sub-01", 1))
    mask = np.asarray(nib.load(str(_bold(root, "sub-01", 1)).replace(
        "desc-preproc_bold", "desc-brain_mask")).dataobj).astype(bool)  # fmt: skip
    gs = np.asarray(img.dataobj)[mask].mean(axis=0, dtype=np.float64)
    assert np.allclose(conf["global_signal"], gs, rtol=1e-5)
    # The non-steady-state volume is a large intensity transient.
    assert gs[0] > 1.2 * np.median(gs)

    sidecar = json.loads(tsv.with_suffix(".json").read_text())
    assert sidecar["a_comp_cor_00"]["Method"] == "aCompCor"


# ------------------------------------------------------------------------------------------
# Planted fMRI effect and motion artefact
# ------------------------------------------------------------------------------------------


def test_fmri_planted_effect(parcel_series, dataset, atlas):
    _, truth = dataset
    idx = [atlas.labels.index(p) for p in truth["fmri"]["parcels"]]
    iu = np.triu_indices(len(idx), 1)
    by_group = {"control": [], "patient": []}
    for run in parcel_series:
        ts = _clean_36p(run["ts"], run["conf"])
        by_group[run["group"]].append(np.corrcoef(ts[:, idx].T)[iu].mean())
    diff = np.mean(by_group["patient"]) - np.mean(by_group["control"])
    assert diff > 0.2, by_group
    assert min(by_group["patient"]) > max(by_group["control"]), by_group


def test_fmri_site_age_and_motion_effects(parcel_series, dataset, atlas):
    """Site shifts FC away from the planted edges; age and motion follow their known sizes."""
    _, truth = dataset
    planted = [atlas.labels.index(p) for p in truth["fmri"]["parcels"]]
    others = np.setdiff1d(np.arange(atlas.n_nodes), planted)
    iu = np.triu_indices(len(others), 1)
    fc = {}
    for run in parcel_series:
        ts = _clean_36p(run["ts"], run["conf"])
        fc.setdefault(truth["subjects"][run["sub"]]["site"], []).append(
            np.arctanh(np.corrcoef(ts[:, others].T)[iu])
        )
    # the difference of two sites' mean FC follows the difference of their components' v v^T
    load = {s: np.asarray(v)[others] for s, v in truth["fmri"]["site_loadings"].items()}
    for a, b in (("siteA", "siteB"), ("siteA", "siteC")):
        observed = np.mean(fc[a], axis=0) - np.mean(fc[b], axis=0)
        expected = (np.outer(load[a], load[a]) - np.outer(load[b], load[b]))[iu]
        assert np.corrcoef(observed, expected)[0, 1] > 0.3, (a, b)
    assert all(not np.any(np.asarray(v)[planted]) for v in truth["fmri"]["site_loadings"].values())
    assert all(0.01 < v < 0.05 for v in truth["fmri"]["site_delta_r_model"].values())

    conf = truth["fmri"]["confounds"]
    assert conf["age"]["delta_r_per_year"] < 0 < conf["motion"]["delta_r_per_log_motion_level"]
    used = set(conf["age"]["parcels"]) | set(conf["motion"]["parcels"])
    assert len(used) == 12 and not used & set(truth["fmri"]["parcels"])
    for name, key, sign in (("age", "age", -1), ("motion", "motion_level", 1)):
        idx = [atlas.labels.index(p) for p in conf[name]["parcels"]]
        jj = np.triu_indices(len(idx), 1)
        block, value = [], []
        for run in parcel_series:
            ts = _clean_36p(run["ts"], run["conf"])
            block.append(np.corrcoef(ts[:, idx].T)[jj].mean())
            info = truth["subjects"][run["sub"]]
            value.append(info[key] if name == "age" else np.log(info[key]))
        assert sign * np.corrcoef(value, block)[0, 1] > 0.3, (name, value, block)


def test_qc_fc(parcel_series):
    fd = [run["mean_fd"] for run in parcel_series]
    raw = [_mean_fc(run["ts"]) for run in parcel_series]
    clean = [_mean_fc(_clean_36p(run["ts"], run["conf"])) for run in parcel_series]
    # Before denoising, mean FC follows head motion...
    assert np.corrcoef(fd, raw)[0, 1] > 0.6, (fd, raw)
    # ...after 36P regression it hardly depends on it (clean mean FC is nearly constant, so its
    # correlation with FD is noise; the slope is the meaningful check).
    slope_raw = np.polyfit(fd, raw, 1)[0]
    slope_clean = np.polyfit(fd, clean, 1)[0]
    assert abs(slope_clean) < 0.05 * slope_raw, (slope_raw, slope_clean)
    # Denoising with global signal regression removes most shared variance.
    assert np.mean(raw) > 0.25 and abs(np.mean(clean)) < 0.1


# ------------------------------------------------------------------------------------------
# Structural connectivity
# ------------------------------------------------------------------------------------------


def _sc(root: Path, sub: str, atlas) -> pd.DataFrame:
    path = root / "derivatives" / "qsirecon" / sub / "dwi"
    return pd.read_csv(path / f"{sub}_space-T1w_seg-{atlas.name}_desc-sift2_relmat.tsv", sep="\t")


def test_sc_matrices(dataset, atlas):
    from scipy.stats import skew

    root, truth = dataset
    planted = {"control": [], "patient": []}
    site_median = {}
    for sub, info in truth["subjects"].items():
        table = _sc(root, sub, atlas)
        assert list(table.columns) == list(atlas.labels)
        w = table.to_numpy()
        assert w.shape == (atlas.n_nodes, atlas.n_nodes)
        assert np.array_equal(w, w.T) and np.all(np.diag(w) == 0) and np.all(w >= 0)
        upper = w[np.triu_indices_from(w, 1)]
        assert 0.15 < np.mean(upper > 0) < 0.35
        nonzero = upper[upper > 0]
        site_median.setdefault(info["site"], []).append(np.median(nonzero))
        assert skew(nonzero) > 2 and nonzero.max() > 20 * np.median(nonzero)
        lab = list(atlas.labels)
        planted[info["group"]] += [w[lab.index(a), lab.index(b)] for a, b in truth["sc"]["edges"]]
    assert np.median(planted["patient"]) < 0.6 * np.median(planted["control"])
    # the sites' global scales (siteB 0.85, siteC 1.1 of siteA) show in the median weights
    scale = {s: e["scale"] for s, e in truth["sc"]["site_effects"].items()}
    ratio = np.mean(site_median["siteB"]) / np.mean(site_median["siteA"])
    assert ratio == pytest.approx(scale["siteB"] / scale["siteA"], rel=0.08)
    ratio = np.mean(site_median["siteC"]) / np.mean(site_median["siteA"])
    assert ratio == pytest.approx(scale["siteC"] / scale["siteA"], rel=0.08)


# ------------------------------------------------------------------------------------------
# EEG
# ------------------------------------------------------------------------------------------


def test_eeg_files(dataset):
    import mne

    root, truth = dataset
    sub = "sub-01"
    raw = mne.io.read_raw_edf(root / sub / "eeg" / f"{sub}_task-rest_eeg.edf", verbose="error")
    assert len(raw.ch_names) == 34
    assert raw.info["sfreq"] == EEG_SFREQ
    assert raw.n_times == int(EEG_SECONDS * EEG_SFREQ)
    channels = pd.read_csv(root / sub / "eeg" / f"{sub}_task-rest_channels.tsv", sep="\t")
    assert channels["name"].tolist() == raw.ch_names
    assert channels["type"].value_counts().to_dict() == {"EEG": 32, "ECG": 1, "EOG": 1}
    assert set(channels["units"]) == {"µV"}
    montage = demo_eeg._montage()
    eeg_names = channels.loc[channels["type"] == "EEG", "name"].tolist()
    assert set(eeg_names) <= set(montage.ch_names)
    electrodes = pd.read_csv(root / sub / "eeg" / f"{sub}_electrodes.tsv", sep="\t")
    assert electrodes["name"].tolist() == eeg_names
    assert electrodes[["x", "y", "z"]].abs().max().max() < 0.2  # metres
    sidecar = json.loads((root / sub / "eeg" / f"{sub}_task-rest_eeg.json").read_text())
    assert sidecar["SamplingFrequency"] == EEG_SFREQ and sidecar["PowerLineFrequency"] == 50
    assert "EEGReference" in sidecar
    coords = json.loads((root / sub / "eeg" / f"{sub}_coordsystem.json").read_text())
    assert coords["EEGCoordinateUnits"] == "m"
    # Plausible scalp amplitudes (volts in MNE).
    sd = raw.get_data(picks="Pz").std()
    assert 3e-6 < sd < 60e-6


def test_eeg_alpha_effect_at_sensors(dataset, atlas):
    import mne
    from scipy.signal import welch

    root, truth = dataset
    channels = truth["eeg"]["channels"]
    leadfield, _ = demo_eeg.eeg_leadfield(atlas, channels)
    leadfield -= leadfield.mean(axis=0)  # the recordings are average-referenced
    idx = [atlas.labels.index(p) for p in truth["eeg"]["parcels"]]
    top = np.argsort((leadfield[:, idx] ** 2).sum(axis=1))[::-1][:4]
    rel_alpha = {"control": [], "patient": []}
    for sub, info in truth["subjects"].items():
        raw = mne.io.read_raw_edf(root / sub / "eeg" / f"{sub}_task-rest_eeg.edf", verbose="error")
        x = raw.get_data(picks=[channels[i] for i in top])
        f, pxx = welch(x, fs=raw.info["sfreq"], nperseg=int(2 * raw.info["sfreq"]))
        alpha = pxx[:, (f >= 8) & (f < 13)].sum(axis=1)
        broad = pxx[:, (f >= 1) & (f < 45)].sum(axis=1)
        rel_alpha[info["group"]].append(np.mean(alpha / broad))
    assert np.mean(rel_alpha["patient"]) > 1.1 * np.mean(rel_alpha["control"]), rel_alpha


# ------------------------------------------------------------------------------------------
# Determinism and validation
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, atlas):
    kwargs = dict(n_subjects=4, n_volumes=24, voxel_size=8.0, eeg_seconds=10.0, eeg_sfreq=100.0)
    roots = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        roots[name] = tmp_path_factory.mktemp(f"tiny_{name}")
        demo.make_demo_dataset(roots[name], atlas, seed=seed, **kwargs)
    return roots


def test_same_seed_same_bytes(tiny):
    files = sorted(p.relative_to(tiny["a"]) for p in tiny["a"].rglob("*") if p.is_file())
    assert any(str(f).endswith("_bold.nii.gz") for f in files)
    assert files == sorted(p.relative_to(tiny["b"]) for p in tiny["b"].rglob("*") if p.is_file())
    for rel in files:
        assert (tiny["a"] / rel).read_bytes() == (tiny["b"] / rel).read_bytes(), rel


def test_different_seed_differs(tiny):
    rel = Path(
        "derivatives/fmriprep/sub-01/func/sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    )
    assert (tiny["a"] / rel).read_bytes() != (tiny["c"] / rel).read_bytes()
    bold = str(rel).replace(
        "desc-confounds_timeseries.tsv", f"space-{SPACE}_desc-preproc_bold.nii.gz"
    )
    a = np.asarray(nib.load(tiny["a"] / bold).dataobj)
    c = np.asarray(nib.load(tiny["c"] / bold).dataobj)
    assert a.shape == c.shape and not np.array_equal(a, c)


def test_rejects_too_few_subjects(tmp_path, atlas):
    with pytest.raises(ValueError, match="n_subjects"):
        demo.make_demo_dataset(tmp_path, atlas, n_subjects=3)
