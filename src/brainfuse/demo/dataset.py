"""Synthetic, seed-deterministic demo dataset written in the file formats of real inputs.

The demo exercises the same readers as real data: fMRIPrep derivatives (BOLD in MNI space,
brain mask, confounds), a raw BIDS EEG dataset (EDF + sidecars) and QSIRecon-style structural
connectivity matrices. Every subject belongs to a site and a group; known group effects are
planted in each modality and recorded in ``ground_truth.json`` so that the pipeline's findings
can be checked against them.

Layout written under ``outdir``::

    dataset_description.json, participants.tsv/.json, README, ground_truth.json
    sub-XX/eeg/sub-XX_task-rest_{eeg.edf,eeg.json,channels.tsv}
    sub-XX/eeg/sub-XX_{electrodes.tsv,coordsystem.json}
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_space-MNI152NLin6Asym_desc-brain_mask.nii.gz
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_desc-confounds_timeseries.{tsv,json}
    derivatives/qsirecon/sub-XX/dwi/sub-XX_space-T1w_seg-<atlas>_desc-sift2_relmat.tsv

Generative models, in brief (details in the functions that implement them):

* **fMRI** - parcel signals are Gaussian noise band-limited to 0.01-0.1 Hz with a Yeo-7 network
  covariance (patients: correlations among 10 planted parcels raised by ``delta_r``), spread to
  voxels with per-voxel loadings plus AR(1) voxel noise, a global signal, CSF/WM signals, drift,
  a motion artefact that is linear in the 24 motion regressors, spikes at high-FD volumes and a
  non-steady-state first volume. Confound columns are the signals used to build the artefacts or
  are computed from the written data (global signal, DVARS, aCompCor).
* **EEG** - 100 parcel sources carry band-limited oscillations whose amplitude envelopes are slow
  and network-correlated, projected to 32 10-20 electrodes by an MNE three-shell sphere-model
  forward solution; patients have more alpha in 6 parietal parcels.
* **SC** - distance-dependent, sparse, log-normally weighted streamline matrices with strong
  homotopic edges; in patients every edge of 6 planted parcels is weaker (a disconnection of
  those parcels, spread over ~150 tracts, as white-matter lesions or hub damage would give).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import fft, ndimage, signal, sparse, stats

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import atomic_path, write_json, write_text, write_tsv

logger = logging.getLogger(__name__)

BIDS_VERSION = "1.9.0"
SPACE = "MNI152NLin6Asym"
TASK = "rest"
GROUPS = ("control", "patient")
SITES = ("siteA", "siteB")

#: EEG frequency bands (Hz), lower edge inclusive.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: The classic 32-channel 10-20 cap (BrainProducts actiCAP 32 layout).
EEG_CHANNELS_32: tuple[str, ...] = tuple(
    (
        "Fp1 Fp2 F7 F3 Fz F4 F8 FC5 FC1 FC2 FC6 T7 C3 Cz C4 T8 TP9 CP5 CP1 CP2 CP6 TP10 P7 P3 Pz "
        "P4 P8 PO9 O1 Oz O2 PO10"
    ).split()
)
#: Extra 10-10 positions that complete a 64-channel cap.
_EEG_CHANNELS_EXTRA: tuple[str, ...] = tuple(
    (
        "AF7 AF3 AF4 AF8 F5 F1 F2 F6 FT9 FT7 FC3 FC4 FT8 FT10 C5 C1 C2 C6 TP7 CP3 CPz CP4 TP8 P5 "
        "P1 P2 P6 PO7 PO3 POz PO4 PO8"
    ).split()
)

# Planted-effect sizes (ground truth).
FMRI_DELTA_R = 0.35
EEG_ALPHA_RATIO = 1.8
SC_SCALE = 0.5
SC_PLANTED_PARCELS = 6

# Site effects: scanner/amplifier differences that a harmonisation step should absorb.
_SITE_FMRI = {
    "siteA": {"noise_sd": 1.5, "global_sd": 0.35, "gain": 1.00},
    "siteB": {"noise_sd": 2.0, "global_sd": 0.55, "gain": 1.15},
}
_SITE_EEG = {"siteA": {"noise_uv": 1.5, "line_uv": 1.0}, "siteB": {"noise_uv": 2.5, "line_uv": 3.0}}
_SITE_SC = {"siteA": 1.0, "siteB": 0.85}

# Independent random streams: (seed, stream, subject, run) keys a SeedSequence, so one subject's
# data do not depend on how many subjects are generated or in which order.
_S_PARTICIPANTS, _S_FMRI_GROUP, _S_FMRI_RUN, _S_EEG_GROUP, _S_EEG_SUB, _S_SC_GROUP, _S_SC_SUB = (
    range(1, 8)
)

_NON_STEADY_GAIN = 1.3  # intensity of the first (non-steady-state) volume relative to the rest
# BOLD values are rounded to this: far below the voxel noise; gzip output shrinks by ~25 %.
_QUANTUM = 1.0 / 16.0
_FD_RADIUS_MM = 50.0  # Power et al. (2012): rotations to mm on a 50 mm sphere
_HIGHPASS_S = 128.0  # fMRIPrep's cosine basis cut-off
_N_ACOMPCOR = 6


@functools.lru_cache(maxsize=4)
def _centroids(atlas: Atlas) -> np.ndarray:
    """Parcel centroids, computed once per atlas (several models need them)."""
    cent = atlas.centroids()
    cent.setflags(write=False)
    return cent


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up (threadpoolctl comes with scikit-learn)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def make_demo_dataset(
    outdir: str | Path,
    atlas: Atlas,
    n_subjects: int = 24,
    seed: int = 0,
    n_volumes: int = 180,
    tr: float = 2.0,
    voxel_size: float = 4.0,
    eeg_seconds: float = 120.0,
    eeg_sfreq: float = 250.0,
    n_eeg_channels: int = 32,
) -> dict:
    """Write the synthetic demo dataset and return its ground truth.

    Parameters
    ----------
    outdir : str or Path
        Root of the raw BIDS dataset; derivatives go to ``outdir/derivatives``. Existing files
        with the same names are replaced.
    atlas : Atlas
        Parcellation that defines the parcels (fMRI signals, EEG sources, SC nodes).
    n_subjects : int
        Number of subjects (at least 4: two sites x two groups).
    seed : int
        Seed of every random draw; the same seed gives byte-identical files.
    n_volumes : int
        BOLD volumes per run (the first is a non-steady-state volume).
    tr : float
        Repetition time in seconds.
    voxel_size : float
        Isotropic BOLD voxel size in mm; the grid is the atlas's field of view resampled to it.
    eeg_seconds, eeg_sfreq : float
        EEG duration (s) and sampling frequency (Hz).
    n_eeg_channels : int
        EEG electrodes (8..64); 32 gives the classic 10-20 cap.

    Returns
    -------
    dict
        The ground truth, also written to ``outdir/ground_truth.json``.
    """
    if n_subjects < 4:
        raise ValueError(f"n_subjects={n_subjects}: need at least 4 (two sites x two groups)")
    if n_volumes < 20:
        raise ValueError(f"n_volumes={n_volumes}: need at least 20")
    if eeg_seconds < 10 or eeg_sfreq < 100:
        raise ValueError("need at least 10 s of EEG sampled at >= 100 Hz")
    t_start = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    # The matrices here are small: BLAS threads only contend (10-50x slower eigh on a busy box).
    with _single_threaded_blas():
        participants = make_participants(n_subjects, seed)
        fmri_parcels = choose_fmri_parcels(atlas)
        eeg_parcels = choose_eeg_parcels(atlas)

        _write_raw_dataset_files(outdir, participants, seed, atlas)
        fmri_info = simulate_fmri(
            outdir / "derivatives" / "fmriprep",
            atlas,
            participants,
            fmri_parcels,
            seed,
            n_volumes=n_volumes,
            tr=tr,
            voxel_size=voxel_size,
        )
        t_fmri = time.perf_counter()
        eeg_info = simulate_eeg(
            outdir,
            atlas,
            participants,
            eeg_parcels,
            seed,
            seconds=eeg_seconds,
            sfreq=eeg_sfreq,
            n_channels=n_eeg_channels,
        )
        t_eeg = time.perf_counter()
        sc_info = simulate_sc(outdir / "derivatives" / "qsirecon", atlas, participants, seed)

    subjects = {}
    for row in participants.itertuples():
        sub = row.participant_id
        subjects[sub] = {
            "group": row.group,
            "site": row.site,
            "runs": list(row.runs),
            "motion_level": round(float(row.motion_level), 4),
            "mean_fd": fmri_info["mean_fd"][sub],
            "eeg_iaf_hz": round(eeg_info["iaf"][sub], 3),
        }
    truth = {
        "seed": int(seed),
        "label_column": "group",
        "groups": list(GROUPS),
        "sites": list(SITES),
        "atlas": atlas.name,
        "fmri": {
            "parcels": fmri_parcels,
            "edges": [list(e) for e in combinations(fmri_parcels, 2)],
            "delta_r": FMRI_DELTA_R,
            "delta_r_model": fmri_info["delta_r_model"],
            "space": SPACE,
            "voxel_size_mm": float(voxel_size),
            "grid_shape": fmri_info["grid_shape"],
            "tr": float(tr),
            "n_volumes": int(n_volumes),
            "non_steady_state_volumes": 1,
            "site_effects": _SITE_FMRI,
        },
        "eeg": {
            "band": "alpha",
            "band_hz": list(BANDS["alpha"]),
            "parcels": eeg_parcels,
            "amplitude_ratio": EEG_ALPHA_RATIO,
            "channels": eeg_info["channels"],
            "sfreq": float(eeg_sfreq),
            "seconds": float(eeg_seconds),
            "forward_model": eeg_info["forward_model"],
            "site_effects": _SITE_EEG,
        },
        "sc": {
            "parcels": sc_info["parcels"],
            "edges": sc_info["edges"],
            "scale": SC_SCALE,
            "density": sc_info["density"],
            "site_effects": _SITE_SC,
        },
        "subjects": subjects,
    }
    write_json(outdir / "ground_truth.json", truth)
    logger.info(
        "demo dataset (%d subjects) in %.1f s (fMRI %.1f s, EEG %.1f s)",
        n_subjects,
        time.perf_counter() - t_start,
        t_fmri - t_start,
        t_eeg - t_fmri,
    )
    return truth


# --------------------------------------------------------------------------------------------
# Participants and top-level files
# --------------------------------------------------------------------------------------------


def make_participants(n_subjects: int, seed: int) -> pd.DataFrame:
    """Draw the participants table.

    Sites split the subjects in two halves; within each site the groups are balanced (one extra
    control when a site has an odd size). About a quarter of the subjects have a second run.
    Motion level is log-normal and independent of group and site.

    Returns
    -------
    pandas.DataFrame
        ``participant_id, age, sex, site, group`` plus the non-BIDS columns ``runs`` (tuple of
        run numbers) and ``motion_level``.
    """
    rng = _rng(seed, _S_PARTICIPANTS)
    ids = [f"sub-{i + 1:02d}" for i in range(n_subjects)]
    n_a = (n_subjects + 1) // 2
    sites = [SITES[0]] * n_a + [SITES[1]] * (n_subjects - n_a)
    groups: list[str] = []
    for size in (n_a, n_subjects - n_a):
        block = [GROUPS[1]] * (size // 2) + [GROUPS[0]] * (size - size // 2)
        groups += [block[i] for i in rng.permutation(size)]
    n_two = max(1, round(n_subjects / 4))
    two_runs = set(rng.choice(n_subjects, size=n_two, replace=False).tolist())
    return pd.DataFrame(
        {
            "participant_id": ids,
            "age": np.clip(np.round(rng.normal(38, 11, n_subjects)), 18, 75).astype(int),
            "sex": rng.choice(["F", "M"], size=n_subjects),
            "site": sites,
            "group": groups,
            "runs": [(1, 2) if i in two_runs else (1,) for i in range(n_subjects)],
            "motion_level": np.exp(rng.normal(0.0, 0.6, n_subjects)),
        }
    )


def _write_raw_dataset_files(outdir: Path, participants: pd.DataFrame, seed: int, atlas: Atlas):
    write_json(
        outdir / "dataset_description.json",
        {
            "Name": "brainfuse synthetic demo dataset",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["brainfuse.demo (synthetic data generator)"],
            "GeneratedBy": [
                {
                    "Name": "brainfuse.demo",
                    "Description": f"Synthetic data, seed {seed}; not recorded from people.",
                }
            ],
        },
    )
    write_tsv(
        outdir / "participants.tsv", participants[["participant_id", "age", "sex", "site", "group"]]
    )
    write_json(
        outdir / "participants.json",
        {
            "age": {"Description": "Age at scan", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            "site": {"Description": "Acquisition site", "Levels": {s: s for s in SITES}},
            "group": {
                "Description": "Diagnostic group",
                "Levels": {"control": "healthy control", "patient": "patient"},
            },
        },
    )
    write_text(
        outdir / "README",
        "brainfuse synthetic demo dataset\n"
        "================================\n\n"
        "All data are simulated by brainfuse.demo.make_demo_dataset (seed "
        f"{seed}, atlas {atlas.name}); nothing was recorded from people.\n"
        "Raw BIDS EEG lives here; derivatives/fmriprep and derivatives/qsirecon mimic fMRIPrep\n"
        "and QSIRecon outputs. Group effects planted in each modality are listed in\n"
        "ground_truth.json (not part of BIDS).\n",
    )


# --------------------------------------------------------------------------------------------
# Planted parcels
# --------------------------------------------------------------------------------------------


def _pick_alternating(atlas: Atlas, network: str, k: int, taken: set[str]) -> list[str]:
    """Up to ``k`` parcels of ``network``, alternating hemispheres, in label order."""
    left = [
        lb
        for lb, n in zip(atlas.labels, atlas.networks, strict=True)
        if n == network and "_LH_" in lb and lb not in taken
    ]
    right = [
        lb
        for lb, n in zip(atlas.labels, atlas.networks, strict=True)
        if n == network and "_LH_" not in lb and lb not in taken
    ]
    out: list[str] = []
    while len(out) < k and (left or right):
        for side in (left, right):
            if side and len(out) < k:
                out.append(side.pop(0))
    return out


def choose_fmri_parcels(atlas: Atlas, n: int = 10) -> list[str]:
    """The parcels whose mutual connectivity is raised in patients.

    Four Default, three Control and three Salience/Ventral-attention parcels (alternating
    hemispheres); atlases without Yeo-7 networks fall back to evenly spaced parcels.
    """
    plan = (("Default", 4), ("Cont", 3), ("SalVentAttn", 3))
    chosen: list[str] = []
    for network, k in plan:
        chosen += _pick_alternating(atlas, network, k, set(chosen))
    if len(chosen) < n:
        spaced = [atlas.labels[i] for i in np.linspace(0, atlas.n_nodes - 1, 3 * n).astype(int)]
        chosen += [lb for lb in spaced if lb not in chosen][: n - len(chosen)]
    return chosen[:n]


def choose_eeg_parcels(atlas: Atlas, n: int = 6) -> list[str]:
    """The parcels whose alpha amplitude is raised in patients.

    The parcels nearest to six posterior-parietal targets (MNI mm: bilateral inferior parietal,
    precuneus and superior parietal cortex), which carry part of the posterior alpha rhythm.
    """
    targets = np.array(
        [[-45, -65, 35], [45, -65, 35], [-8, -60, 40], [8, -60, 40], [-25, -65, 55], [25, -65, 55]],
        dtype=float,
    )
    centroids = _centroids(atlas)
    chosen: list[int] = []
    for target in targets[:n]:
        dist = np.linalg.norm(centroids - target, axis=1)
        dist[np.isnan(dist)] = np.inf
        dist[chosen] = np.inf
        chosen.append(int(np.argmin(dist)))
    return [atlas.labels[i] for i in chosen]


def _hemispheres(atlas: Atlas) -> np.ndarray:
    """'L'/'R' per parcel, from the label (``_LH_``/``_RH_``) or else the centroid's x sign."""
    cent = _centroids(atlas)
    out = []
    for label, xyz in zip(atlas.labels, cent, strict=True):
        if re.search(r"(^|[_-])(LH|lh|L)([_-]|$)", label):
            out.append("L")
        elif re.search(r"(^|[_-])(RH|rh|R)([_-]|$)", label):
            out.append("R")
        else:
            out.append("L" if xyz[0] < 0 else "R")
    return np.array(out)


# --------------------------------------------------------------------------------------------
# fMRI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoldGrid:
    """The coarse BOLD grid and the atlas resampled onto it.

    Attributes
    ----------
    affine : ndarray (4, 4)
        Voxel-to-MNI affine: the atlas's axes, scaled to ``voxel_size``, same first-voxel centre.
    shape : tuple of int
        Spatial shape.
    mask : ndarray of bool
        Brain mask: labelled voxels dilated by one voxel.
    node : ndarray of int
        For each mask voxel (C order), the node index (0-based, atlas order) or -1 in the
        unlabelled rim.
    coords : ndarray (n_mask, 3)
        World coordinates (mm) of the mask voxels.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    mask: np.ndarray
    node: np.ndarray
    coords: np.ndarray


def make_bold_grid(atlas: Atlas, voxel_size: float) -> BoldGrid:
    """Resample the atlas labels with nearest neighbour onto a ``voxel_size`` grid.

    The grid keeps the atlas's orientation and first-voxel centre, so with a voxel size that is
    a multiple of the atlas's, every BOLD voxel centre is an atlas voxel centre and any
    nearest-neighbour resampling of the atlas (as the pipeline does) gives the same labels.
    """
    aff = np.asarray(atlas.img.affine, dtype=float)
    zooms = np.linalg.norm(aff[:3, :3], axis=0)
    affine = aff.copy()
    affine[:3, :3] = aff[:3, :3] * (voxel_size / zooms)
    shape = tuple(
        int(np.ceil(s * z / voxel_size)) for s, z in zip(atlas.img.shape[:3], zooms, strict=True)
    )
    ijk = np.indices(shape).reshape(3, -1).T
    src = nib.affines.apply_affine(np.linalg.inv(aff) @ affine, ijk)
    src = np.rint(src).astype(int)
    inside = np.all((src >= 0) & (src < np.array(atlas.img.shape[:3])), axis=1)
    data = np.asarray(atlas.img.dataobj)
    values = np.zeros(len(ijk), dtype=np.int64)
    values[inside] = data[tuple(src[inside].T)]
    lut = np.full(max(int(values.max()), max(atlas.label_values)) + 1, -1, dtype=np.int64)
    lut[list(atlas.label_values)] = np.arange(atlas.n_nodes)
    node_vol = lut[np.maximum(values, 0)].reshape(shape)
    node_vol[values.reshape(shape) <= 0] = -1
    mask = ndimage.binary_dilation(node_vol >= 0, iterations=1)
    mask_ijk = np.argwhere(mask)
    return BoldGrid(
        affine=affine,
        shape=shape,  # type: ignore[arg-type]
        mask=mask,
        node=node_vol[mask],
        coords=nib.affines.apply_affine(affine, mask_ijk),
    )


def _hrf(tr: float, length: float = 32.0) -> np.ndarray:
    """SPM's canonical double-gamma HRF sampled every ``tr`` seconds."""
    t = np.arange(0.0, length, tr)
    h = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6.0
    return h / np.abs(h).sum()


def _bold_band_noise(rng: np.random.Generator, n: int, k: int, tr: float) -> np.ndarray:
    """(n, k) unit-variance Gaussian noise band-limited to the resting-state BOLD range.

    Flat between 0.01 and 0.1 Hz with soft edges (quadratic below, Gaussian taper above). A
    flat in-band spectrum leaves more independent samples after the usual 0.01-0.1 Hz band-pass
    than HRF-filtered white noise (whose power sits below 0.05 Hz), so a 6-minute run gives
    correlation estimates about 25 % more precise. Drawn over ``2 n`` samples and cropped so
    that the series does not wrap around.
    """
    m = 2 * n
    f = np.fft.rfftfreq(m, tr)
    gain = np.minimum(f / 0.01, 1.0) ** 2 * np.exp(-0.5 * (np.maximum(f - 0.1, 0.0) / 0.02) ** 2)
    x = fft.irfft(fft.rfft(rng.standard_normal((m, k)), axis=0) * gain[:, None], n=m, axis=0)[:n]
    return (x - x.mean(0)) / x.std(0)


def _nearest_correlation(c: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Clip eigenvalues at ``floor`` and rescale to a unit diagonal."""
    c = (c + c.T) / 2
    w, v = np.linalg.eigh(c)
    c = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / np.outer(d, d)


def network_correlation(
    atlas: Atlas,
    rng: np.random.Generator,
    within: float = 0.5,
    between: float = 0.1,
    default_dorsattn: float = -0.2,
    jitter: float = 0.05,
) -> np.ndarray:
    """Parcel correlation matrix with Yeo-7 block structure and small random heterogeneity."""
    nets = np.array(atlas.networks)
    c = np.where(nets[:, None] == nets[None, :], within, between)
    anti = ((nets[:, None] == "Default") & (nets[None, :] == "DorsAttn")) | (
        (nets[:, None] == "DorsAttn") & (nets[None, :] == "Default")
    )
    c = np.where(anti, default_dorsattn, c)
    noise = rng.normal(0.0, jitter, c.shape)
    c = c + np.triu(noise, 1) + np.triu(noise, 1).T
    np.fill_diagonal(c, 1.0)
    return _nearest_correlation(c)


def _patient_correlation(c: np.ndarray, idx: list[int], delta: float) -> np.ndarray:
    p = c.copy()
    block = np.ix_(idx, idx)
    p[block] = np.minimum(p[block] + delta, 0.95)
    np.fill_diagonal(p, 1.0)
    return _nearest_correlation(p)


def _smooth_noise(rng: np.random.Generator, n: int, k: int, kernel: np.ndarray) -> np.ndarray:
    """(n, k) unit-variance Gaussian noise filtered along time by ``kernel``."""
    burn = len(kernel)
    x = signal.lfilter(kernel, [1.0], rng.standard_normal((n + burn, k)), axis=0)[burn:]
    return (x - x.mean(0)) / x.std(0)


def simulate_motion(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """Six rigid-body parameters (mm, mm, mm, rad, rad, rad) for ``n`` volumes.

    A smoothed random walk plus a slow trend, and ``Poisson(1 + 2 level)`` jerks that are either
    lasting steps or one/two-volume excursions; all amplitudes scale with ``level``. Rotations
    are drawn in mm on a 50 mm sphere and converted to radians.
    """
    walk = np.cumsum(rng.normal(0.0, 0.04 * level, (n, 6)), axis=0)
    walk = ndimage.gaussian_filter1d(walk, 1.5, axis=0)
    params = walk + np.linspace(0.0, 1.0, n)[:, None] * rng.normal(0.0, 0.15 * level, 6)
    for _ in range(rng.poisson(1.0 + 2.0 * level)):
        t = int(rng.integers(2, n))
        amp = rng.normal(0.0, 0.5 * level, 6) * (rng.random(6) < 0.5)
        if rng.random() < 0.5:
            params[t:] += amp
        else:
            params[t : t + int(rng.integers(1, 3))] += amp
    params -= params[0]
    params[:, 3:] /= _FD_RADIUS_MM
    return params


def framewise_displacement(params: np.ndarray) -> np.ndarray:
    """Power's FD (mm); the first value is NaN as in fMRIPrep."""
    d = np.abs(np.diff(params, axis=0))
    fd = d[:, :3].sum(1) + _FD_RADIUS_MM * d[:, 3:].sum(1)
    return np.concatenate([[np.nan], fd])


def cosine_basis(n: int, tr: float, period_cut: float = _HIGHPASS_S) -> np.ndarray:
    """fMRIPrep's DCT high-pass regressors (nipype ``cosine_drift`` without the constant)."""
    order = int(np.floor(2 * n * tr / period_cut))
    t = np.arange(n)
    cols = [np.sqrt(2.0 / n) * np.cos(np.pi / n * (t + 0.5) * k) for k in range(1, order)]
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def _derivative(x: np.ndarray) -> np.ndarray:
    """Backward difference with a NaN first row (fMRIPrep's ``_derivative1``)."""
    d = np.diff(x, axis=0)
    return np.concatenate([np.full((1,) + x.shape[1:], np.nan), d])


def compute_dvars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and standardised DVARS as in nipype's ``compute_dvars`` (used by fMRIPrep).

    Parameters
    ----------
    data : ndarray (n_volumes, n_voxels)
        Masked BOLD.

    Returns
    -------
    dvars, std_dvars : ndarray (n_volumes,)
        First values NaN. Data are scaled to a median of 1000; the standardisation divides by
        the DVARS expected from each voxel's robust SD and lag-1 autocorrelation.
    """
    x = data.astype(np.float32)
    x *= np.float32(1000.0 / np.median(x))
    q25, q75 = np.percentile(x, [25, 75], axis=0, method="lower")
    sd = (q75 - q25).astype(np.float64) / 1.349
    keep = sd > 0
    x, sd = x[:, keep], sd[keep]
    xc = x - x.mean(axis=0, keepdims=True)
    ar1 = (xc[1:] * xc[:-1]).sum(0, dtype=np.float64) / np.maximum(
        (xc * xc).sum(0, dtype=np.float64), 1e-12
    )
    diff_sd = np.sqrt(np.maximum(2.0 * (1.0 - ar1), 0.0)) * sd
    dv = np.sqrt(np.mean(np.diff(x, axis=0) ** 2, axis=1, dtype=np.float64))
    nan = np.array([np.nan])
    return np.concatenate([nan, dv]), np.concatenate([nan, dv / diff_sd.mean()])


def _acompcor(rim: np.ndarray, basis: np.ndarray, n_comp: int) -> tuple[np.ndarray, np.ndarray]:
    """Anatomical CompCor on the rim voxels (our stand-in for the WM+CSF mask).

    Like nipype: non-steady-state volume excluded and padded with 0, cosine high-pass, voxel
    z-scoring, SVD; returns unit-norm components (n_volumes, n_comp) and singular values.
    """
    y = rim[1:].astype(np.float64)
    q, _ = np.linalg.qr(np.column_stack([np.ones(len(y)), basis[1:]]))
    y -= q @ (q.T @ y)
    sd = y.std(axis=0)
    y = y[:, sd > 0] / sd[sd > 0]
    # Left singular vectors from the small (time x time) Gram matrix: far cheaper than an SVD.
    evals, evecs = np.linalg.eigh(y @ y.T)
    order = np.argsort(evals)[::-1]
    s = np.sqrt(np.maximum(evals[order], 0.0))
    u = evecs[:, order[:n_comp]]
    # SVD signs are arbitrary; fix them so identical data give identical files.
    flip = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    comps = np.zeros((len(rim), u.shape[1]))
    comps[1:] = u * flip
    return comps, s


def _expansions(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    d = _derivative(x)
    return {
        name: x,
        f"{name}_derivative1": d,
        f"{name}_power2": x**2,
        f"{name}_derivative1_power2": d**2,
    }


def simulate_bold_run(
    grid: BoldGrid,
    chol: np.ndarray,
    rng: np.random.Generator,
    n_volumes: int,
    tr: float,
    motion_level: float,
    site: str,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Simulate one run.

    Voxel percent signal change is the sum of: neural parcel signal x loading, AR(1) noise,
    global signal x loading, CSF and WM signals x loadings, linear+quadratic drift, a motion
    artefact linear in the 24 motion regressors (loadings with a brain-wide mean, a spatial
    gradient and a voxel-specific part, so it inflates connectivity most between nearby
    parcels), and a mostly global spike proportional to FD above 0.25 mm. BOLD is
    ``baseline x (1 + pct / 100)``; the first volume is scaled by 1.3 (non-steady state).

    Parameters
    ----------
    grid : BoldGrid
        Voxel geometry.
    chol : ndarray (n_nodes, n_nodes)
        Cholesky factor of the parcel correlation matrix (group-specific).
    rng : numpy.random.Generator
        The run's random stream.
    n_volumes, tr : int, float
        Run length and repetition time.
    motion_level : float
        Subject's motion scale (1 = typical).
    site : str
        Selects noise and global-signal amplitudes.

    Returns
    -------
    bold : ndarray (n_volumes, n_mask) float32
    confounds : pandas.DataFrame
        fMRIPrep-style confounds.
    meta : dict
        Confounds sidecar (aCompCor metadata) and ``mean_fd``.
    """
    n, n_nodes = n_volumes, chol.shape[0]
    site_par = _SITE_FMRI[site]
    gm = grid.node >= 0
    n_vox = grid.node.size
    hrf = _hrf(tr)
    f32 = np.float32

    neural = _bold_band_noise(rng, n, n_nodes, tr) @ chol.T
    neural = (neural / neural.std(0)).astype(f32)
    loading = np.where(gm, rng.uniform(0.5, 1.0, n_vox), 0.0).astype(f32)
    pct = neural[:, np.maximum(grid.node, 0)] * loading

    noise = rng.standard_normal((n, n_vox), dtype=f32)
    for i in range(1, n):  # AR(1); a loop over time is much faster than lfilter on axis 0
        noise[i] += f32(0.3) * noise[i - 1]
    pct += noise * f32(site_par["noise_sd"] * np.sqrt(1 - 0.3**2))

    # Nuisance time courses (columns) and their voxel loadings (rows), added in one product.
    glob = _smooth_noise(rng, n, 1, hrf)[:, 0]
    csf = _smooth_noise(rng, n, 1, np.array([1.0, 0.6, 0.3]))[:, 0]
    wm = _smooth_noise(rng, n, 1, hrf)[:, 0]
    t = np.linspace(-1.0, 1.0, n)
    params = simulate_motion(rng, n, motion_level)
    fd = framewise_displacement(params)
    mm = params.copy()
    mm[:, 3:] *= _FD_RADIUS_MM  # artefact loadings are per mm for rotations too
    dmm = np.nan_to_num(_derivative(mm))
    spike = np.maximum(np.nan_to_num(fd) - 0.25, 0.0)
    courses = np.column_stack(
        [glob, csf, wm, t, t**2 - np.mean(t**2), mm, dmm, mm**2, dmm**2, spike]
    )
    rel = (grid.coords - grid.coords.mean(0)) / grid.coords.std(0)
    motion_map = (
        rng.normal(0.0, 1.0, (1, 24))
        + rel @ rng.normal(0.0, 0.25, (3, 24))
        + rng.normal(0.0, 0.5, (n_vox, 24))
    ) * np.repeat([0.4, 1.0, 0.15, 1.0], 6)
    loads = np.column_stack(
        [
            site_par["global_sd"] * rng.uniform(0.6, 1.4, n_vox),
            np.where(gm, 0.3, 1.5) * rng.uniform(0.5, 1.5, n_vox),
            np.where(gm, 0.2, 1.0) * rng.uniform(0.5, 1.5, n_vox),
            rng.normal(0.0, 0.5, n_vox) + rng.normal(0.0, 0.1),
            rng.normal(0.0, 0.3, n_vox) + rng.normal(0.0, 0.1),
            motion_map,
            3.0 * (1.0 + rng.normal(0.0, 0.2, n_vox)),
        ]
    )
    pct += courses.astype(f32) @ loads.T.astype(f32)

    baseline = (1000.0 * site_par["gain"] * rng.uniform(0.8, 1.2, n_vox)).astype(f32)
    bold = baseline * (f32(1.0) + pct * f32(0.01))
    bold[0] *= f32(_NON_STEADY_GAIN)
    bold = np.round(bold * f32(1.0 / _QUANTUM)) * f32(_QUANTUM)

    confounds, sidecar = _confounds_table(bold, grid, params, fd, csf, wm, tr)
    return bold, confounds, {"sidecar": sidecar, "mean_fd": float(np.nanmean(fd[1:]))}


def _confounds_table(
    bold: np.ndarray,
    grid: BoldGrid,
    params: np.ndarray,
    fd: np.ndarray,
    csf: np.ndarray,
    wm: np.ndarray,
    tr: float,
) -> tuple[pd.DataFrame, dict]:
    """fMRIPrep confounds: columns, order, ``n/a`` conventions and compcor sidecar."""
    n = len(bold)
    basis = cosine_basis(n, tr)
    gs = bold.astype(np.float64).mean(axis=1)
    dvars, std_dvars = compute_dvars(bold)
    acc, sv = _acompcor(bold[:, grid.node < 0], basis, _N_ACOMPCOR)
    # CSF/WM "mean intensities": the generating signals on a plausible intensity scale, so that
    # regressing them removes exactly what was added.
    cols: dict[str, np.ndarray] = {}
    cols |= _expansions("global_signal", gs)
    cols |= _expansions("csf", 1200.0 + 12.0 * csf)
    cols |= _expansions("white_matter", 900.0 + 9.0 * wm)
    cols["std_dvars"] = std_dvars
    cols["dvars"] = dvars
    cols["framewise_displacement"] = fd
    for i in range(acc.shape[1]):
        cols[f"a_comp_cor_{i:02d}"] = acc[:, i]
    for i in range(basis.shape[1]):
        cols[f"cosine{i:02d}"] = basis[:, i]
    nss = np.zeros(n)
    nss[0] = 1.0
    cols["non_steady_state_outlier00"] = nss
    for j, name in enumerate(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")):
        cols |= _expansions(name, params[:, j])
    outliers = np.flatnonzero((np.nan_to_num(fd) > 0.5) | (np.nan_to_num(std_dvars) > 1.5))
    for k, t in enumerate(outliers):
        col = np.zeros(n)
        col[t] = 1.0
        cols[f"motion_outlier{k:02d}"] = col
    var = sv**2 / np.sum(sv**2)
    sidecar = {
        f"a_comp_cor_{i:02d}": {
            "CumulativeVarianceExplained": float(np.cumsum(var)[i]),
            "Mask": "combined",
            "Method": "aCompCor",
            "Retained": True,
            "SingularValue": float(sv[i]),
            "VarianceExplained": float(var[i]),
        }
        for i in range(acc.shape[1])
    }
    sidecar["Description"] = (
        "Synthetic (brainfuse.demo). csf/white_matter are the nuisance signals added to the "
        "data; aCompCor uses the unlabelled rim of the brain mask in place of the WM+CSF mask."
    )
    return pd.DataFrame(cols), sidecar


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=4)  # 4 = MNI152
    img.set_qform(affine, code=4)
    zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    if tr is None:
        img.header.set_xyzt_units("mm")
        img.header.set_zooms(zooms)
    else:
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms(zooms + (float(tr),))
    img.header["descrip"] = b"brainfuse synthetic demo"
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def simulate_fmri(
    root: Path,
    atlas: Atlas,
    participants: pd.DataFrame,
    parcels: list[str],
    seed: int,
    n_volumes: int,
    tr: float,
    voxel_size: float,
) -> dict[str, Any]:
    """Write the fMRIPrep-like derivative dataset under ``root``.

    Returns
    -------
    dict
        ``mean_fd`` (per subject, per run), ``grid_shape`` and ``delta_r_model`` (the mean
        patient-minus-control correlation over planted edges in the generating matrices).
    """
    write_json(
        root / "dataset_description.json",
        {
            "Name": "brainfuse synthetic demo - fMRIPrep-like derivatives",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "fMRIPrep",
                    "Version": "synthetic",
                    "Description": "SYNTHETIC: written by brainfuse.demo in fMRIPrep's output "
                    "format; not produced by fMRIPrep.",
                },
                {"Name": "brainfuse.demo"},
            ],
            "SourceDatasets": [{"URL": "../../"}],
        },
    )
    grid = make_bold_grid(atlas, voxel_size)
    idx = [atlas.labels.index(p) for p in parcels]
    c_ctl = network_correlation(atlas, _rng(seed, _S_FMRI_GROUP))
    c_pat = _patient_correlation(c_ctl, idx, FMRI_DELTA_R)
    iu = np.triu_indices(len(idx), 1)
    delta_model = float(np.mean((c_pat - c_ctl)[np.ix_(idx, idx)][iu]))
    chol = {"control": np.linalg.cholesky(c_ctl), "patient": np.linalg.cholesky(c_pat)}
    mask_u8 = grid.mask.astype(np.uint8)

    mean_fd: dict[str, dict[str, float]] = {}
    for s, row in enumerate(participants.itertuples()):
        sub = row.participant_id
        mean_fd[sub] = {}
        for run in row.runs:
            rng = _rng(seed, _S_FMRI_RUN, s, run)
            bold, conf, meta = simulate_bold_run(
                grid, chol[row.group], rng, n_volumes, tr, float(row.motion_level), row.site
            )
            func = root / sub / "func"
            stem = f"{sub}_task-{TASK}_run-{run}"
            vol = np.zeros(grid.shape + (n_volumes,), dtype=np.float32)
            vol[grid.mask] = bold.T
            _save_nifti(
                func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", vol, grid.affine, tr
            )
            write_json(
                func / f"{stem}_space-{SPACE}_desc-preproc_bold.json",
                {
                    "RepetitionTime": float(tr),
                    "SkullStripped": True,
                    "TaskName": TASK,
                    "Description": "Synthetic BOLD (brainfuse.demo)",
                },
            )
            _save_nifti(
                func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz", mask_u8, grid.affine, None
            )
            write_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", conf)
            write_json(func / f"{stem}_desc-confounds_timeseries.json", meta["sidecar"])
            mean_fd[sub][str(run)] = round(meta["mean_fd"], 4)
        logger.debug("fMRI %s done", sub)
    return {"mean_fd": mean_fd, "grid_shape": list(grid.shape), "delta_r_model": delta_model}


# --------------------------------------------------------------------------------------------
# EEG
# --------------------------------------------------------------------------------------------


def eeg_channel_names(n_channels: int = 32) -> list[str]:
    """10-20/10-10 electrode names: the classic 32 cap, a spread subset of it, or up to 64."""
    if not 8 <= n_channels <= 64:
        raise ValueError(f"n_eeg_channels={n_channels}: supported range is 8..64")
    if n_channels >= 32:
        return list(EEG_CHANNELS_32 + _EEG_CHANNELS_EXTRA[: n_channels - 32])
    # Greedy farthest-point subset keeps the scalp evenly covered.
    pos = _montage().get_positions()["ch_pos"]
    xyz = np.array([pos[c] for c in EEG_CHANNELS_32])
    chosen = [EEG_CHANNELS_32.index("Cz")]
    dist = np.linalg.norm(xyz - xyz[chosen[0]], axis=1)
    while len(chosen) < n_channels:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(xyz - xyz[nxt], axis=1))
    return [EEG_CHANNELS_32[i] for i in sorted(chosen)]


def _montage():
    """MNE's standard 10-05 montage (renamed ``colin27_1005`` in MNE 1.13; same positions)."""
    import mne

    builtin = mne.channels.get_builtin_montages()
    name = "colin27_1005" if "colin27_1005" in builtin else "standard_1005"
    return mne.channels.make_standard_montage(name)


def _eeg_info(ch_names: list[str], sfreq: float):
    import mne

    info = mne.create_info(
        ch_names + ["ECG", "EOG"], sfreq, ["eeg"] * len(ch_names) + ["ecg", "eog"]
    )
    info.set_montage(_montage(), on_missing="ignore")
    return info


def eeg_leadfield(atlas: Atlas, ch_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-orientation EEG lead field from parcel centroids to electrodes.

    Forward model: MNE's three-shell sphere model (``make_sphere_model``, sphere fitted to the
    electrode positions) with one dipole per parcel at its centroid. Centroids are in MNI152
    mm; we treat them as fsaverage MRI coordinates (fsaverage's space is MNI305, a few mm from
    MNI152) and map them to the head frame with MNE's packaged ``fsaverage-trans.fif``, the
    transform the standard 10-05 montage is registered to. Sources beyond 85 % of the scalp
    radius are pulled in along the radius so they lie inside the brain sphere. Each dipole
    points radially out from the sphere centre, tilted by a fixed pseudo-random tangential part
    (cortex is folded, so orientations are not purely radial).

    Parameters
    ----------
    atlas : Atlas
        Parcels (centroids).
    ch_names : list of str
        EEG electrode names in the 10-05 montage.

    Returns
    -------
    leadfield : ndarray (n_channels, n_nodes)
        V per A m, reference at infinity.
    electrodes : ndarray (n_channels, 3)
        Electrode positions in the MNE head (CapTrak-like) frame, metres.
    """
    import mne

    info = _eeg_info(ch_names, 250.0)
    picks = mne.pick_types(info, eeg=True)
    eeg_info = mne.pick_info(info, picks)
    electrodes = np.array([ch["loc"][:3] for ch in eeg_info["chs"]])
    trans_file = Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-trans.fif"
    head_to_mri = mne.read_trans(trans_file)
    sphere = mne.make_sphere_model("auto", "auto", eeg_info, verbose="error")
    r0 = np.asarray(sphere["r0"])
    rr = mne.transforms.apply_trans(
        mne.transforms.invert_transform(head_to_mri), _centroids(atlas) / 1000.0
    )
    rel = rr - r0
    radius = np.linalg.norm(rel, axis=1, keepdims=True)
    limit = 0.85 * sphere.radius
    rr = r0 + rel * np.minimum(1.0, limit / radius)
    radial = rel / radius
    tangent = np.random.default_rng(12345).normal(size=rr.shape)
    tangent -= (tangent * radial).sum(1, keepdims=True) * radial
    nn = radial + 0.4 * tangent
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    # The source space is built directly in head coordinates, hence the identity transform.
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose="error")
    identity = mne.transforms.Transform("head", "mri")
    fwd = mne.make_forward_solution(
        eeg_info, trans=identity, src=src, bem=sphere, meg=False, eeg=True, verbose="error"
    )
    if fwd["nsource"] != atlas.n_nodes:
        raise RuntimeError(f"forward model kept {fwd['nsource']} of {atlas.n_nodes} sources")
    gain = fwd["sol"]["data"].reshape(len(picks), atlas.n_nodes, 3)
    return np.einsum("cpk,pk->cp", gain, nn), electrodes


def _spectral_noise(
    rng: np.random.Generator,
    n_rows: int,
    n_times: int,
    sfreq: float,
    gain: np.ndarray,
    mix: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``gain`` (on rfft bins), rows unit-variance.

    ``mix`` (n_rows x n_rows) mixes the rows' Fourier coefficients, which gives the rows the
    correlation ``mix @ mix.T`` at every frequency.
    """
    idx = np.flatnonzero(gain > 0)
    coef = rng.standard_normal((n_rows, idx.size)) + 1j * rng.standard_normal((n_rows, idx.size))
    if mix is not None:
        coef = mix @ coef
    spec = np.zeros((n_rows, n_times // 2 + 1), dtype=complex)
    spec[:, idx] = coef * gain[idx]
    x = fft.irfft(spec, n=n_times, axis=1)
    return x / x.std(axis=1, keepdims=True)


def _band_gain(freqs: np.ndarray, band: str, iaf: float, nyq: float) -> np.ndarray:
    lo, hi = BANDS[band]
    hi = min(hi, 0.9 * nyq)
    if band == "alpha":
        return np.exp(-0.5 * ((freqs - iaf) / 1.0) ** 2) * (freqs > 6.0) * (freqs < 15.0)
    return ((freqs >= lo) & (freqs < hi)) / np.sqrt(np.maximum(freqs, lo))


def source_amplitudes(atlas: Atlas) -> np.ndarray:
    """Control amplitude (relative SD) of each band at each parcel, shape (n_nodes, n_bands).

    Roughly 1/f across bands; a posterior alpha rhythm in visual and posterior parietal
    parcels and a stronger sensorimotor beta.
    """
    base = {"delta": 1.0, "theta": 0.7, "alpha": 0.6, "beta": 0.4, "gamma": 0.15}
    amp = np.tile([base[b] for b in BANDS], (atlas.n_nodes, 1))
    cent = _centroids(atlas)
    nets = np.array(atlas.networks)
    posterior = (nets == "Vis") | ((cent[:, 1] < -50) & (cent[:, 2] > 15))
    amp[posterior, list(BANDS).index("alpha")] = 1.2
    amp[nets == "SomMot", list(BANDS).index("beta")] = 0.6
    return amp


def _ecg_waveform(rng: np.random.Generator, n: int, sfreq: float) -> np.ndarray:
    """Synthetic ECG (volts): P-QRS-T template at jittered beats, 55-80 bpm."""
    rr_s = 60.0 / rng.uniform(55, 80)
    beats, t = [], rng.uniform(0, rr_s)
    while t < n / sfreq:
        beats.append(t)
        t += rr_s + rng.normal(0, 0.04)
    tt = np.arange(-0.3, 0.5, 1.0 / sfreq)
    wave = sum(
        a * np.exp(-0.5 * ((tt - c) / w) ** 2)
        for a, c, w in [
            (0.12, -0.2, 0.025),
            (-0.1, -0.03, 0.008),
            (1.0, 0.0, 0.01),
            (-0.25, 0.03, 0.01),
            (0.3, 0.25, 0.04),
        ]
    )
    train = np.zeros(n)
    train[(np.array(beats) * sfreq).astype(int)] = 1.0
    lead = int(0.3 * sfreq)
    return signal.fftconvolve(train, wave, mode="full")[lead : lead + n] * 1e-3


def _eog_waveform(rng: np.random.Generator, n: int, sfreq: float) -> np.ndarray:
    """Synthetic vertical EOG (volts): blinks (~0.2/s, ~150 uV) on slow eye drift."""
    train = np.zeros(n)
    n_blinks = rng.poisson(0.2 * n / sfreq)
    train[rng.integers(0, n, n_blinks)] = rng.uniform(100, 200, n_blinks) * 1e-6
    tt = np.arange(-0.4, 0.4, 1.0 / sfreq)
    blinks = signal.fftconvolve(train, np.exp(-0.5 * (tt / 0.08) ** 2), mode="same")
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    slow = _spectral_noise(rng, 1, n, sfreq, ((freqs > 0) & (freqs < 0.5)).astype(float))[0]
    return blinks + 20e-6 * slow


def simulate_eeg_recording(
    rng: np.random.Generator,
    leadfield: np.ndarray,
    electrodes: np.ndarray,
    amp: np.ndarray,
    env_chol: np.ndarray,
    n_times: int,
    sfreq: float,
    site: str,
    source_scale: float,
) -> tuple[np.ndarray, float]:
    """One recording: EEG (average reference), ECG and EOG rows, in volts.

    Each source is ``sum_b amp[p, b] * envelope_pb(t) * carrier_pb(t)``, where the
    carriers are band-limited Gaussian noise (alpha: a Gaussian peak at the individual alpha
    frequency), envelopes are log-normal with slow (< 0.2 Hz) network-correlated logs. Sensor
    data add white noise, 50 Hz line noise, ECG and blink leakage, then are re-referenced to
    the common average.

    Returns
    -------
    data : ndarray (n_channels + 2, n_times)
    iaf : float
        Individual alpha frequency (Hz).
    """
    n_src = leadfield.shape[1]
    freqs = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    nyq = sfreq / 2.0
    iaf = float(np.clip(rng.normal(10.0, 0.6), 8.5, 11.5))
    # Envelopes have no power above 0.2 Hz: draw them at 10 Hz and interpolate linearly.
    env_rate = 10.0
    n_low = int(np.ceil(n_times * env_rate / sfreq)) + 2
    low_freqs = np.fft.rfftfreq(n_low, 1.0 / env_rate)
    env_gain = ((low_freqs > 0) & (low_freqs < 0.2)).astype(float)
    pos = np.arange(n_times) * (env_rate / sfreq)
    i0 = pos.astype(int)
    frac = pos - i0
    # Linear interpolation as a sparse (n_times x n_low) matrix: much faster than fancy indexing.
    interp = sparse.csr_matrix(
        (
            np.r_[1.0 - frac, frac],
            (np.r_[np.arange(n_times), np.arange(n_times)], np.r_[i0, i0 + 1]),
        ),
        shape=(n_times, n_low),
    )
    subject_gain = np.exp(rng.normal(0.0, 0.15))
    amp = amp * np.exp(rng.normal(0.0, 0.1, amp.shape[1]))[None, :] * subject_gain
    sources = np.zeros((n_src, n_times))
    for b, band in enumerate(BANDS):
        carrier = _spectral_noise(rng, n_src, n_times, sfreq, _band_gain(freqs, band, iaf, nyq))
        low = _spectral_noise(rng, n_src, n_low, env_rate, env_gain, mix=env_chol)
        env = amp[:, [b]] * np.exp(0.35 * low - 0.35**2 / 2)  # log-normal, mean amp
        carrier *= (interp @ env.T).T
        sources += carrier
    eeg = leadfield @ sources * source_scale
    site_par = _SITE_EEG[site]
    n_ch = eeg.shape[0]
    eeg += rng.normal(0.0, site_par["noise_uv"] * 1e-6, eeg.shape)
    tsec = np.arange(n_times) / sfreq
    if 50.0 < 0.9 * nyq:
        line_amp = rng.uniform(0.3, 1.0, (n_ch, 1)) * site_par["line_uv"] * 1e-6
        eeg += line_amp * np.sin(2 * np.pi * 50.0 * tsec + rng.uniform(0, 2 * np.pi))
    ecg = _ecg_waveform(rng, n_times, sfreq)
    eog = _eog_waveform(rng, n_times, sfreq)
    eeg += np.outer(rng.uniform(-2e-3, 2e-3, n_ch), ecg)  # ~2 uV of cardiac field
    front = electrodes[np.argmax(electrodes[:, 1])]
    eeg += np.outer(0.5 * np.exp(-np.linalg.norm(electrodes - front, axis=1) / 0.04), eog)
    eeg -= eeg.mean(axis=0, keepdims=True)
    return np.vstack([eeg, ecg, eog]), iaf


def _write_eeg_sidecars(
    eeg_dir: Path,
    stem: str,
    ch_names: list[str],
    electrodes: np.ndarray,
    sfreq: float,
    seconds: float,
) -> None:
    write_json(
        eeg_dir / f"{stem}_eeg.json",
        {
            "TaskName": TASK,
            "TaskDescription": "Eyes-closed rest (synthetic)",
            "SamplingFrequency": float(sfreq),
            "PowerLineFrequency": 50,
            "EEGReference": "average",
            "EEGGround": "AFz",
            "EEGPlacementScheme": f"10-20 ({len(ch_names)} channels)",
            "EEGChannelCount": len(ch_names),
            "ECGChannelCount": 1,
            "EOGChannelCount": 1,
            "EMGChannelCount": 0,
            "MiscChannelCount": 0,
            "TriggerChannelCount": 0,
            "RecordingType": "continuous",
            "RecordingDuration": float(seconds),
            "SoftwareFilters": "n/a",
            "Manufacturer": "brainfuse.demo (synthetic)",
            "CapManufacturer": "n/a",
        },
    )
    types = ["EEG"] * len(ch_names) + ["ECG", "EOG"]
    write_tsv(
        eeg_dir / f"{stem}_channels.tsv",
        pd.DataFrame(
            {
                "name": ch_names + ["ECG", "EOG"],
                "type": types,
                "units": ["µV"] * len(types),
                "sampling_frequency": [float(sfreq)] * len(types),
                "status": ["good"] * len(types),
            }
        ),
    )
    # BIDS names electrodes and coordinate system per subject/session, without the task entity.
    subject_stem = stem.split("_task-")[0]
    write_tsv(
        eeg_dir / f"{subject_stem}_electrodes.tsv",
        pd.DataFrame(
            {
                "name": ch_names,
                "x": np.round(electrodes[:, 0], 6),
                "y": np.round(electrodes[:, 1], 6),
                "z": np.round(electrodes[:, 2], 6),
            }
        ),
    )
    write_json(
        eeg_dir / f"{subject_stem}_coordsystem.json",
        {
            "EEGCoordinateSystem": "CapTrak",
            "EEGCoordinateUnits": "m",
            "EEGCoordinateSystemDescription": "MNE head frame of the standard 10-05 montage: "
            "origin between the preauricular points, +x to RPA, +y to nasion, +z up.",
        },
    )


def simulate_eeg(
    root: Path,
    atlas: Atlas,
    participants: pd.DataFrame,
    parcels: list[str],
    seed: int,
    seconds: float,
    sfreq: float,
    n_channels: int,
) -> dict[str, Any]:
    """Write one resting EEG recording per subject into the raw BIDS dataset at ``root``.

    Returns
    -------
    dict
        ``channels``, each subject's individual alpha frequency (``iaf``, Hz) and a description
        of the ``forward_model``.
    """
    import mne

    ch_names = eeg_channel_names(n_channels)
    leadfield, electrodes = eeg_leadfield(atlas, ch_names)
    amp_ctl = source_amplitudes(atlas)
    amp_pat = amp_ctl.copy()
    alpha = list(BANDS).index("alpha")
    amp_pat[[atlas.labels.index(p) for p in parcels], alpha] *= EEG_ALPHA_RATIO
    # One fixed source scale for everybody (never per subject, which would normalise the planted
    # effect away): typical average-referenced channel SD of ~15 uV.
    lf_avg = leadfield - leadfield.mean(0, keepdims=True)
    typical_sd = np.median(np.sqrt((lf_avg**2) @ (amp_ctl**2).sum(1)))
    source_scale = 15e-6 / typical_sd
    env_chol = np.linalg.cholesky(network_correlation(atlas, _rng(seed, _S_EEG_GROUP)))
    n_times = int(round(seconds * sfreq))
    info = _eeg_info(ch_names, sfreq)
    meas_date = datetime.datetime(2020, 1, 1, 9, 0, tzinfo=datetime.timezone.utc)
    iaf: dict[str, float] = {}
    for s, row in enumerate(participants.itertuples()):
        sub = row.participant_id
        data, iaf[sub] = simulate_eeg_recording(
            _rng(seed, _S_EEG_SUB, s),
            leadfield,
            electrodes,
            amp_pat if row.group == "patient" else amp_ctl,
            env_chol,
            n_times,
            sfreq,
            row.site,
            source_scale,
        )
        raw = mne.io.RawArray(data, info, verbose="error")
        raw.set_meas_date(meas_date)
        eeg_dir = root / sub / "eeg"
        stem = f"{sub}_task-{TASK}"
        with atomic_path(eeg_dir / f"{stem}_eeg.edf") as tmp:
            mne.export.export_raw(
                tmp, raw, fmt="edf", physical_range="channelwise", overwrite=True, verbose="error"
            )
        _write_eeg_sidecars(eeg_dir, stem, ch_names, electrodes, sfreq, seconds)
    return {
        "channels": ch_names,
        "iaf": iaf,
        "forward_model": "MNE 3-shell sphere model fitted to the 10-05 electrode positions; one "
        "dipole per parcel centroid (MNI mm taken as fsaverage MRI, mapped with MNE's "
        "fsaverage-trans.fif), radial orientation with a fixed tangential tilt; EEG average "
        "reference",
    }


# --------------------------------------------------------------------------------------------
# Structural connectivity
# --------------------------------------------------------------------------------------------


def _homotopic(atlas: Atlas, hemi: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Boolean matrix of homotopic pairs: same label with LH<->RH, else the mirrored centroid."""
    n = atlas.n_nodes
    homo = np.zeros((n, n), dtype=bool)
    index = {lb: i for i, lb in enumerate(atlas.labels)}
    for i, lb in enumerate(atlas.labels):
        if hemi[i] != "L":
            continue
        j = index.get(lb.replace("_LH_", "_RH_"))
        if j is None or j == i:
            right = np.flatnonzero(hemi == "R")
            if right.size == 0:
                continue
            mirrored = cent[i] * np.array([-1.0, 1.0, 1.0])
            j = int(right[np.argmin(np.linalg.norm(cent[right] - mirrored, axis=1))])
        homo[i, j] = homo[j, i] = True
    return homo


def sc_template(
    atlas: Atlas, rng: np.random.Generator, density: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Group-level edge set and mean log-weights.

    Edge probability is logistic in Euclidean centroid distance (length scale 20 mm), lower
    between hemispheres except for homotopic pairs, with the intercept chosen by bisection so
    the expected density is ``density``. Log-weights fall with distance (25 mm) plus a
    Gaussian edge effect; homotopic edges are strong.

    Returns
    -------
    present : ndarray of bool (n, n)
        Symmetric template edge set.
    mu : ndarray (n, n)
        Mean log streamline weight per edge.
    """
    cent = _centroids(atlas)
    hemi = _hemispheres(atlas)
    dist = np.linalg.norm(cent[:, None] - cent[None, :], axis=-1)
    homo = _homotopic(atlas, hemi, cent)
    cross = hemi[:, None] != hemi[None, :]
    logit_rest = -dist / 20.0 - 2.5 * cross + 6.0 * homo
    iu = np.triu_indices(atlas.n_nodes, 1)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + logit_rest[iu])))) < density:
            lo = mid
        else:
            hi = mid
    prob = 1 / (1 + np.exp(-(lo + logit_rest)))
    upper = np.triu(rng.random(prob.shape) < prob, 1)
    present = upper | upper.T
    noise = np.triu(rng.normal(0.0, 0.8, prob.shape), 1)
    mu = np.log(500.0) - dist / 25.0 + 1.5 * homo + noise + noise.T
    return present, mu


def _choose_sc_parcels(
    present: np.ndarray, rng: np.random.Generator, k: int = SC_PLANTED_PARCELS
) -> tuple[list[int], list[tuple[int, int]]]:
    """``k`` parcels of above-median template degree and every template edge touching them."""
    degree = present.sum(axis=1)
    candidates = np.flatnonzero(degree > np.median(degree))
    parcels = sorted(int(i) for i in rng.choice(candidates, k, replace=False))
    touched = np.zeros(len(present), dtype=bool)
    touched[parcels] = True
    iu = np.triu_indices(len(present), 1)
    edges = [
        (int(i), int(j))
        for i, j in zip(*iu, strict=True)
        if present[i, j] and (touched[i] or touched[j])
    ]
    return parcels, edges


def simulate_sc_matrix(
    rng: np.random.Generator,
    present: np.ndarray,
    mu: np.ndarray,
    planted: list[tuple[int, int]],
    patient: bool,
    site: str,
) -> np.ndarray:
    """One subject's SIFT2-weighted streamline matrix.

    Template edges are kept with probability 0.92 (planted ones always), weights are
    ``exp(mu + N(0, 0.4))``; 1 % of other pairs get weak spurious streamlines. Patients' planted
    edges are scaled by ``SC_SCALE``; site B has a global 0.85 scale.
    """
    n = len(mu)
    keep = present & (rng.random((n, n)) < 0.92)
    spurious = ~present & (rng.random((n, n)) < 0.01)
    w = np.exp(mu + rng.normal(0.0, 0.4, (n, n)))
    w = np.where(keep, w, 0.0) + np.where(spurious, np.exp(rng.normal(0.0, 1.0, (n, n))), 0.0)
    for i, j in planted:
        w[i, j] = np.exp(mu[i, j] + rng.normal(0.0, 0.4)) * (SC_SCALE if patient else 1.0)
    w = np.triu(w, 1) * _SITE_SC[site]
    return np.round(w + w.T, 4)


def simulate_sc(root: Path, atlas: Atlas, participants: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Write QSIRecon-like connectivity TSVs; return the planted parcels and edges (names) and
    the density."""
    write_json(
        root / "dataset_description.json",
        {
            "Name": "brainfuse synthetic demo - QSIRecon-like connectivity",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "QSIRecon",
                    "Version": "synthetic",
                    "Description": "SYNTHETIC: written by brainfuse.demo in QSIRecon's output "
                    "format; not produced by QSIRecon.",
                },
                {"Name": "brainfuse.demo"},
            ],
            "SourceDatasets": [{"URL": "../../"}],
        },
    )
    rng = _rng(seed, _S_SC_GROUP)
    present, mu = sc_template(atlas, rng)
    parcels, planted = _choose_sc_parcels(present, rng)
    densities = []
    for s, row in enumerate(participants.itertuples()):
        sub = row.participant_id
        w = simulate_sc_matrix(
            _rng(seed, _S_SC_SUB, s), present, mu, planted, row.group == "patient", row.site
        )
        densities.append(np.mean(w[np.triu_indices(len(w), 1)] > 0))
        write_tsv(
            root / sub / "dwi" / f"{sub}_space-T1w_seg-{atlas.name}_desc-sift2_relmat.tsv",
            pd.DataFrame(w, columns=list(atlas.labels)),
        )
    return {
        "parcels": [atlas.labels[i] for i in parcels],
        "edges": [[atlas.labels[i], atlas.labels[j]] for i, j in planted],
        "density": round(float(np.mean(densities)), 4),
    }
