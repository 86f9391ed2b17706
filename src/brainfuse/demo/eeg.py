"""Demo EEG: a raw BIDS EEG dataset (EDF and sidecars) through an MNE forward model.

100 parcel sources carry band-limited oscillations whose amplitude envelopes are slow and
network-correlated, projected to 32 10-20 electrodes by an MNE three-shell sphere-model forward
solution; patients have more alpha in 6 parietal parcels.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from scipy import fft, signal, sparse

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import atomic_path, write_json, write_tsv
from brainfuse.demo.bold import network_correlation
from brainfuse.demo.common import (
    S_EEG_GROUP,
    S_EEG_SUB,
    TASK,
    map_subjects,
    parcel_centroids,
    seeded_rng,
)
from brainfuse.demo.participants import EEG_ALPHA_RATIO

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

SITE_EEG = {
    "siteA": {"noise_uv": 1.5, "line_uv": 1.0},
    "siteB": {"noise_uv": 2.5, "line_uv": 3.0},
    "siteC": {"noise_uv": 2.0, "line_uv": 0.5},
}


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
        mne.transforms.invert_transform(head_to_mri), parcel_centroids(atlas) / 1000.0
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
    cent = parcel_centroids(atlas)
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
    site_par = SITE_EEG[site]
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
    """The BIDS sidecars of one EEG recording: ``eeg.json``, ``channels.tsv``, electrodes."""
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


def _write_subject_eeg(
    item: tuple[int, SimpleNamespace],
    root: Path,
    seed: int,
    leadfield: np.ndarray,
    electrodes: np.ndarray,
    amplitudes: dict[str, np.ndarray],
    env_chol: np.ndarray,
    n_times: int,
    sfreq: float,
    seconds: float,
    source_scale: float,
    ch_names: list[str],
) -> float:
    """Write one subject's EDF recording and sidecars; return its individual alpha frequency."""
    import mne

    s, row = item
    data, iaf = simulate_eeg_recording(
        seeded_rng(seed, S_EEG_SUB, s),
        leadfield,
        electrodes,
        amplitudes[row.group],
        env_chol,
        n_times,
        sfreq,
        row.site,
        source_scale,
    )
    raw = mne.io.RawArray(data, _eeg_info(ch_names, sfreq), verbose="error")
    raw.set_meas_date(datetime.datetime(2020, 1, 1, 9, 0, tzinfo=datetime.timezone.utc))
    eeg_dir = root / row.participant_id / "eeg"
    stem = f"{row.participant_id}_task-{TASK}"
    with atomic_path(eeg_dir / f"{stem}_eeg.edf") as tmp:
        mne.export.export_raw(
            tmp, raw, fmt="edf", physical_range="channelwise", overwrite=True, verbose="error"
        )
    _write_eeg_sidecars(eeg_dir, stem, ch_names, electrodes, sfreq, seconds)
    return iaf


def simulate_eeg(
    root: Path,
    atlas: Atlas,
    participants: pd.DataFrame,
    parcels: list[str],
    seed: int,
    seconds: float,
    sfreq: float,
    n_channels: int,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Write one resting EEG recording per subject into the raw BIDS dataset at ``root``,
    subjects in ``n_jobs`` processes.

    Returns
    -------
    dict
        ``channels``, each subject's individual alpha frequency (``iaf``, Hz) and a description
        of the ``forward_model``.
    """
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
    env_chol = np.linalg.cholesky(network_correlation(atlas, seeded_rng(seed, S_EEG_GROUP)))
    n_times = int(round(seconds * sfreq))
    write_subject = functools.partial(
        _write_subject_eeg,
        root=root,
        seed=seed,
        leadfield=leadfield,
        electrodes=electrodes,
        amplitudes={"control": amp_ctl, "patient": amp_pat},
        env_chol=env_chol,
        n_times=n_times,
        sfreq=sfreq,
        seconds=seconds,
        source_scale=source_scale,
        ch_names=ch_names,
    )
    return {
        "channels": ch_names,
        "iaf": map_subjects(write_subject, participants, n_jobs),
        "forward_model": "MNE 3-shell sphere model fitted to the 10-05 electrode positions; one "
        "dipole per parcel centroid (MNI mm taken as fsaverage MRI, mapped with MNE's "
        "fsaverage-trans.fif), radial orientation with a fixed tangential tilt; EEG average "
        "reference",
    }
