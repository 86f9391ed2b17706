"""The registry of methods: which modalities each needs, its stages and how a stage runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainfuse.core.cache import Cache
from brainfuse.core.connectivity import upper_triangle


@dataclass(frozen=True)
class MethodSpec:
    """What a method needs and how its samples are turned into inputs.

    Attributes
    ----------
    modalities : tuple of str
        Caches the method reads (``fmri``, ``eeg``, ``sc``); it is skipped when one is absent.
        Empty means "any one": the first available of fMRI, EEG, SC (the majority baseline).
    family : str
        ``sklearn`` (single ``fit`` stage) or ``torch`` (Lightning stages).
    estimator : str
        For sklearn methods, the baseline kind (``majority``, ``logreg``, ``svm``).
    features : str
        Feature extractor name in :data:`FEATURES`.
    optional : tuple of str
        Modalities among ``modalities`` that a subject may lack: its samples are then served
        without them (e.g. MCSP's EEG) instead of being left out.
    """

    modalities: tuple[str, ...]
    family: str
    estimator: str = ""
    features: str = ""
    description: str = ""
    optional: tuple[str, ...] = ()


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


# Feature sets whose columns mix units (log band power beside envelope correlations) are
# standardised before the linear models; connectivity vectors are not.
SCALED_FEATURES = {"eeg"}

FEATURES = {"fc": _fc, "sc": _sc, "eeg": _eeg, "tangent": _tangent, "first": _first}

METHODS: dict[str, MethodSpec] = {
    "majority": MethodSpec((), "sklearn", "majority", "first", "majority class (chance level)"),
    "logreg_fc": MethodSpec(
        ("fmri",), "sklearn", "logreg", "fc", "logistic regression on Fisher-z FC"
    ),
    "svm_fc": MethodSpec(("fmri",), "sklearn", "svm", "fc", "linear SVM on Fisher-z FC"),
    "logreg_tangent": MethodSpec(
        ("fmri",), "sklearn", "logreg", "tangent", "logistic regression on tangent-space FC"
    ),
    "svm_tangent": MethodSpec(
        ("fmri",), "sklearn", "svm", "tangent", "linear SVM on tangent-space FC"
    ),
    "logreg_sc": MethodSpec(("sc",), "sklearn", "logreg", "sc", "logistic regression on SC edges"),
    "svm_sc": MethodSpec(("sc",), "sklearn", "svm", "sc", "linear SVM on SC edges"),
    "logreg_eeg": MethodSpec(
        ("eeg",), "sklearn", "logreg", "eeg", "logistic regression on log band power + AEC"
    ),
    "svm_eeg": MethodSpec(("eeg",), "sklearn", "svm", "eeg", "linear SVM on log band power + AEC"),
}

MODALITY_PREFERENCE = ("fmri", "eeg", "sc")


def modalities_of(name: str, available: set[str]) -> tuple[str, ...]:
    """The caches ``name`` reads on a dataset with ``available`` modalities."""
    spec = METHODS[name]
    if spec.modalities:
        return spec.modalities
    return tuple(m for m in MODALITY_PREFERENCE if m in available)[:1]


def _merge_torch_methods() -> None:
    # Imported here: the registry imports MethodSpec from this module.
    from brainfuse.methods.torch_registry import TORCH_METHODS

    METHODS.update(TORCH_METHODS)


_merge_torch_methods()


def plan(methods_cfg: dict, available: set[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Methods to run (name -> stages) and those skipped (name -> reason)."""
    run, skipped = {}, {}
    for name, cfg in methods_cfg.items():
        spec = METHODS.get(name)
        if spec is None:
            raise ValueError(f"methods.{name}: unknown method; known: {sorted(METHODS)}")
        missing = [m for m in spec.modalities if m not in available]
        if not available:
            skipped[name] = "the dataset has no usable modality"
        elif missing:
            skipped[name] = f"needs {', '.join(missing)} data, which this dataset does not have"
        else:
            run[name] = list(cfg["stages"])
    return run, skipped
