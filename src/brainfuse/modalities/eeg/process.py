"""EEG branch: BIDS EEG recordings to band-limited amplitude envelopes on parcels or channels.

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

import contextlib
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pandas as pd
import scipy.fft

from brainfuse.core.atlas import Atlas
from brainfuse.core.errors import InputError
from brainfuse.modalities.eeg import source as eeg_source

__all__ = [
    "DEFAULT_EEG_PARAMS",
    "EEGResult",
    "Recording",
    "band_envelopes",
    "infer_channel_type",
    "load_recording",
    "normalise_channel_name",
    "process_eeg",
    "resolve_params",
    "segment",
    "split_reference",
]

DEFAULT_EEG_PARAMS: dict[str, Any] = {
    "level": "source",  # "source" | "sensor"
    "montage": "standard_1005",
    "min_match_rate": 0.8,
    "min_channels": 8,  # fewer usable EEG channels than this -> InputError
    "l_freq": 1.0,
    "h_freq": 45.0,
    "notch": [50],
    "resample_hz": 250,  # None keeps the recording's rate
    "bands": {
        "delta": [1, 4],
        "theta": [4, 8],
        "alpha": [8, 13],
        "beta": [13, 30],
        "gamma": [30, 45],
    },
    "inverse": "eLORETA",  # eLORETA | dSPM | sLORETA | MNE | LCMV
    "snr": 3.0,
    "parcel_mode": "mean_flip",  # mean_flip | pca
    "orthogonalise": True,  # True/"auto": symmetric, pairwise when rank < nodes; "pairwise"; False
    "envelope_sfreq": 2.0,
    "window_length": 200,
    "forward": None,  # None: template sphere model; or a path to a -fwd.fif
    "source_spacing_mm": 8.0,
    "cache_dir": None,  # directory for on-disk template forwards and kernels (None: memory only)
}

_LEVELS = ("source", "sensor")
_ORTHOGONALISE = ("auto", "symmetric", "pairwise", "none")
_PAD_S = 10.0  # reflection padding: several impulse-response lengths of the 1 Hz transitions


# ---------------------------------------------------------------------------------------------
# Parameters and result


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


def resolve_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``, validated.

    Raises
    ------
    ValueError
        For values that no recording could satisfy (a configuration error, not an exclusion).
    """
    merged = dict(DEFAULT_EEG_PARAMS)
    unknown = set(params or {}) - set(DEFAULT_EEG_PARAMS)
    if unknown:
        warnings.warn(f"unknown eeg parameters ignored: {sorted(unknown)}", stacklevel=2)
    merged.update({k: v for k, v in (params or {}).items() if k in DEFAULT_EEG_PARAMS})
    if merged["level"] not in _LEVELS:
        raise ValueError(f"eeg.level={merged['level']!r}: choose one of {_LEVELS}")
    if merged["inverse"] not in eeg_source.INVERSE_METHODS:
        raise ValueError(
            f"eeg.inverse={merged['inverse']!r}: choose one of {eeg_source.INVERSE_METHODS}"
        )
    if merged["parcel_mode"] not in eeg_source.PARCEL_MODES:
        raise ValueError(
            f"eeg.parcel_mode={merged['parcel_mode']!r}: choose one of {eeg_source.PARCEL_MODES}"
        )
    orth = merged["orthogonalise"]
    if orth is True:
        orth = "auto"
    elif orth is False or orth is None:
        orth = "none"
    if orth not in _ORTHOGONALISE:
        raise ValueError(f"eeg.orthogonalise={orth!r}: true, false or one of {_ORTHOGONALISE}")
    merged["orthogonalise"] = orth
    bands = {str(k): (float(v[0]), float(v[1])) for k, v in dict(merged["bands"]).items()}
    if not bands or any(not 0 < lo < hi for lo, hi in bands.values()):
        raise ValueError(f"eeg.bands={merged['bands']!r}: need 0 < low < high for every band")
    merged["bands"] = bands
    merged["notch"] = [float(f) for f in (merged["notch"] or [])]
    for key in ("l_freq", "h_freq", "resample_hz"):
        merged[key] = None if merged[key] is None else float(merged[key])
    if merged["l_freq"] is not None and merged["h_freq"] is not None:
        if not 0 < merged["l_freq"] < merged["h_freq"]:
            raise ValueError("eeg: need 0 < l_freq < h_freq")
    merged["envelope_sfreq"] = float(merged["envelope_sfreq"])
    merged["window_length"] = int(merged["window_length"])
    if merged["envelope_sfreq"] <= 0 or merged["window_length"] < 2:
        raise ValueError("eeg: envelope_sfreq must be > 0 and window_length >= 2")
    merged["snr"] = float(merged["snr"])
    merged["min_match_rate"] = float(merged["min_match_rate"])
    return merged


# ---------------------------------------------------------------------------------------------
# Channel names and types

_PREFIX = re.compile(r"^\s*eeg[\s_:.\-]+", re.IGNORECASE)
# Right-hand sides of "X-Y" that name a reference rather than a second electrode.
_REFERENCES = {
    "ref", "reference", "avg", "av", "ave", "ar", "car", "le", "re", "lm", "rm", "a1", "a2",
    "a12", "m1", "m2", "m12", "a1a2", "m1m2", "linked", "link", "ears", "ear", "mast",
}  # fmt: skip
_EAR_ELECTRODES = {"a1", "a2", "m1", "m2", "ref", "gnd", "ground", "a1a2", "m1m2"}
_OLD_1020 = {"t3": "t7", "t4": "t8", "t5": "p7", "t6": "p8"}
_BIDS_TYPES = {
    "EEG": "eeg", "EOG": "eog", "HEOG": "eog", "VEOG": "eog", "ECG": "ecg", "EMG": "emg",
    "TRIG": "stim", "MISC": "misc", "REF": "misc", "RESP": "resp", "TEMP": "temperature",
    "GSR": "gsr", "BIO": "bio", "SYSCLOCK": "syst",
}  # fmt: skip


def channel_key(name: str) -> str:
    """Case- and punctuation-free form of an electrode name (``"Fcz."`` -> ``"fcz"``)."""
    return re.sub(r"[^0-9a-z']", "", name.lower())


def split_reference(name: str) -> tuple[str, str | None]:
    """Split a channel name into its electrode and reference parts.

    ``"EEG Fp1-REF"`` -> ``("Fp1", "REF")``, ``"Fp1-F7"`` -> ``("Fp1", "F7")``, ``"Cz.."`` ->
    ``("Cz..", None)``. A leading ``EEG`` modality tag is dropped.
    """
    stripped = _PREFIX.sub("", name.strip())
    parts = [p for p in re.split(r"\s*[-\u2013]\s*", stripped) if p]
    if len(parts) == 2:
        return parts[0], parts[1]
    return stripped, None


def _is_reference(part: str | None) -> bool:
    return part is not None and channel_key(part) in _REFERENCES


def normalise_channel_name(name: str, montage_names: Iterable[str]) -> str | None:
    """The montage's spelling of the electrode recorded by ``name``, or None.

    ``"EEG Fp1-REF"``, ``"Fp1."``, ``"FP1"`` and ``"fp1"`` all give ``"Fp1"``; old 10-20 names
    (T3/T4/T5/T6) fall back to their 10-10 successors when the montage lacks them. Bipolar
    derivations (``"Fp1-F7"``) and reference pairs (``"A1-A2"``) give None: they have no single
    position.
    """
    return _match(name, {channel_key(m): m for m in montage_names})


def _match(name: str, lookup: Mapping[str, str]) -> str | None:
    electrode, reference = split_reference(name)
    if reference is not None and not _is_reference(reference):
        return None
    key = channel_key(electrode)
    if reference is not None and key in _EAR_ELECTRODES:
        return None
    if key in lookup:
        return lookup[key]
    return lookup.get(_OLD_1020.get(key, ""))


def infer_channel_type(name: str) -> str | None:
    """MNE channel type implied by a channel's name, or None when it may be EEG.

    Recognises ECG/EKG, EOG (HEOG, VEOG, LOC, ROC), EMG (chin), trigger/status channels,
    respiration/oximetry/photic and similar polygraphy channels, reference pairs (``A1-A2``) and
    bipolar derivations (``Fp1-F7``), the last two as ``misc``.
    """
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    if any(t.startswith(("ecg", "ekg")) for t in tokens):
        return "ecg"
    if any(t.endswith("eog") or t.startswith("eog") or t in ("loc", "roc") for t in tokens):
        return "eog"
    if any(t.startswith("emg") or t == "chin" for t in tokens):
        return "emg"
    stim = ("status", "trigger", "trig", "stim", "sti", "event", "events", "marker", "markers")
    if any(t in stim or re.fullmatch(r"sti\d+", t) for t in tokens):
        return "stim"
    polygraphy = (
        "resp", "thor", "abd", "airflow", "flow", "snore", "spo2", "sao2", "pleth", "pulse",
        "temp", "light", "position", "photic", "ibi", "burst", "suppr", "hr", "bp", "gsr", "eda",
    )  # fmt: skip
    if any(t.startswith(polygraphy) for t in tokens) or any(
        re.fullmatch(r"dc\d+", t) for t in tokens
    ):
        return "misc"
    electrode, reference = split_reference(name)
    if reference is not None:
        if not _is_reference(reference) or channel_key(electrode) in _EAR_ELECTRODES:
            return "misc"
    return None


# ---------------------------------------------------------------------------------------------
# Reading


def _edf_problem(path: Path) -> str | None:
    """Why an EDF/BDF file cannot be complete, from its header, or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            if len(head) < 256:
                return f"header is incomplete ({size} bytes)"
            n_header = int(head[184:192].decode("ascii").strip())
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
            f.seek(256 + n_signals * 216)
            counts = f.read(8 * n_signals)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"header is unreadable ({exc})"
    if len(counts) < 8 * n_signals or size < n_header:
        return f"header is incomplete ({size} bytes)"
    try:
        per_record = sum(int(counts[8 * i : 8 * i + 8].decode("ascii")) for i in range(n_signals))
    except (ValueError, UnicodeDecodeError) as exc:
        return f"header is unreadable ({exc})"
    width = 3 if head[:1] == b"\xff" else 2  # BDF stores 24-bit samples
    expected = n_header + n_records * per_record * width
    if n_records > 0 and size < expected:
        return f"file is truncated: {size} bytes, but its header describes {expected}"
    return None


def read_raw(path: str | os.PathLike) -> mne.io.BaseRaw:
    """Read any MNE-supported EEG file fully into memory.

    Raises
    ------
    InputError
        Missing, truncated or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.suffix.lower() in (".edf", ".bdf"):
        problem = _edf_problem(path)
        if problem:
            raise InputError(path, problem)
    attempts: list[dict] = [{}]
    if path.suffix.lower() in (".edf", ".bdf"):
        # EDF+ annotations are often Latin-1 (e.g. PhysioNet), which MNE's default UTF-8 rejects.
        attempts.append({"encoding": "latin1"})
    error: Exception | None = None
    for kwargs in attempts:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                raw = mne.io.read_raw(path, preload=True, verbose="warning", **kwargs)
        except Exception as exc:  # readers raise many types for damaged files
            error = exc
            continue
        for w in caught:
            if "does not match the file size" in str(w.message):
                raise InputError(path, f"file is truncated ({w.message})")
        return raw
    raise InputError(path, f"cannot be read: {type(error).__name__}: {error}")


def read_channels_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """BIDS ``*_channels.tsv`` with ``name``, ``type`` (MNE type) and ``bad`` columns."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "name" not in table:
        raise InputError(path, "channels.tsv has no 'name' column")
    types = table.get("type", pd.Series([""] * len(table)))
    status = table.get("status", pd.Series([""] * len(table)))
    return pd.DataFrame(
        {
            "name": table["name"].astype(str),
            "type": [
                _BIDS_TYPES.get(t.strip().upper(), "misc") if t.strip() else "" for t in types
            ],
            "bad": [s.strip().lower() == "bad" for s in status],
        }
    )


_ALS_SYSTEMS = {"ctf", "eeglab", "eeglab-hj", "4dbti", "kityokogawa", "kit", "chietiitab-als"}


def read_electrodes_tsv(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Finite electrode positions from BIDS ``*_electrodes.tsv``, as RAS-oriented arrays.

    The coordinate system comes from the sibling ``*_coordsystem.json``; ALS systems (EEGLAB,
    CTF, ...) are rotated to RAS. Units and origin do not matter: positions are only used through
    their directions from a sphere fitted to them.

    Returns
    -------
    positions : dict of str to ndarray (3,)
    system : str
        The coordinate system's name (``"unknown"`` without a coordsystem file).
    """
    path = Path(path)
    table = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "nan", ""])
    if not {"name", "x", "y", "z"} <= set(table.columns):
        raise InputError(path, "electrodes.tsv needs name, x, y and z columns")
    system = "unknown"
    stem = path.name.rsplit("_electrodes.tsv", 1)[0]
    candidates = [path.with_name(f"{stem}_coordsystem.json")] + sorted(
        path.parent.glob("*_coordsystem.json")
    )
    for candidate in candidates:
        if candidate.exists():
            meta = json.loads(candidate.read_text())
            system = str(meta.get("EEGCoordinateSystem", "unknown"))
            break
    xyz = table[["x", "y", "z"]].to_numpy(float)
    if system.lower() in _ALS_SYSTEMS:
        xyz = np.column_stack([-xyz[:, 1], xyz[:, 0], xyz[:, 2]])
    finite = np.all(np.isfinite(xyz), axis=1)
    return {str(n): p for n, p, ok in zip(table["name"], xyz, finite, strict=True) if ok}, system


def _standard_montage(name: str) -> tuple[mne.channels.DigMontage, str]:
    """A built-in montage, following MNE's rename of ``standard_*`` to ``colin27_*`` (1.13)."""
    builtin = mne.channels.get_builtin_montages()
    resolved = name
    if name not in builtin and name.startswith("standard_"):
        alternative = "colin27_" + name[len("standard_") :]
        if alternative in builtin:
            resolved = alternative
    if resolved not in builtin and Path(name).exists():
        return mne.channels.read_custom_montage(name), name
    if resolved not in builtin:
        raise ValueError(f"eeg.montage={name!r} is not a built-in MNE montage or a file")
    return mne.channels.make_standard_montage(resolved), resolved


def _montage_head_positions(montage: mne.channels.DigMontage) -> dict[str, np.ndarray]:
    """Montage positions in MNE head coordinates (defined by its fiducials when it has them)."""
    pos = montage.get_positions()
    names = list(pos["ch_pos"])
    xyz = np.array([pos["ch_pos"][n] for n in names], float)
    if all(pos.get(f) is not None for f in ("nasion", "lpa", "rpa")):
        xyz = mne.transforms.apply_trans(mne.channels.compute_native_head_t(montage), xyz)
    return dict(zip(names, xyz, strict=True))


# ---------------------------------------------------------------------------------------------
# Recording


@dataclass
class Recording:
    """EEG channels of one recording, matched, typed and placed on the template head.

    Attributes
    ----------
    path : Path
    raw : mne.io.BaseRaw
        The file's data with channels renamed to montage spellings and typed.
    eeg_names : list of str
        Matched EEG channels (montage spelling), good and bad.
    bads : list of str
        Bad EEG channels (channels.tsv or flat).
    positions : dict of str to ndarray
        Template-sphere positions (head coordinates, m) of ``eeg_names``.
    data : ndarray of float32, shape (n_eeg, n_times)
        Data of ``eeg_names`` (V), as recorded.
    qc : dict
    """

    path: Path
    raw: mne.io.BaseRaw
    eeg_names: list[str]
    bads: list[str]
    positions: dict[str, np.ndarray]
    data: np.ndarray
    qc: dict

    @property
    def good_names(self) -> list[str]:
        return [n for n in self.eeg_names if n not in self.bads]


def load_recording(
    eeg_path: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    channels_tsv: str | os.PathLike | None = None,
    electrodes_tsv: str | os.PathLike | None = None,
) -> Recording:
    """Read, type, name-match and position the EEG channels of a recording.

    Raises
    ------
    InputError
        Unreadable file, no EEG, too low a match rate, or too few usable channels.
    """
    p = resolve_params(params)
    path = Path(eeg_path)
    raw = read_raw(path)
    sfreq = float(raw.info["sfreq"])
    qc: dict[str, Any] = {
        "file": str(path),
        "n_channels": len(raw.ch_names),
        "sfreq": sfreq,
        "duration_s": round(float(raw.n_times / sfreq), 3),
    }
    table = None
    if channels_tsv is not None and Path(channels_tsv).exists():
        table = read_channels_tsv(channels_tsv)
        by_name = {r.name: r for r in table.itertuples()}
        by_key = {channel_key(r.name): r for r in table.itertuples()}
    reader_types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    types: dict[str, str] = {}
    tsv_bads: set[str] = set()
    for name in raw.ch_names:
        row = None
        if table is not None:
            row = by_name.get(name) or by_key.get(channel_key(name))
        if row is not None and row.type:
            types[name] = row.type
        else:
            inferred = infer_channel_type(name)
            types[name] = inferred or reader_types[name]
        if row is not None and row.bad:
            tsv_bads.add(name)
    candidates = [n for n in raw.ch_names if types[n] == "eeg"]
    dropped: dict[str, list[str]] = {}
    for name in raw.ch_names:
        if types[name] != "eeg":
            dropped.setdefault(types[name], []).append(name)
    qc["dropped"] = dropped
    qc["n_eeg"] = len(candidates)
    if not candidates:
        raise InputError(path, f"no EEG channels among {len(raw.ch_names)} channels")

    # Electrode positions: electrodes.tsv when usable, else the standard montage.
    head = eeg_source.template_head()
    positions_src = None
    tsv_pos: dict[str, np.ndarray] = {}
    if electrodes_tsv is not None and Path(electrodes_tsv).exists():
        tsv_pos, system = read_electrodes_tsv(electrodes_tsv)
        if len(tsv_pos) >= 8:
            positions_src = f"electrodes.tsv ({system})"
    if positions_src is not None:
        pts = np.array(list(tsv_pos.values()))
        centre, _ = eeg_source.fit_sphere(pts)
        # Directions from the electrodes' own best sphere, placed on the template's.
        placed = eeg_source.project_to_sphere(pts - centre + head.centre, head.centre, head.radius)
        reference = dict(zip(tsv_pos, placed, strict=True))
    else:
        montage, resolved = _standard_montage(str(p["montage"]))
        head_pos = _montage_head_positions(montage)
        names = list(head_pos)
        placed = eeg_source.project_to_sphere(
            np.array([head_pos[n] for n in names]), head.centre, head.radius
        )
        reference = dict(zip(names, placed, strict=True))
        positions_src = f"montage {resolved}"
    qc["positions"] = positions_src

    lookup = {channel_key(m): m for m in reference}
    targets = {name: _match(name, lookup) for name in candidates}
    unmatched = [n for n in candidates if targets[n] is None]
    rename: dict[str, str] = {}
    duplicates: list[str] = []
    # A channel already spelled like its electrode keeps it ahead of look-alikes ("FP1", "Fp1.").
    for name in sorted(candidates, key=lambda n: targets[n] != n):
        target = targets[name]
        if target is None:
            continue
        if target in rename.values():
            duplicates.append(name)
        else:
            rename[name] = target
    others = set(raw.ch_names) - set(rename)
    for name, target in list(rename.items()):
        if target != name and target in others:  # the name is taken by a non-EEG channel
            duplicates.append(name)
            del rename[name]
    rename = {n: rename[n] for n in candidates if n in rename}
    n_matched = len(rename)
    rate = n_matched / len(candidates)
    qc.update(
        matched=n_matched,
        match_rate=round(rate, 4),
        unmatched=unmatched,
        duplicates=duplicates,
    )
    if rate < p["min_match_rate"]:
        raise InputError(
            path,
            f"only {n_matched} of {len(candidates)} EEG channels ({rate:.0%}) match "
            f"{positions_src} (min_match_rate {p['min_match_rate']:.0%}); "
            f"unmatched: {unmatched[:10]}",
        )
    # Unplaceable EEG channels cannot enter the average reference or the forward model.
    for name in unmatched + duplicates:
        types[name] = "misc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.set_channel_types(
            {n: t for n, t in types.items() if t != reader_types[n]},
            on_unit_change="ignore",
            verbose="error",
        )
        raw.rename_channels(rename, verbose="error")
    eeg_names = list(rename.values())
    data = raw.get_data(picks=eeg_names).astype(np.float32)
    if not np.isfinite(data.sum()):
        raise InputError(path, "EEG data contain NaN or infinite values")
    # Flat-channel screening does not need every sample.
    std = data[:, :: max(1, data.shape[1] // 20_000)].std(axis=1)
    median = float(np.median(std))
    flat = [n for n, s in zip(eeg_names, std, strict=True) if s <= 1e-4 * median or s == 0]
    bads = sorted({rename.get(n, n) for n in tsv_bads if rename.get(n, n) in eeg_names} | set(flat))
    qc.update(bad_channels=bads, flat_channels=flat)
    n_good = len(eeg_names) - len(bads)
    if n_good < int(p["min_channels"]):
        raise InputError(
            path, f"only {n_good} usable EEG channels (min_channels {p['min_channels']})"
        )
    raw.info["bads"] = list(bads)
    positions = {n: reference[n] for n in eeg_names}
    montage = mne.channels.make_dig_montage(ch_pos=positions, coord_frame="head")
    raw.set_montage(montage, on_missing="ignore", verbose="error")
    return Recording(
        path=path,
        raw=raw,
        eeg_names=eeg_names,
        bads=bads,
        positions=positions,
        data=data,
        qc=qc,
    )


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


def _envelopes_from_spectrum(
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


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread: the many small products here gain nothing from threads, and on a
    busy machine (or beside other Snakemake jobs) OpenBLAS's spinning threads slow them ~20x."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, run as configured
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _spectrum_for(data: np.ndarray, sfreq: float, p: Mapping[str, Any]) -> _Spectrum:
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
    with _single_threaded_blas():
        spec = _spectrum_for(np.asarray(data, float), sfreq, p)
        return _envelopes_from_spectrum(spec, p, weights, max_rank)


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
        The config's ``eeg:`` section; missing keys take :data:`DEFAULT_EEG_PARAMS`.
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
    BLAS runs single-threaded inside this call (see ``_single_threaded_blas``); run recordings in
    parallel (Snakemake jobs) rather than threads within one.
    """
    with _single_threaded_blas():
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
    spec = _spectrum_for(data, sfreq, p)
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
    envelopes, aec, band_power, env_qc = _envelopes_from_spectrum(spec, p, weights, len(names) - 1)
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


def segment(
    envelopes: np.ndarray, length: int = 200, path: str | os.PathLike | None = None
) -> np.ndarray:
    """Cut envelopes into non-overlapping windows (a trailing remainder is dropped).

    Parameters
    ----------
    envelopes : ndarray, shape (n_bands, n_nodes, n_times)
    length : int
        Window length in envelope samples.
    path : path, optional
        Recording named in the error.

    Returns
    -------
    ndarray, shape (n_windows, n_bands, n_nodes, length)

    Raises
    ------
    InputError
        Fewer than ``length`` samples.
    """
    envelopes = np.asarray(envelopes)
    n_bands, n_nodes, n_times = envelopes.shape
    n_windows = n_times // length
    if n_windows < 1:
        raise InputError(
            path or "<envelopes>",
            f"{n_times} envelope samples are shorter than one window of {length}",
        )
    cut = envelopes[:, :, : n_windows * length].reshape(n_bands, n_nodes, n_windows, length)
    return np.ascontiguousarray(cut.transpose(2, 0, 1, 3))
