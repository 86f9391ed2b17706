"""Demo fMRI confounds: head motion, framewise displacement, DVARS, aCompCor and the fMRIPrep
confounds table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from brainfuse.demo.grid import BoldGrid

FD_RADIUS_MM = 50.0  # Power et al. (2012): rotations to mm on a 50 mm sphere

_HIGHPASS_S = 128.0  # fMRIPrep's cosine basis cut-off

_N_ACOMPCOR = 6


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
    params[:, 3:] /= FD_RADIUS_MM
    return params


def framewise_displacement(params: np.ndarray) -> np.ndarray:
    """Power's FD (mm); the first value is NaN as in fMRIPrep."""
    d = np.abs(np.diff(params, axis=0))
    fd = d[:, :3].sum(1) + FD_RADIUS_MM * d[:, 3:].sum(1)
    return np.concatenate([[np.nan], fd])


def cosine_basis(n: int, tr: float, period_cut: float = _HIGHPASS_S) -> np.ndarray:
    """fMRIPrep's DCT high-pass regressors (nipype ``cosine_drift`` without the constant)."""
    order = int(np.floor(2 * n * tr / period_cut))
    t = np.arange(n)
    cols = [np.sqrt(2.0 / n) * np.cos(np.pi / n * (t + 0.5) * k) for k in range(1, order)]
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


def derivative(x: np.ndarray) -> np.ndarray:
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
    d = derivative(x)
    return {
        name: x,
        f"{name}_derivative1": d,
        f"{name}_power2": x**2,
        f"{name}_derivative1_power2": d**2,
    }


def confounds_table(
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
