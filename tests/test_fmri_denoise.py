"""Denoising parcel signals: confound strategies, censoring, exclusion for too little clean data."""

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.connectivity import pearson as pearson_fc
from brainfuse.core.errors import InputError
from brainfuse.modalities.fmri.denoise import MOTION, confound_columns, denoise, fisher_z

PARAMS = {
    "strategy": "24P",
    "detrend": True,
    "high_pass": 0.01,
    "low_pass": 0.1,
    "fd_threshold": 0.5,
    "min_clean_seconds": 100,
    "dummy_scans": "auto",
    "custom_columns": [],
}


def _confounds(n, rng, fd_spikes=()):
    motion = np.cumsum(rng.normal(0, 0.02, size=(n, 6)), axis=0)
    table = {}
    for i, name in enumerate(MOTION):
        d = np.r_[np.nan, np.diff(motion[:, i])]
        table |= {
            name: motion[:, i],
            f"{name}_derivative1": d,
            f"{name}_power2": motion[:, i] ** 2,
            f"{name}_derivative1_power2": d**2,
        }
    fd = np.r_[np.nan, np.abs(np.diff(motion, axis=0)).sum(axis=1)]
    fd[list(fd_spikes)] = 2.0
    table["framewise_displacement"] = fd
    outlier = np.zeros(n)
    outlier[0] = 1
    table["non_steady_state_outlier00"] = outlier
    return pd.DataFrame(table), motion


def test_motion_artefact_is_removed():
    rng = np.random.default_rng(0)
    n, tr = 200, 2.0
    confounds, motion = _confounds(n, rng)
    neural = rng.normal(size=(n, 4))
    artefact = motion @ rng.normal(0, 5, size=(6, 4))
    shared = np.repeat(motion[:, :1] * 20, 4, axis=1)  # makes every pair correlate through motion
    raw = neural + artefact + shared
    result = denoise(raw.astype(np.float32), confounds, tr, PARAMS)
    assert result.qc["n_dummy"] == 1
    raw_fc = pearson_fc(raw[1:])
    clean_fc = pearson_fc(result.timeseries)
    off = ~np.eye(4, dtype=bool)
    assert np.abs(raw_fc[off]).mean() > 0.5
    assert np.abs(clean_fc[off]).mean() < 0.2


def test_censoring_and_exclusion():
    rng = np.random.default_rng(1)
    confounds, _ = _confounds(120, rng, fd_spikes=range(10, 40))
    signals = rng.normal(size=(120, 3)).astype(np.float32)
    result = denoise(signals, confounds, 2.0, PARAMS)
    assert result.qc["n_censored"] == 30 and result.timeseries.shape == (89, 3)
    with pytest.raises(InputError, match="only 178 s of clean data"):
        denoise(signals, confounds, 2.0, {**PARAMS, "min_clean_seconds": 240}, "c.tsv")


def test_nan_parcel_stays_nan():
    rng = np.random.default_rng(2)
    confounds, _ = _confounds(100, rng)
    signals = rng.normal(size=(100, 3)).astype(np.float32)
    signals[:, 1] = np.nan
    result = denoise(signals, confounds, 2.0, {**PARAMS, "min_clean_seconds": 0})
    assert (
        np.isnan(result.timeseries[:, 1]).all() and np.isfinite(result.timeseries[:, [0, 2]]).all()
    )
    fc = pearson_fc(result.timeseries)
    assert np.isnan(fc[1]).all() and fc[0, 0] == pytest.approx(1)


def test_strategies_and_missing_columns():
    cols = [*MOTION, "csf", "white_matter", "a_comp_cor_00", "a_comp_cor_01"]
    assert confound_columns("acompcor", cols + [f"{m}_derivative1" for m in MOTION])[-2:] == [
        "a_comp_cor_00",
        "a_comp_cor_01",
    ]
    from brainfuse.modalities.fmri.denoise import _expand

    with pytest.raises(KeyError, match="global_signal"):
        confound_columns("36P", _expand([*MOTION, "csf", "white_matter"]))
    assert confound_columns("custom", cols, ["csf"]) == ["csf"]


def test_missing_confound_columns_give_input_error():
    rng = np.random.default_rng(3)
    confounds, _ = _confounds(100, rng)
    with pytest.raises(InputError, match="36P"):
        denoise(
            rng.normal(size=(100, 2)).astype(np.float32),
            confounds,
            2.0,
            {**PARAMS, "strategy": "36P", "min_clean_seconds": 0},
            "c.tsv",
        )


def test_fisher_z_diagonal():
    z = fisher_z(np.array([[1.0, 0.5], [0.5, 1.0]]))
    assert z[0, 0] == 0 and z[0, 1] == pytest.approx(np.arctanh(0.5))
