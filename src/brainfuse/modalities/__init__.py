"""Input modalities: one folder each, every one implementing :class:`~.base.Modality`."""

from __future__ import annotations

from brainfuse.modalities.base import Modality
from brainfuse.modalities.eeg.modality import EEG
from brainfuse.modalities.fmri.modality import FMRI
from brainfuse.modalities.sc.modality import SC

__all__ = ["Modality", "builtin_modalities"]


def builtin_modalities() -> dict[str, Modality]:
    """The modalities brainfuse ships, by name, in the order rules and caches are made."""
    return {m.name: m for m in (FMRI(), EEG(), SC())}
