"""EEG channel names and types: normalisation to montage names, reference and bipolar pairs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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
BIDS_TYPES = {
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
    return match_channel(name, {channel_key(m): m for m in montage_names})


def match_channel(name: str, lookup: Mapping[str, str]) -> str | None:
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
