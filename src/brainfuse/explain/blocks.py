"""Attribution blocks: what one input block of one fold explains, and the names of its axes.

Blocks are named by the input they explain: ``fc`` (FC or tangent-space FC), ``sc``,
``timeseries``, ``fft``, ``band_power``, ``aec``, ``envelopes``; each belongs to a modality
(:data:`BLOCK_MODALITY`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Top-k used for stability and ground-truth recovery.
TOP_K = 10


#: Modality of each input block.
BLOCK_MODALITY = {
    "fc": "fmri",
    "timeseries": "fmri",
    "fft": "fmri",
    "sc": "sc",
    "band_power": "eeg",
    "envelopes": "eeg",
    "aec": "eeg",
}


#: Blocks holding connectivity matrices (the others hold node signals).
EDGE_BLOCKS = {"fc", "sc", "aec"}


#: Blocks whose parcels carry the planted effect of each modality of the demo's ground truth:
#: the EEG effect is band amplitude, so envelope correlations (``aec``) are not scored on it.
GROUND_TRUTH_BLOCKS = {
    "fmri": ("fc", "timeseries", "fft"),
    "sc": ("sc",),
    "eeg": ("band_power", "envelopes"),
}


#: Preferred order of blocks (the first present is a method's headline block).
BLOCK_ORDER = ("fc", "timeseries", "fft", "sc", "band_power", "envelopes", "aec")


@dataclass
class FoldBlock:
    """Attribution of one input block in one fold.

    ``magnitude`` and ``signed`` have shape (bands, N, N) for connectivity blocks (symmetric,
    zero diagonal) and (bands, N) for node blocks; ``bands`` is 1 without a band axis.
    """

    magnitude: np.ndarray
    signed: np.ndarray


@dataclass
class BlockInfo:
    """Names of what a block's axes index.

    Attributes
    ----------
    nodes : list of str
        Node (parcel or channel) names in node order.
    networks : list of str
        Network of each node, from the atlas; empty when the atlas has no network labels.
    bands : list of str
        Frequency bands of the block, ``[""]`` for none.
    """

    nodes: list[str]
    networks: list[str]
    bands: list[str] = field(default_factory=lambda: [""])

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)


@dataclass
class MethodAttribution:
    """Everything :func:`explain_method` computes before it writes files."""

    method: str
    kind: str  # haufe | integrated_gradients | none
    folds: list[int]
    blocks: dict[str, dict[int, FoldBlock]]
    info: dict[str, BlockInfo]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def block_rank(name: str) -> int:
    """Position of block ``name`` in :data:`BLOCK_ORDER` (unknown blocks last)."""
    return BLOCK_ORDER.index(name) if name in BLOCK_ORDER else len(BLOCK_ORDER)
