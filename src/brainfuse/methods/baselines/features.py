"""Feature extractors of the scikit-learn baselines: one row per sample of the caches read."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from brainfuse.core.cache import Cache
from brainfuse.core.connectivity import upper_triangle

__all__ = ["FEATURES", "SCALED_FEATURES", "feature_extractor"]


def _fc(caches: dict[str, Cache]) -> np.ndarray:
    return upper_triangle(caches["fmri"].arrays["fc"])


def _sc(caches: dict[str, Cache]) -> np.ndarray:
    return upper_triangle(caches["sc"].arrays["sc"], fisher=False)


def _eeg(caches: dict[str, Cache]) -> np.ndarray:
    arrays = caches["eeg"].arrays
    power = arrays["band_power"].reshape(len(arrays["band_power"]), -1)
    aec = np.concatenate(
        [upper_triangle(arrays["aec"][:, b]) for b in range(arrays["aec"].shape[1])], axis=1
    )
    return np.nan_to_num(np.concatenate([power, aec], axis=1))


def _tangent(caches: dict[str, Cache]) -> np.ndarray:
    """Per-sample (T, N) time series for a tangent-space estimator fitted inside the fold."""
    cache = caches["fmri"]
    series = [
        np.nan_to_num(ts[:, :n].T)
        for ts, n in zip(cache.arrays["timeseries"], cache.table["n_timepoints"], strict=True)
    ]
    out = np.empty(len(series), dtype=object)
    out[:] = series
    return out


def _first(caches: dict[str, Cache]) -> np.ndarray:
    (modality,) = caches
    return {"fmri": _fc, "eeg": _eeg, "sc": _sc}[modality](caches)


#: Feature extractor name (a spec's ``features``) -> ``extract(caches) -> (n_samples, ...)``.
FEATURES: dict[str, Callable[[dict[str, Cache]], np.ndarray]] = {
    "fc": _fc,
    "sc": _sc,
    "eeg": _eeg,
    "tangent": _tangent,
    "first": _first,
}

# Feature sets whose columns mix units (log band power beside envelope correlations) are
# standardised before the linear models; connectivity vectors are not.
SCALED_FEATURES = frozenset({"eeg"})


def feature_extractor(name: str) -> Callable[[dict[str, Cache]], np.ndarray]:
    """The extractor a spec's ``features`` names: a key of :data:`FEATURES`, or a
    ``"module:function"`` of an outside package (a method added by an extension)."""
    if name in FEATURES:
        return FEATURES[name]
    module, sep, function = name.partition(":")
    if not sep:
        raise KeyError(f"features {name!r}: not one of {sorted(FEATURES)} nor 'module:function'")
    return getattr(importlib.import_module(module), function)
