"""What a method is: :class:`MethodSpec`, one entry of the :mod:`~brainfuse.methods.catalog`.

Torch-free and dependency-free: the Snakefile reads specs at parse time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FAMILIES", "MethodSpec"]

#: ``sklearn``: one ``fit`` stage of a scikit-learn baseline; ``torch``: Lightning stages.
FAMILIES = ("sklearn", "torch")


@dataclass(frozen=True)
class MethodSpec:
    """What a method needs, which stages it has and how they run.

    Attributes
    ----------
    name : str
        The method's name, as ``config.yaml`` lists it under ``methods``.
    family : str
        ``sklearn`` (scikit-learn baselines) or ``torch`` (Lightning stages).
    modalities : tuple of str
        Caches the method reads (``fmri``, ``eeg``, ``sc``); it is skipped when a required one
        (not in ``optional``) is absent. Empty means "any one": the first available of fMRI,
        EEG, SC (the majority baseline).
    stages : tuple of str
        The stages the method accepts, in order; a config lists some of them, in this order.
    description : str
        One line for the report.
    optional : tuple of str
        Modalities among ``modalities`` that a dataset or a subject may lack: the method runs
        on the others (at least one of them when all are optional, e.g. MCSP's fMRI and EEG),
        and a subject lacking one is served without it instead of being left out.
    estimator : str
        For sklearn methods, the baseline kind (``majority``, ``logreg``, ``svm``).
    features : str
        sklearn: the feature extractor (a key of
        :data:`brainfuse.methods.baselines.features.FEATURES`, or ``"module:function"`` of an
        outside package); torch: the encoder name, the default of the ``encoder`` parameter.
    params : mapping
        The method's default hyper-parameters (read-only; a deep copy of what was given).
        ``per_stage`` maps a stage name to defaults of that stage only.
    plugin : str or None
        Dotted name of the module providing the method's stage plugins through its
        ``stage_plugins(spec) -> dict[str, StagePlugin]``; imported when a stage runs. None: the
        generic classifier stage (the ``features`` encoder plus an MLP head).
    self_supervised : tuple of str
        The stages that read no label (self-supervised pre-training), declared here so that
        planning knows them without importing the plugins; a test holds them to the plugins.
    variant_of : str or None
        For a variant the config adds (``methods.<name>.variant_of``): the method it is a copy
        of, under another name, with its own config entry (stages, params, ``pretrain_on``).
    """

    name: str
    family: str
    modalities: tuple[str, ...]
    stages: tuple[str, ...]
    description: str
    optional: tuple[str, ...] = ()
    estimator: str = ""
    features: str = ""
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    plugin: str | None = None
    variant_of: str | None = None
    self_supervised: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r}; expected one of {FAMILIES}")
        if not self.stages:
            raise ValueError(f"{self.name}: a method has at least one stage")
        if not set(self.self_supervised) <= set(self.stages):
            raise ValueError(f"{self.name}: self-supervised {self.self_supervised} not stages")
        if not set(self.optional) <= set(self.modalities):
            raise ValueError(f"{self.name}: optional {self.optional} not among its modalities")
        # A deep copy behind a read-only view: no caller can change another caller's defaults.
        object.__setattr__(self, "params", MappingProxyType(copy.deepcopy(dict(self.params))))

    @property
    def origin(self) -> str:
        """The catalog method this one is: its own name, or the method it is a variant of."""
        return self.variant_of or self.name

    @property
    def required(self) -> tuple[str, ...]:
        """The modalities the method cannot run without (those not in ``optional``)."""
        return tuple(m for m in self.modalities if m not in self.optional)

    def present(self, available: Iterable[str]) -> tuple[str, ...]:
        """The modalities the method reads where ``available`` ones exist, in its own order."""
        have = set(available)
        return tuple(m for m in self.modalities if m in have)
