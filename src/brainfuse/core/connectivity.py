"""Connectivity and sequence features from parcel time series.

Everything here is per sample. Measures fitted on a group (the tangent-space reference) live in the
training step, so that they only ever see training-fold subjects.
"""

from __future__ import annotations

import numpy as np


def _valid_columns(x: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(x), axis=0) & (np.nanstd(x, axis=0) > 0)


def _embed(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = len(valid)
    out = np.full((n, n), np.nan, dtype=np.float32)
    out[np.ix_(valid, valid)] = values
    return out


def pearson(timeseries: np.ndarray) -> np.ndarray:
    """Pearson correlation (N, N) of a (T, N) array; NaN rows/columns for invalid parcels."""
    x = np.asarray(timeseries, dtype=np.float64)
    valid = _valid_columns(x)
    if valid.sum() < 2:
        return _embed(np.zeros((0, 0)), np.zeros(x.shape[1], bool))
    return _embed(np.corrcoef(x[:, valid], rowvar=False), valid)


def ledoit_wolf_correlation(timeseries: np.ndarray) -> np.ndarray:
    """Correlation from the Ledoit-Wolf shrunk covariance: stable when T is not >> N."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(timeseries, dtype=np.float64)
    valid = _valid_columns(x)
    cov = LedoitWolf().fit(x[:, valid]).covariance_
    d = np.sqrt(np.diag(cov))
    return _embed(cov / np.outer(d, d), valid)


def partial_correlation(timeseries: np.ndarray) -> np.ndarray:
    """Partial correlation from the Ledoit-Wolf precision matrix (unit diagonal)."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(timeseries, dtype=np.float64)
    valid = _valid_columns(x)
    precision = LedoitWolf().fit(x[:, valid]).precision_
    d = np.sqrt(np.diag(precision))
    partial = -precision / np.outer(d, d)
    np.fill_diagonal(partial, 1.0)
    return _embed(partial, valid)


def sliding_window_fc(timeseries: np.ndarray, window: int, step: int) -> np.ndarray:
    """Dynamic FC: Pearson upper triangles of sliding windows, shape (n_windows, N*(N-1)/2)."""
    x = np.asarray(timeseries, dtype=np.float64)
    n_t, n = x.shape
    if n_t < window:
        raise ValueError(f"time series of {n_t} points is shorter than the window ({window})")
    iu = np.triu_indices(n, k=1)
    starts = range(0, n_t - window + 1, step)
    return np.stack([pearson(x[s : s + window])[iu] for s in starts]).astype(np.float32)


def fixed_length(timeseries: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """(N, length) sequence: centre crop when longer, zero-pad at the end when shorter.

    Returns the sequence and the number of real (unpadded) time points. Cropping the centre keeps
    the part of a run furthest from scanner start-up and the end of the session.
    """
    x = np.nan_to_num(np.asarray(timeseries, dtype=np.float32).T)
    n_t = x.shape[1]
    if n_t >= length:
        start = (n_t - length) // 2
        return x[:, start : start + length], length
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    out[:, :n_t] = x
    return out, n_t


def amplitude_spectrum(sequence: np.ndarray) -> np.ndarray:
    """Frequency-domain sequence: |rFFT| along time of a z-scored (N, L) sequence, (N, L//2 + 1)."""
    x = np.asarray(sequence, dtype=np.float64)
    sd = x.std(axis=-1, keepdims=True)
    z = (x - x.mean(axis=-1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return np.abs(np.fft.rfft(z, axis=-1)).astype(np.float32) / np.sqrt(x.shape[-1])


def temporal_snr(timeseries: np.ndarray) -> np.ndarray:
    """Mean over standard deviation of each parcel's (raw, undenoised) signal."""
    x = np.asarray(timeseries, dtype=np.float64)
    sd = x.std(axis=0)
    return np.where(sd > 0, x.mean(axis=0) / np.where(sd > 0, sd, 1), np.nan)


def upper_triangle(matrices: np.ndarray, fisher: bool = True) -> np.ndarray:
    """Vectorise (B, N, N) symmetric matrices; NaN (masked parcels) become 0 after Fisher z."""
    n = matrices.shape[-1]
    iu = np.triu_indices(n, k=1)
    vec = matrices[:, iu[0], iu[1]].astype(np.float64)
    if fisher:
        vec = np.arctanh(np.clip(vec, -0.999999, 0.999999))
    return np.nan_to_num(vec, nan=0.0)
