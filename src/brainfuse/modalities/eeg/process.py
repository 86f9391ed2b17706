"""EEG branch: BIDS EEG recordings to band-limited amplitude envelopes on parcels or channels.

This module runs the steps below in order; each lives in its own module: ``params`` (defaults
and checks), ``channels`` (names and types), ``recording`` (reading and montage matching),
``source`` (head model and inverse), ``spectral`` (filtering and envelopes), ``segment``.

Steps (:func:`process_eeg`)
---------------------------
1. **Read** EDF/BDF/BrainVision/EEGLAB with :func:`mne.io.read_raw`; a truncated or unreadable
   file raises :class:`~brainfuse.core.errors.InputError`.
2. **Type channels** from ``*_channels.tsv`` (``type``; ``status == bad`` marks bads) or else from
   their names: ECG/EOG/EMG/trigger/respiration channels, reference pairs (``A1-A2``) and bipolar
   derivations (``Fp1-F7``) are never used as EEG.
3. **Match names** to the montage after normalisation (``EEG Fp1-REF``, ``Fp1.``, ``FP1``, ``fp1``
   -> ``Fp1``); too low a match rate raises ``InputError``. Positions come from
   ``*_electrodes.tsv`` when given, else from the standard montage (``standard_1005`` is MNE's
   Colin27 10-05 layout, renamed ``colin27_1005`` in MNE 1.13), and are placed on the template
   head's scalp sphere (see :mod:`brainfuse.modalities.eeg.source`). Flat channels join the bads.
4. **Filter in the frequency domain.** The average-referenced recording is transformed once
   (``scipy.fft`` at a fast length, reflection padded); the band-pass (``l_freq``/``h_freq``,
   raised-cosine edges with MNE's default transition widths), notches, and every band filter are
   zero-phase gains on that one spectrum. Resampling to ``resample_hz`` is the same operation
   (bins above its Nyquist are never used), so it costs nothing.
5. **Sources** (``level: source``): the inverse kernel is collapsed into one weight vector per
   parcel (:func:`brainfuse.modalities.eeg.source.parcel_weights`), so parcel spectra are a matrix
   product
   of the channel spectrum; at ``level: sensor`` channels are the nodes (bad channels
   interpolated so that every recording of a montage has the same nodes).
6. **Envelopes.** For each band, the analytic signal is synthesised directly at a low complex
   baseband rate from the band's bins (Hilbert transform, demodulation and decimation in one
   inverse FFT). The envelope is the local RMS amplitude: the square root of the Hann-weighted mean
   power in windows of ``2 / envelope_sfreq`` s every ``1 / envelope_sfreq`` s -- an
   anti-aliased amplitude envelope that makes the pairwise leakage correction exact and cheap.
   With ``orthogonalise`` on, the node signals are symmetrically orthogonalised (Colclough et al.
   2015) before the envelope when their rank allows it; otherwise (e.g. 64 channels, 100
   parcels) the AEC is computed with pairwise orthogonalisation within each envelope window and
   the envelopes are left uncorrected (``qc["orthogonalisation"]`` records which). AEC is the
   Pearson correlation of the envelopes, band power the log10 mean power of the band-limited
   signal.

``envelope_sfreq`` defaults to 2 Hz: envelope correlations live below ~0.5 Hz (Hipp et al. 2012;
Colclough et al. 2015 downsample to 1 Hz), and a 200-sample MCSP window then spans 100 s, so a
5-minute resting recording gives 3 windows.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainfuse.core.atlas import Atlas
from brainfuse.core.errors import InputError
from brainfuse.modalities.eeg import source as eeg_source
from brainfuse.modalities.eeg.params import resolve_params
from brainfuse.modalities.eeg.recording import load_recording
from brainfuse.modalities.eeg.spectral import (
    envelopes_from_spectrum,
    single_threaded_blas,
    spectrum_for,
)

__all__ = ["EEGResult", "process_eeg"]


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class EEGResult:
    """Band-limited amplitude envelopes and their graphs for one EEG recording.

    Attributes
    ----------
    envelopes : ndarray of float32, shape (n_bands, n_nodes, n_times)
        Local RMS amplitude envelopes sampled at ``envelope_sfreq``.
    envelope_sfreq : float
    aec : ndarray of float32, shape (n_bands, n_nodes, n_nodes)
        Amplitude-envelope correlation (after orthogonalisation when enabled).
    band_power : ndarray of float32, shape (n_bands, n_nodes)
        log10 mean power of the band-limited signal (V^2 at sensor level, inverse units^2 at
        source level).
    bands : list of str
    node_names : list of str
        Atlas labels (source level, atlas order) or channel names (sensor level).
    level : str
        ``"source"`` or ``"sensor"``.
    qc : dict
        JSON-serialisable quality-control record.
    """

    envelopes: np.ndarray
    envelope_sfreq: float
    aec: np.ndarray
    band_power: np.ndarray
    bands: list[str]
    node_names: list[str]
    level: str
    qc: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Top level


def process_eeg(
    eeg_path: str | os.PathLike,
    atlas: Atlas | None,
    params: Mapping[str, Any] | None = None,
    channels_tsv: str | os.PathLike | None = None,
    electrodes_tsv: str | os.PathLike | None = None,
) -> EEGResult:
    """Band-limited amplitude envelopes, AEC graphs and band power of one EEG recording.

    Parameters
    ----------
    eeg_path : path
        BIDS EEG file (``.edf``, ``.bdf``, ``.vhdr``, ``.set``).
    atlas : Atlas or None
        Parcellation for ``level: source`` (nodes in its order); unused at sensor level.
    params : dict
        The config's ``eeg:`` section; missing keys take
        :func:`~brainfuse.modalities.eeg.params.default_eeg_params`.
    channels_tsv, electrodes_tsv : path, optional
        BIDS sidecars.

    Returns
    -------
    EEGResult

    Raises
    ------
    InputError
        The recording cannot be used (unreadable, truncated, too few matched channels, too short,
        sampled too slowly for the bands); the pipeline records it as excluded.
    ValueError
        Invalid parameters.

    Notes
    -----
    BLAS runs single-threaded inside this call (see ``single_threaded_blas``); run recordings in
    parallel (Snakemake jobs) rather than threads within one.
    """
    with single_threaded_blas():
        return _process_eeg(eeg_path, atlas, params, channels_tsv, electrodes_tsv)


def _process_eeg(
    eeg_path: str | os.PathLike,
    atlas: Atlas | None,
    params: Mapping[str, Any] | None,
    channels_tsv: str | os.PathLike | None,
    electrodes_tsv: str | os.PathLike | None,
) -> EEGResult:
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    p = resolve_params(params)
    if p["level"] == "source" and atlas is None:
        raise ValueError("eeg.level=source needs an atlas")
    rec = load_recording(eeg_path, p, channels_tsv, electrodes_tsv)
    qc = dict(rec.qc)
    sfreq = float(rec.raw.info["sfreq"])
    fe = p["envelope_sfreq"]
    working = sfreq if p["resample_hz"] is None else min(sfreq, p["resample_hz"])
    for name, (lo, hi) in p["bands"].items():
        if hi >= working / 2:
            raise InputError(
                rec.path,
                f"band {name} ({lo:g}-{hi:g} Hz) reaches the Nyquist frequency of "
                f"{working:g} Hz sampling",
            )
    n_env = int(math.floor(rec.raw.n_times * fe / sfreq + 1e-9))
    needed = p["window_length"] / fe
    if n_env < p["window_length"]:
        raise InputError(
            rec.path,
            f"recording lasts {rec.raw.n_times / sfreq:.1f} s; one window of "
            f"{p['window_length']} envelope samples at {fe:g} Hz needs {needed:g} s",
        )
    timing["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    if p["level"] == "sensor" and rec.bads:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.raw.interpolate_bads(
                reset_bads=True, origin=tuple(eeg_source.template_head().centre), verbose="error"
            )
        qc["interpolated"] = list(rec.bads)
        names = list(rec.eeg_names)
        data = rec.raw.get_data(picks=names).astype(np.float32)
    else:
        names = rec.good_names
        data = rec.data[[rec.eeg_names.index(n) for n in names]]
    data -= data.mean(axis=0, keepdims=True)  # average reference
    spec = spectrum_for(data, sfreq, p)
    del data
    timing["spectrum"] = time.perf_counter() - t
    qc.update(
        level=p["level"],
        n_used=len(names),
        working_sfreq=working,
        filter=(
            f"zero-phase FFT band-pass {p['l_freq']}-{p['h_freq']} Hz, notch {p['notch']}, "
            "raised-cosine transitions (MNE default widths), average reference"
        ),
    )

    weights = None
    if p["level"] == "source":
        t = time.perf_counter()
        if p["forward"]:
            model = eeg_source.load_forward(p["forward"], atlas)
        else:
            model = eeg_source.template_forward(
                rec.eeg_names,
                np.array([rec.positions[n] for n in rec.eeg_names]),
                atlas,
                spacing_mm=float(p["source_spacing_mm"]),
                cache_dir=p["cache_dir"],
            )
        cov = spec.covariance()
        kernel = eeg_source.inverse_kernel(
            model,
            names,
            p["inverse"],
            p["snr"],
            data_cov=cov,
            n_samples=rec.raw.n_times,
            cache_dir=p["cache_dir"],
        )
        weights = eeg_source.parcel_weights(
            kernel, model.node_of_source, model.n_nodes, cov, p["parcel_mode"]
        )
        node_names = list(atlas.labels)
        qc.update(
            inverse=p["inverse"],
            snr=p["snr"],
            noise_cov="ad hoc diagonal" if p["inverse"] != "LCMV" else "ad hoc (whitening)",
            parcel_mode=p["parcel_mode"],
            forward=model.description,
            **model.qc,
        )
        timing["inverse"] = time.perf_counter() - t
    else:
        node_names = list(names)

    t = time.perf_counter()
    # Average referencing removes one dimension.
    envelopes, aec, band_power, env_qc = envelopes_from_spectrum(spec, p, weights, len(names) - 1)
    timing["envelopes"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    qc.update(env_qc)
    qc.update(
        envelope_sfreq=fe,
        n_envelope_samples=int(envelopes.shape[2]),
        bands={k: list(v) for k, v in p["bands"].items()},
        timing_s={k: round(v, 3) for k, v in timing.items()},
    )
    return EEGResult(
        envelopes=envelopes,
        envelope_sfreq=fe,
        aec=aec,
        band_power=band_power,
        bands=list(p["bands"]),
        node_names=node_names,
        level=p["level"],
        qc=qc,
    )
