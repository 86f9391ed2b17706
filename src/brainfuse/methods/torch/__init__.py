"""Training and evaluation of torch methods: datasets, augmentations, encoders, Lightning stages.

Importing this package is cheap: :mod:`.registry` (read by the Snakefile) needs neither torch
nor Lightning, and the torch-based names below are imported on first use.

Public API
----------
Data (:mod:`.data`)
    :class:`BrainDataset`, :func:`join_modalities`, :func:`crop_window`, :func:`train_loader`,
    :func:`eval_loader`
Augmentations (:mod:`.augment`)
    :class:`Compose`, :class:`NodeDrop`, :class:`EdgeDrop`, :class:`NodeFeatureNoise`,
    :class:`EdgePerturbation`, :class:`Subgraph`, :class:`TimePointDrop`, :class:`TimeNoise`,
    :class:`TimeFlip`, :class:`TimeCrop`, :class:`FrequencyMask`, :func:`build_augmentations`
Encoders (:mod:`.encoders`)
    :class:`GCNEncoder`, :class:`DenseGCNEncoder`, :class:`NodeGCNEncoder`,
    :class:`GraphTransformer`, :class:`TemporalTransformer`, :class:`BrainClassifier`,
    :func:`build_encoder`, :data:`ENCODERS`
Training (:mod:`.module`, :mod:`.stage`, :mod:`.stages`)
    :class:`StageModule`, :class:`LitClassifier`, :func:`run_torch_stage`,
    :func:`load_previous`, :func:`read_model`, :func:`rebuild_model`; the stage-plugin interface
    :class:`StagePlugin`, :class:`StageContext`, :func:`register_stage`, :func:`plugin_for`,
    :func:`linear_probe`
SC+FC fusion (:mod:`.m3d_bfs`, :mod:`.connex`)
    M3D-BFS (stages ``encoders``, ``pretrain``, ``finetune``) and ConneX (``train``); imported
    by :func:`plugin_for` when one of their methods runs
Registry (:mod:`.registry`)
    :data:`TORCH_METHODS`, :data:`DEFAULT_PARAMS`, :data:`COMMON_PARAMS`, :func:`method_params`
"""

from __future__ import annotations

import importlib
from typing import Any

# brainfuse.methods.catalog first: it merges this package's registry into METHODS when imported, and
# the registry needs its MethodSpec; imported the other way round the two would meet half-done.
from brainfuse.methods import catalog as _methods  # noqa: F401
from brainfuse.methods.torch_registry import (
    COMMON_PARAMS,
    DEFAULT_PARAMS,
    TORCH_METHODS,
    method_params,
)

_LAZY = {
    "data": ("BrainDataset", "join_modalities", "crop_window", "train_loader", "eval_loader"),
    "augment": (
        "Compose",
        "NodeDrop",
        "EdgeDrop",
        "NodeFeatureNoise",
        "EdgePerturbation",
        "Subgraph",
        "TimePointDrop",
        "TimeNoise",
        "TimeFlip",
        "TimeCrop",
        "FrequencyMask",
        "build_augmentations",
        "AUGMENTATIONS",
    ),
    "encoders": (
        "GCNEncoder",
        "DenseGCNEncoder",
        "NodeGCNEncoder",
        "GraphTransformer",
        "TemporalTransformer",
        "BrainClassifier",
        "build_encoder",
        "ENCODERS",
    ),
    "module": ("LitClassifier", "StageModule"),
    "stages": ("StagePlugin", "StageContext", "register_stage", "plugin_for", "linear_probe"),
    "stage": ("run_torch_stage", "load_previous", "read_model", "rebuild_model"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["COMMON_PARAMS", "DEFAULT_PARAMS", "TORCH_METHODS", "method_params", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
