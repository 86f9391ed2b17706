"""Demo BOLD runs in fMRIPrep's output layout (MNI-space BOLD, brain mask, confounds).

Parcel signals are Gaussian noise band-limited to 0.01-0.1 Hz with a Yeo-7 network covariance
(patients: correlations among 10 planted parcels raised by ``delta_r``), spread to voxels with
per-voxel loadings plus AR(1) voxel noise, a global signal, CSF/WM signals, drift, a motion
artefact that is linear in the 24 motion regressors, spikes at high-FD volumes and a
non-steady-state first volume.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import fft, signal, stats

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import atomic_path, write_json, write_tsv
from brainfuse.demo.common import (
    BIDS_VERSION,
    S_FMRI_GROUP,
    S_FMRI_RUN,
    S_SITE,
    SITES,
    SPACE,
    TASK,
    map_subjects,
    seeded_rng,
)
from brainfuse.demo.confounds import (
    FD_RADIUS_MM,
    confounds_table,
    derivative,
    framewise_displacement,
    simulate_motion,
)
from brainfuse.demo.grid import BoldGrid, make_bold_grid
from brainfuse.demo.participants import AGE_CENTRE, AGE_DELTA_R, FMRI_DELTA_R, MOTION_DELTA_R

logger = logging.getLogger(__name__)


# Site effects: scanner differences that a harmonisation step should absorb. Multiplicative
# (intensity gain), noise and global-signal levels, plus ``fc_loading_sd``: each site adds a
# shared component with fixed per-parcel loadings v (drawn once per site, zero on the planted
# parcels), which shifts the correlation of parcels i, j by about v_i v_j - an additive site
# pattern in FC that survives denoising and that a linear classifier detects.
SITE_FMRI = {
    "siteA": {"noise_sd": 1.5, "global_sd": 0.35, "gain": 1.00, "fc_loading_sd": 0.2},
    "siteB": {"noise_sd": 2.0, "global_sd": 0.55, "gain": 1.15, "fc_loading_sd": 0.2},
    "siteC": {"noise_sd": 1.8, "global_sd": 0.45, "gain": 0.90, "fc_loading_sd": 0.2},
}

_NON_STEADY_GAIN = 1.3  # intensity of the first (non-steady-state) volume relative to the rest

# BOLD values are rounded to this: far below the voxel noise; gzip output shrinks by ~25 %.
_QUANTUM = 1.0 / 16.0


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


def site_loadings(n_nodes: int, exclude: list[int], seed: int) -> dict[str, np.ndarray]:
    """Per site, the parcel loadings of its shared FC component (zero mean, zero on ``exclude``).

    The loadings have zero mean over parcels so that global signal regression does not remove
    the component; the planted diagnosis parcels are left out so that the site pattern does not
    touch the planted edges.
    """
    out = {}
    for k, site in enumerate(SITES):
        v = seeded_rng(seed, S_SITE, k).normal(0.0, SITE_FMRI[site]["fc_loading_sd"], n_nodes)
        keep = np.ones(n_nodes, dtype=bool)
        keep[exclude] = False
        v[keep] -= v[keep].mean()
        v[~keep] = 0.0
        out[site] = v
    return out


def subject_correlation(
    c_group: np.ndarray,
    age_idx: list[int],
    motion_idx: list[int],
    age: float,
    motion_level: float,
    loadings: np.ndarray,
) -> np.ndarray:
    """The generating parcel correlation of one subject.

    The group's matrix, with the age block shifted by ``AGE_DELTA_R * (age - AGE_CENTRE)`` and
    the motion block by ``MOTION_DELTA_R * log(motion_level)``, then the site component
    ``v v^T`` added and the diagonal rescaled to one.
    """
    c = c_group.copy()
    for idx, delta in (
        (age_idx, AGE_DELTA_R * (age - AGE_CENTRE)),
        (motion_idx, MOTION_DELTA_R * float(np.log(motion_level))),
    ):
        block = np.ix_(idx, idx)
        c[block] = np.clip(c[block] + delta, -0.95, 0.95)
    np.fill_diagonal(c, 1.0)
    c = _nearest_correlation(c) + np.outer(loadings, loadings)
    d = np.sqrt(np.diag(c))
    return c / np.outer(d, d)


def _smooth_noise(rng: np.random.Generator, n: int, k: int, kernel: np.ndarray) -> np.ndarray:
    """(n, k) unit-variance Gaussian noise filtered along time by ``kernel``."""
    burn = len(kernel)
    x = signal.lfilter(kernel, [1.0], rng.standard_normal((n + burn, k)), axis=0)[burn:]
    return (x - x.mean(0)) / x.std(0)


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
    n = n_volumes
    site_par = SITE_FMRI[site]
    gm = grid.node >= 0
    n_vox = grid.node.size
    hrf = _hrf(tr)
    f32 = np.float32

    neural = parcel_signals(chol, rng, n, tr).astype(f32)
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
    mm[:, 3:] *= FD_RADIUS_MM  # artefact loadings are per mm for rotations too
    dmm = np.nan_to_num(derivative(mm))
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

    confounds, sidecar = confounds_table(bold, grid, params, fd, csf, wm, tr)
    return bold, confounds, {"sidecar": sidecar, "mean_fd": float(np.nanmean(fd[1:]))}


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


@dataclass(frozen=True)
class PopulationModel:
    """What every demo subject's fMRI is drawn from: the group correlation matrices (patients'
    planted edges raised), the age and motion parcels and each site's component loadings."""

    group: dict[str, np.ndarray]
    age_idx: list[int]
    motion_idx: list[int]
    site_loadings: dict[str, np.ndarray]

    def subject_cholesky(self, row: Any) -> np.ndarray:
        """Cholesky factor of one participant's generating correlation (a participants row:
        ``group``, ``age``, ``motion_level``, ``site``)."""
        return np.linalg.cholesky(
            subject_correlation(
                self.group[row.group],
                self.age_idx,
                self.motion_idx,
                float(row.age),
                float(row.motion_level),
                self.site_loadings[row.site],
            )
        )


def population_model(
    atlas: Atlas, parcels: list[str], confound_parcels: dict[str, list[str]], seed: int
) -> PopulationModel:
    """The demo's population model for ``seed`` (the study's seed: a corpus drawn from the same
    population uses it too)."""
    idx = [atlas.labels.index(p) for p in parcels]
    c_ctl = network_correlation(atlas, seeded_rng(seed, S_FMRI_GROUP))
    return PopulationModel(
        group={"control": c_ctl, "patient": _patient_correlation(c_ctl, idx, FMRI_DELTA_R)},
        age_idx=[atlas.labels.index(p) for p in confound_parcels["age"]],
        motion_idx=[atlas.labels.index(p) for p in confound_parcels["motion"]],
        site_loadings=site_loadings(atlas.n_nodes, idx, seed),
    )


def parcel_signals(
    chol: np.ndarray, rng: np.random.Generator, n_volumes: int, tr: float
) -> np.ndarray:
    """(n_volumes, n_nodes) unit-variance neural parcel signals with correlation ``chol chol^T``."""
    neural = _bold_band_noise(rng, n_volumes, chol.shape[0], tr) @ chol.T
    return neural / neural.std(0)


def _write_subject_fmri(
    item: tuple[int, SimpleNamespace],
    root: Path,
    grid: BoldGrid,
    population: PopulationModel,
    seed: int,
    n_volumes: int,
    tr: float,
) -> dict[str, float]:
    """Write one subject's runs (BOLD, sidecar, mask, confounds); return each run's mean FD."""
    s, row = item
    sub = row.participant_id
    chol = population.subject_cholesky(row)
    mask_u8 = grid.mask.astype(np.uint8)
    mean_fd = {}
    for run in row.runs:
        rng = seeded_rng(seed, S_FMRI_RUN, s, run)
        bold, conf, meta = simulate_bold_run(
            grid, chol, rng, n_volumes, tr, float(row.motion_level), row.site
        )
        func = root / sub / "func"
        stem = f"{sub}_task-{TASK}_run-{run}"
        # NIfTI stores voxels in Fortran order: nibabel then writes this array without a
        # transposing copy of every slice
        vol = np.zeros(grid.shape + (n_volumes,), dtype=np.float32, order="F")
        vol[grid.mask] = bold.T
        _save_nifti(func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz", vol, grid.affine, tr)
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
        mean_fd[str(run)] = round(meta["mean_fd"], 4)
    logger.debug("fMRI %s done", sub)
    return mean_fd


def simulate_fmri(
    root: Path,
    atlas: Atlas,
    participants: pd.DataFrame,
    parcels: list[str],
    confound_parcels: dict[str, list[str]],
    seed: int,
    n_volumes: int,
    tr: float,
    voxel_size: float,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Write the fMRIPrep-like derivative dataset under ``root``, subjects in ``n_jobs``
    processes.

    ``confound_parcels`` names the ``age`` and ``motion`` parcels (:func:`subject_correlation`).

    Returns
    -------
    dict
        ``mean_fd`` (per subject, per run), ``grid_shape``, ``delta_r_model`` (the mean
        patient-minus-control correlation over planted edges in the generating matrices) and
        ``site_delta_r_model`` (per site, the mean absolute correlation shift of its component)
        and ``site_loadings`` (per site, the component's loading of each parcel).
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
    population = population_model(atlas, parcels, confound_parcels, seed)
    c_ctl, c_pat = population.group["control"], population.group["patient"]
    idx = [atlas.labels.index(p) for p in parcels]
    iu = np.triu_indices(len(idx), 1)
    delta_model = float(np.mean((c_pat - c_ctl)[np.ix_(idx, idx)][iu]))
    loadings = population.site_loadings
    upper = np.triu_indices_from(c_ctl, 1)
    site_shift = {
        site: round(
            float(
                np.abs(subject_correlation(c_ctl, [], [], AGE_CENTRE, 1.0, v) - c_ctl)[upper].mean()
            ),
            4,
        )
        for site, v in loadings.items()
    }

    write_subject = functools.partial(
        _write_subject_fmri,
        root=root,
        grid=grid,
        population=population,
        seed=seed,
        n_volumes=n_volumes,
        tr=tr,
    )
    return {
        "mean_fd": map_subjects(write_subject, participants, n_jobs),
        "grid_shape": list(grid.shape),
        "delta_r_model": delta_model,
        "site_delta_r_model": site_shift,
        "site_loadings": {site: np.round(v, 4).tolist() for site, v in loadings.items()},
    }
