"""fMRI denoising of parcel time series and run-level QC.

Parcellation (a mean over voxels) and every denoising step (detrending, confound regression,
band-pass filtering) are linear in the voxel signals, so denoising the parcel means gives exactly
the parcel means of the denoised voxels, at a fraction of the cost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.connectivity import temporal_snr
from brainfuse.core.errors import InputError

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
COMPCOR_COMPONENTS = 5


def _expand(columns: list[str]) -> list[str]:
    """A column with its derivative, power and derivative power (fMRIPrep's 4x expansion)."""
    out = []
    for c in columns:
        out += [c, f"{c}_derivative1", f"{c}_power2", f"{c}_derivative1_power2"]
    return out


def confound_columns(
    strategy: str, available: list[str], custom: list[str] | None = None
) -> list[str]:
    """Confound columns of a named strategy, following nilearn's ``load_confounds`` and XCP-D.

    ``24P``: 6 motion parameters with derivatives and squares; ``36P``: 24P plus CSF, white matter
    and global signal with the same expansions; ``acompcor``: 12 motion terms (parameters and
    derivatives) plus the first 5 anatomical CompCor components; ``aroma``: the noise ICA components
    fMRIPrep writes (``aroma_motion_*``) plus CSF and white matter; ``custom``: the listed columns.
    """
    if strategy == "24P":
        wanted = _expand(MOTION)
    elif strategy == "36P":
        wanted = _expand(MOTION) + _expand(["csf", "white_matter", "global_signal"])
    elif strategy == "acompcor":
        compcor = sorted(c for c in available if re.fullmatch(r"a_comp_cor_\d+", c))
        wanted = MOTION + [f"{m}_derivative1" for m in MOTION] + compcor[:COMPCOR_COMPONENTS]
        if not compcor:
            raise KeyError("a_comp_cor_*")
    elif strategy == "aroma":
        aroma = sorted(c for c in available if c.startswith("aroma_motion_"))
        if not aroma:
            raise KeyError("aroma_motion_*")
        wanted = aroma + ["csf", "white_matter"]
    elif strategy == "custom":
        wanted = list(custom or [])
    else:
        raise ValueError(f"unknown confound strategy {strategy!r}")
    missing = [c for c in wanted if c not in available]
    if missing:
        raise KeyError(f"{len(missing)} columns, e.g. {', '.join(missing[:8])}")
    return wanted


@dataclass
class DenoiseResult:
    """Denoised parcel signals of one run and the facts QC records about it."""

    timeseries: np.ndarray  # (T_kept, N) float32
    kept: np.ndarray  # bool (T,), volumes kept after dummy removal and censoring
    qc: dict = field(default_factory=dict)


def read_confounds(path: str | Path, n_volumes: int) -> pd.DataFrame:
    """Read an fMRIPrep confounds TSV and check it matches the run's length."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "confounds file is missing (expected beside the preprocessed BOLD)")
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except Exception as err:  # pandas raises several parser errors; the reason is what matters
        raise InputError(path, f"cannot be read as a TSV ({err})") from err
    if len(table) != n_volumes:
        raise InputError(path, f"has {len(table)} rows but the BOLD run has {n_volumes} volumes")
    return table


def dummy_volumes(confounds: pd.DataFrame, dummy_scans: int | str) -> np.ndarray:
    """Boolean mask of non-steady-state volumes to drop."""
    n = len(confounds)
    drop = np.zeros(n, dtype=bool)
    if dummy_scans == "auto":
        for col in confounds.columns:
            if col.startswith("non_steady_state_outlier"):
                drop |= confounds[col].fillna(0).to_numpy() > 0
    else:
        drop[: int(dummy_scans)] = True
    return drop


def denoise(
    timeseries: np.ndarray,
    confounds: pd.DataFrame,
    tr: float,
    params: dict,
    confounds_path: str | Path = "confounds",
) -> DenoiseResult:
    """Remove dummy volumes, censor high-motion volumes, regress confounds, detrend and band-pass.

    Censoring uses nilearn's ``sample_mask``: censored volumes are left out of the confound fit and
    interpolated (cubic spline) before the Butterworth band-pass, then removed, so the filter never
    smears a motion spike into the kept volumes. A run with less than ``min_clean_seconds`` of kept
    data raises :class:`InputError` with the reason.
    """
    from nilearn.signal import clean

    n_volumes = timeseries.shape[0]
    dummies = dummy_volumes(confounds, params["dummy_scans"])
    fd = confounds.get("framewise_displacement", pd.Series(np.zeros(n_volumes))).fillna(0)
    fd = fd.to_numpy(dtype=float)
    censored = np.zeros(n_volumes, dtype=bool)
    if params["fd_threshold"] is not None:
        censored = (fd > params["fd_threshold"]) & ~dummies
    kept = ~dummies & ~censored
    clean_seconds = kept.sum() * tr
    qc = {
        "n_volumes": int(n_volumes),
        "n_dummy": int(dummies.sum()),
        "n_censored": int(censored.sum()),
        "censored_fraction": float(censored.sum() / max(1, (~dummies).sum())),
        "mean_fd": float(fd[~dummies].mean()),
        "max_fd": float(fd[~dummies].max()),
        "clean_seconds": float(clean_seconds),
    }
    if clean_seconds < params["min_clean_seconds"]:
        raise InputError(
            confounds_path,
            f"only {clean_seconds:.0f} s of clean data after censoring FD > "
            f"{params['fd_threshold']} mm (minimum {params['min_clean_seconds']} s)",
        )
    try:
        columns = confound_columns(
            params["strategy"], list(confounds.columns), params["custom_columns"]
        )
    except KeyError as err:
        raise InputError(
            confounds_path, f"strategy {params['strategy']!r} needs missing columns: {err}"
        ) from err
    design = confounds[columns].to_numpy(dtype=float)
    # Derivative columns start with n/a; fMRIPrep convention is to treat the first value as 0.
    design = np.nan_to_num(design[~dummies], nan=0.0)
    signals = timeseries[~dummies].astype(np.float64)
    finite_nodes = np.all(np.isfinite(signals), axis=0)
    cleaned = np.full((int(kept.sum()), signals.shape[1]), np.nan)
    sample_mask = np.flatnonzero(kept[~dummies])
    if finite_nodes.any():
        out = clean(
            signals[:, finite_nodes],
            t_r=tr,
            confounds=design if design.size else None,
            sample_mask=sample_mask,
            detrend=params["detrend"],
            standardize=None,
            high_pass=params["high_pass"],
            low_pass=params["low_pass"],
            filter="butterworth",
        )
        cleaned[:, finite_nodes] = out
    raw = signals[kept[~dummies]]
    qc["tsnr_mean"] = float(np.nanmean(temporal_snr(raw[:, finite_nodes])))
    qc["n_confounds"] = len(columns)
    qc["n_kept"] = int(kept.sum())
    return DenoiseResult(timeseries=cleaned.astype(np.float32), kept=kept, qc=qc)


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher z-transform with the diagonal (r = 1) set to 0."""
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    idx = np.arange(z.shape[-1])
    z[..., idx, idx] = 0.0
    return z


@dataclass(frozen=True)
class RepetitionTime:
    """The TR a run is denoised with, which file gave it, and what QC should say about it."""

    seconds: float
    source: str  # "sidecar" or "header"
    warning: str = ""  # set when the sidecar is missing or disagrees with the header


def repetition_time(
    sidecar: str | Path,
    header_tr: float | None,
    *,
    bold: str | Path,
    tr_source: str,
    tolerance: float,
) -> RepetitionTime:
    """TR of a BOLD run from its BIDS sidecar and its NIfTI header.

    Parameters
    ----------
    sidecar : str or Path
        The run's JSON sidecar; when it is missing the header's TR is used and the warning says so.
    header_tr : float or None
        TR in seconds from the NIfTI header of ``bold`` (NaN, 0 or None when it has none).
    bold : str or Path
        The BOLD file, named in reasons about its header.
    tr_source : {"exclude", "sidecar", "header"}
        What to do when both give a TR and they differ by more than ``tolerance``: refuse the
        run (raise :class:`InputError` naming both values and files), or use the one named and
        record the disagreement as a warning.
    tolerance : float
        Largest difference in seconds that still counts as agreement (headers store float32).

    Raises
    ------
    InputError
        The sidecar has no usable ``RepetitionTime``, neither file gives a TR, the two disagree
        under ``tr_source="exclude"``, or the TR used is outside 0.1-10 s.
    """
    sidecar, bold = Path(sidecar), Path(bold)
    header = float(header_tr) if header_tr and np.isfinite(header_tr) and header_tr > 0 else None
    if not sidecar.exists():
        if header is None:
            raise InputError(sidecar, "sidecar missing and the NIfTI header has no TR")
        chosen = RepetitionTime(
            header, "header", f"{sidecar.name} is missing; TR {header:g} s from the NIfTI header"
        )
    else:
        try:
            side = float(json.loads(sidecar.read_text())["RepetitionTime"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise InputError(sidecar, f"no usable RepetitionTime ({err})") from err
        chosen = RepetitionTime(side, "sidecar")
        if header is not None and abs(side - header) > tolerance:
            disagreement = (
                f"RepetitionTime {side:g} s in {sidecar.name} disagrees with {header:g} s in the "
                f"NIfTI header of {bold.name} (fmri.tr_tolerance {tolerance:g} s)"
            )
            if tr_source == "exclude":
                raise InputError(
                    sidecar, f"{disagreement}; set fmri.tr_source to sidecar or header to use one"
                )
            used = side if tr_source == "sidecar" else header
            chosen = RepetitionTime(
                used, tr_source, f"{disagreement}; used the {tr_source} ({used:g} s)"
            )
    if not 0.1 <= chosen.seconds <= 10:
        at_fault = sidecar if chosen.source == "sidecar" else bold
        raise InputError(at_fault, f"RepetitionTime {chosen.seconds:g} s is outside 0.1-10 s")
    return chosen
