"""The registry of methods: which modalities each needs, its stages and how a stage runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .baselines import upper_triangle
from .cache import Cache


@dataclass(frozen=True)
class MethodSpec:
    """What a method needs and how its samples are turned into inputs.

    Attributes
    ----------
    modalities : tuple of str
        Caches the method reads (``fmri``, ``eeg``, ``sc``); it is skipped when one is absent.
    family : str
        ``sklearn`` (single ``fit`` stage) or ``torch`` (Lightning stages).
    estimator : str
        For sklearn methods, the baseline kind (``majority``, ``logreg``, ``svm``).
    features : str
        Feature extractor name in :data:`FEATURES`.
    """

    modalities: tuple[str, ...]
    family: str
    estimator: str = ""
    features: str = ""
    description: str = ""


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


FEATURES = {"fc": _fc, "sc": _sc, "eeg": _eeg}

METHODS: dict[str, MethodSpec] = {
    "majority": MethodSpec(("fmri",), "sklearn", "majority", "fc", "majority class (chance level)"),
    "logreg_fc": MethodSpec(
        ("fmri",), "sklearn", "logreg", "fc", "logistic regression on Fisher-z FC"
    ),
    "svm_fc": MethodSpec(("fmri",), "sklearn", "svm", "fc", "linear SVM on Fisher-z FC"),
    "logreg_sc": MethodSpec(("sc",), "sklearn", "logreg", "sc", "logistic regression on SC edges"),
    "logreg_eeg": MethodSpec(
        ("eeg",), "sklearn", "logreg", "eeg", "logistic regression on log band power + AEC"
    ),
}


def plan(methods_cfg: dict, available: set[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Methods to run (name -> stages) and those skipped (name -> reason)."""
    run, skipped = {}, {}
    for name, cfg in methods_cfg.items():
        spec = METHODS.get(name)
        if spec is None:
            raise ValueError(f"methods.{name}: unknown method; known: {sorted(METHODS)}")
        missing = [m for m in spec.modalities if m not in available]
        if missing:
            skipped[name] = f"needs {', '.join(missing)} data, which this dataset does not have"
        else:
            run[name] = list(cfg["stages"])
    return run, skipped
