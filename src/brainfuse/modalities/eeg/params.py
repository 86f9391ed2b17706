"""Parameters of the EEG step: their defaults and checks (the config's ``eeg:`` section)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from brainfuse.config import section_defaults
from brainfuse.modalities.eeg import source as eeg_source


def default_eeg_params() -> dict[str, Any]:
    """The config's ``eeg`` defaults (from the schema) and ``cache_dir``, the folder of on-disk
    template forwards and kernels that the rule adds (None: memory only)."""
    return {**section_defaults("eeg"), "cache_dir": None}


_LEVELS = ("source", "sensor")
_ORTHOGONALISE = ("auto", "symmetric", "pairwise", "none")


def resolve_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``, validated.

    Raises
    ------
    ValueError
        For values that no recording could satisfy (a configuration error, not an exclusion).
    """
    merged = default_eeg_params()
    unknown = set(params or {}) - set(merged)
    if unknown:
        warnings.warn(f"unknown eeg parameters ignored: {sorted(unknown)}", stacklevel=2)
    merged.update({k: v for k, v in (params or {}).items() if k in merged})
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
