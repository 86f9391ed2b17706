"""Reading one EEG recording: file formats, BIDS channels/electrodes tables, montage matching."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pandas as pd

from brainfuse.core.errors import InputError
from brainfuse.modalities.eeg import source as eeg_source
from brainfuse.modalities.eeg.channels import (
    BIDS_TYPES,
    channel_key,
    infer_channel_type,
    match_channel,
)
from brainfuse.modalities.eeg.params import resolve_params


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
            "type": [BIDS_TYPES.get(t.strip().upper(), "misc") if t.strip() else "" for t in types],
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
        configured = str(p["montage"])
        montage, resolved = _standard_montage(configured)
        head_pos = _montage_head_positions(montage)
        names = list(head_pos)
        placed = eeg_source.project_to_sphere(
            np.array([head_pos[n] for n in names]), head.centre, head.radius
        )
        reference = dict(zip(names, placed, strict=True))
        # Name what the user wrote in eeg.montage; MNE's layout only when it differs (a rename).
        positions_src = f"montage {configured}"
        if resolved != configured:
            positions_src += f" (MNE layout {resolved})"
    qc["positions"] = positions_src

    lookup = {channel_key(m): m for m in reference}
    targets = {name: match_channel(name, lookup) for name in candidates}
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
