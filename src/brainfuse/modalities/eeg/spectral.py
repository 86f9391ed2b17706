"""Frequency-domain filtering of EEG and band-limited amplitude envelopes from one spectrum."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.fft

from brainfuse.modalities.eeg import source as eeg_source
from brainfuse.modalities.eeg.params import resolve_params

_PAD_S = 10.0  # reflection padding: several impulse-response lengths of the 1 Hz transitions


# ---------------------------------------------------------------------------------------------
# Frequency-domain filtering and envelopes


def _rise(freqs: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Raised-cosine gain: 0 below ``start``, 1 above ``stop``."""
    x = np.clip((freqs - start) / max(stop - start, 1e-12), 0.0, 1.0)
    return np.sin(np.pi / 2 * x) ** 2


def _bandpass(freqs: np.ndarray, lo: float | None, hi: float | None, nyq: float) -> np.ndarray:
    """Zero-phase band-pass gain with MNE's default ("auto") transition bandwidths."""
    gain = np.ones_like(freqs)
    if lo is not None:
        trans = min(max(0.25 * lo, 2.0), lo)
        gain *= _rise(freqs, lo - trans, lo)
    if hi is not None:
        trans = min(max(0.25 * hi, 2.0), nyq - hi)
        gain *= 1.0 - _rise(freqs, hi, hi + trans)
    return gain


def _notches(freqs: np.ndarray, notch: Iterable[float], nyq: float) -> np.ndarray:
    """Notch gains like MNE's defaults: stop band f/200 wide, 1 Hz transitions."""
    gain = np.ones_like(freqs)
    for f0 in notch:
        if f0 >= nyq:
            continue
        half = f0 / 400
        dist = np.abs(freqs - f0)
        gain *= _rise(dist, half, half + 1.0)
    return gain


def _next_smooth(n: int) -> int:
    """Smallest 2,3,5-smooth integer >= n (fast FFT length)."""
    return int(scipy.fft.next_fast_len(max(int(n), 1), real=False))


class _Spectrum:
    """One FFT of a (channels x samples) recording, kept up to the highest frequency in use.

    The padded length is a multiple of ``sfreq / envelope_sfreq`` and the padding a whole number
    of envelope periods, so that baseband signals synthesised from it land exactly on the
    envelope sample grid, with envelope sample 0 at the recording's first sample.
    """

    def __init__(
        self,
        data: np.ndarray,
        sfreq: float,
        envelope_sfreq: float,
        f_max: float,
        broadband: tuple[float | None, float | None, list[float], float],
    ):
        n_ch, n = data.shape
        ratio = Fraction(sfreq / envelope_sfreq).limit_denominator(10_000)
        if abs(float(ratio) - sfreq / envelope_sfreq) > 1e-9 * sfreq / envelope_sfreq:
            raise ValueError(f"sfreq {sfreq} / envelope_sfreq {envelope_sfreq} is not rational")
        a, b = ratio.numerator, ratio.denominator
        pad = a * math.ceil(max(_PAD_S, 2.0 / envelope_sfreq) * sfreq / a)
        q = _next_smooth(math.ceil((n + 2 * pad) / a))
        self.n_fft = a * q
        self.sfreq = sfreq
        self.envelope_sfreq = envelope_sfreq
        self.n_samples = n
        self.env_period = q * b  # envelope samples over the padded length
        self.env_start = (pad // a) * b  # envelope index of the first data sample
        self.n_env = int(math.floor(n * envelope_sfreq / sfreq + 1e-9))
        self.df = sfreq / self.n_fft
        n_bins = min(self.n_fft // 2, int(math.ceil(f_max / self.df)) + 1)
        self.freqs = np.arange(n_bins) * self.df
        l_freq, h_freq, notch, nyq = broadband
        self.broadband = _bandpass(self.freqs, l_freq, h_freq, nyq) * _notches(
            self.freqs, notch, nyq
        )
        self.nyq = nyq
        # Single precision: EEG files hold 16/24-bit samples, and float32 FFTs are ~4x faster.
        self.coefs = np.empty((n_ch, n_bins), np.complex64)
        chunk = max(1, 2**23 // self.n_fft)  # bound the padded copy to ~32 MB
        for start in range(0, n_ch, chunk):
            block = np.asarray(data[start : start + chunk], np.float32)
            block = block - block.mean(axis=1, keepdims=True)
            padded = _reflect_pad(block, pad, self.n_fft - n - pad)
            self.coefs[start : start + chunk] = scipy.fft.rfft(padded, axis=1)[:, :n_bins]
        self.coefs *= self.broadband.astype(np.float32)

    def covariance(self) -> np.ndarray:
        """Covariance of the band-passed channels (Parseval over the padded length)."""
        weights = np.full(self.coefs.shape[1], np.sqrt(2.0), np.float32)
        weights[0] = 1.0
        x = self.coefs * weights
        # Re(X X^H) as a real product: numpy's complex conjugate-transpose product avoids BLAS.
        stacked = np.concatenate([x.real, x.imag], axis=1)
        return (stacked @ stacked.T).astype(np.float64) / float(self.n_fft) ** 2

    def band_gain(self, lo: float, hi: float) -> np.ndarray:
        return _bandpass(self.freqs, lo, hi, self.nyq)

    def analytic(
        self, lo: float, hi: float, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Complex baseband analytic signal of one band around the envelope grid.

        Parameters
        ----------
        lo, hi : float
            Band edges (Hz).
        weights : ndarray, shape (n_nodes, n_channels), optional
            Channel-to-node map.

        Returns
        -------
        signal : ndarray of complex64, shape (n_nodes, (n_env + 1) * k)
            Starts half an envelope window (``k`` samples) before the first data sample.
        k : int
            Baseband samples per envelope sample.
        """
        gain = self.band_gain(lo, hi)
        active = np.flatnonzero(gain * self.broadband > 0)
        if not len(active):
            raise ValueError(f"band {lo}-{hi} Hz has no frequency content after filtering")
        k0, k1 = int(active[0]), int(active[-1]) + 1
        width = (k1 - k0) * self.df
        # Products of two such signals span +-width; above width + envelope_sfreq (the Hann
        # window's main lobe) their windowed sums are free of aliasing.
        k = _next_smooth(math.ceil(width / self.envelope_sfreq) + 1)
        n_b = k * self.env_period
        spec = self.coefs[:, k0:k1] * gain[k0:k1].astype(np.float32)
        # A real matrix times interleaved (re, im) pairs is one real product.
        mixed = spec.view(np.float32)
        if weights is not None:
            mixed = np.asarray(weights, mixed.dtype) @ mixed
        buf = np.zeros((mixed.shape[0], n_b), np.complex64)
        # Analytic signal = 2 x positive frequencies; ifft's 1/n_b -> 1/n_fft of the full grid.
        buf[:, : k1 - k0] = mixed.view(np.complex64) * np.float32(2.0 * n_b / self.n_fft)
        signal = scipy.fft.ifft(buf, axis=1, overwrite_x=True)
        start = (self.env_start - 1) * k
        return signal[:, start : start + (self.n_env + 1) * k], k


def _reflect_pad(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """Pad by mirror reflection (no edge repeat) as far as the data allow, zeros beyond."""
    n = x.shape[1]
    out = np.zeros((x.shape[0], left + n + right), x.dtype)
    out[:, left : left + n] = x
    m = min(left, n - 1)
    if m > 0:
        out[:, left - m : left] = x[:, 1 : m + 1][:, ::-1]
    m = min(right, n - 1)
    if m > 0:
        out[:, left + n : left + n + m] = x[:, n - 1 - m : n - 1][:, ::-1]
    return out


def _local_power(signal: np.ndarray, k: int) -> np.ndarray:
    """Hann-weighted mean power in windows of 2k samples every k samples: (nodes, n_env)."""
    n_nodes, length = signal.shape
    power = (signal.real**2 + signal.imag**2).reshape(n_nodes, length // k, k)
    rise = (power @ eeg_source.hann_half_weights(k).astype(np.float32)).astype(np.float64)
    total = power.sum(axis=2, dtype=np.float64)
    return (rise[:, :-1] + total[:, 1:] - rise[:, 1:]) / k


def _correlation(env: np.ndarray) -> np.ndarray:
    centred = env - env.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.sum(centred**2, axis=1))
    norm[norm == 0] = np.inf  # a constant envelope correlates with nothing
    corr = (centred @ centred.T) / np.outer(norm, norm)
    np.fill_diagonal(corr, 1.0)
    return corr


def envelopes_from_spectrum(
    spec: _Spectrum, p: Mapping[str, Any], weights: np.ndarray | None, max_rank: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    bands = p["bands"]
    n_nodes = spec.coefs.shape[0] if weights is None else weights.shape[0]
    envelopes = np.empty((len(bands), n_nodes, spec.n_env), np.float32)
    aec = np.empty((len(bands), n_nodes, n_nodes), np.float32)
    power = np.empty((len(bands), n_nodes), np.float32)
    mode = p["orthogonalise"]
    qc: dict[str, Any] = {"orthogonalisation": mode}
    # Symmetric orthogonalisation is only possible if the data can have rank >= n_nodes.
    symmetric = mode in ("auto", "symmetric") and (max_rank is None or max_rank >= n_nodes)
    for b, (lo, hi) in enumerate(bands.values()):
        signal, k = spec.analytic(lo, hi, weights)
        local = None
        rank = max_rank
        if symmetric:
            # Re(Y Y^H) over the recording (not its padding), as one real float64 product.
            data = signal[:, k : k + spec.n_env * k]
            stacked = np.concatenate([data.real, data.imag], axis=1).astype(np.float64)
            gram = stacked @ stacked.T
            rank = eeg_source.data_rank(gram)
        if symmetric and rank >= n_nodes:
            transform = eeg_source.symmetric_orthogonalisation_matrix(gram)
            mixed = signal.view(np.float32).reshape(n_nodes, -1)
            signal = (transform.astype(np.float32) @ mixed).view(np.complex64)
            qc["orthogonalisation"] = "symmetric"
        elif mode != "none":
            aec[b] = eeg_source.pairwise_orthogonalised_aec(signal, k, spec.n_env)
            local = _local_power(signal, k)
            why = "" if mode == "pairwise" else f": data rank {rank} < {n_nodes} nodes"
            qc["orthogonalisation"] = f"pairwise, windowed (AEC only; envelopes uncorrected){why}"
        if local is None:
            local = _local_power(signal, k)
            aec[b] = _correlation(np.sqrt(local))
        envelopes[b] = np.sqrt(local)
        # Mean |analytic|^2 is twice the mean square of the real band-limited signal.
        power[b] = np.log10(np.maximum(local.mean(axis=1) / 2.0, np.finfo(float).tiny))
    return envelopes, aec, power, qc


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread: the many small products here gain nothing from threads, and on a
    busy machine (or beside other Snakemake jobs) OpenBLAS's spinning threads slow them ~20x."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, run as configured
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def spectrum_for(data: np.ndarray, sfreq: float, p: Mapping[str, Any]) -> _Spectrum:
    working = sfreq if p["resample_hz"] is None else min(sfreq, p["resample_hz"])
    nyq = working / 2.0
    h_freq = p["h_freq"] if p["h_freq"] is not None and p["h_freq"] < nyq else None
    tops = [hi + min(max(0.25 * hi, 2.0), nyq - hi) for _, hi in p["bands"].values()]
    if h_freq is not None:
        tops.append(h_freq + min(max(0.25 * h_freq, 2.0), nyq - h_freq))
    return _Spectrum(
        data,
        sfreq,
        p["envelope_sfreq"],
        min(max(tops), nyq),
        (p["l_freq"], h_freq, p["notch"], nyq),
    )


def band_envelopes(
    data: np.ndarray,
    sfreq: float,
    params: Mapping[str, Any] | None = None,
    weights: np.ndarray | None = None,
    max_rank: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Envelopes, AEC and log band power of (already referenced) signals.

    Parameters
    ----------
    data : ndarray, shape (n_signals, n_times)
    sfreq : float
    params : dict, optional
        EEG parameters (filters, bands, ``envelope_sfreq``, ``orthogonalise``).
    weights : ndarray, shape (n_nodes, n_signals), optional
        Linear map from signals to nodes (e.g. parcel weights); identity when omitted.
    max_rank : int, optional
        Known upper bound on the data rank (e.g. channels - 1 after average referencing); when
        below the number of nodes, orthogonalisation goes straight to pairwise.

    Returns
    -------
    envelopes : float32 (n_bands, n_nodes, n_env)
    aec : float32 (n_bands, n_nodes, n_nodes)
    band_power : float32 (n_bands, n_nodes)
    qc : dict
    """
    p = resolve_params(params)
    with single_threaded_blas():
        spec = spectrum_for(np.asarray(data, float), sfreq, p)
        return envelopes_from_spectrum(spec, p, weights, max_rank)
