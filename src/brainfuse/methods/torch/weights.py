"""A stage's ``model.bin``: its format, reading it, and copying its tensors into a network.

Kept apart from the runner so that stage modules (which initialise from a previous stage) and
the runner (which writes the file) both read it without importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("brainfuse")

__all__ = ["MODEL_FORMAT", "load_previous", "read_model"]

#: ``format`` of a torch stage's ``model.bin`` (a dict: method, stage, fold, encoder, n_nodes,
#: params, supervised, input_keys, state_dict).
MODEL_FORMAT = "brainfuse-torch-1"


def read_model(path: str | Path) -> dict[str, Any]:
    """A ``model.bin`` written by the stage runner (state dict, params, encoder name, ...)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FORMAT} model file")
    return saved


def load_previous(
    model: torch.nn.Module,
    path: str | Path,
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> dict[str, list[str]]:
    """Load a previous stage's ``model.bin`` into the matching parameters of ``model``.

    Keys present in both with the same shape are loaded (``strict=False``); the rest are
    reported.

    Parameters
    ----------
    model : nn.Module
        Receives the tensors.
    path : str or Path
        A ``model.bin`` (or any file holding a state dict, or ``{"state_dict": ...}``).
    remap : callable, optional
        Maps the saved state dict to the one to load (rename, select or replicate tensors).

    Returns
    -------
    dict
        ``missing`` (model keys not in the file), ``unexpected`` (file keys not in the model),
        ``mismatched`` (same key, different shape); each a sorted list.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a joblib file from an sklearn stage, or a damaged file
        raise ValueError(f"{path}: not a torch model.bin ({err})") from err
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state_dict in the file")
    if remap is not None:
        state = remap(dict(state))
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    loadable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = model.load_state_dict(loadable, strict=False)
    report = {
        "missing": sorted(set(result.missing_keys) - set(mismatched)),
        "unexpected": sorted(k for k in state if k not in own),
        "mismatched": mismatched,
    }
    log.info(
        "loaded %d tensors from %s; missing %d, unexpected %d, mismatched %d",
        len(loadable),
        path,
        len(report["missing"]),
        len(report["unexpected"]),
        len(report["mismatched"]),
    )
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            log.warning("previous stage %s: %s keys: %s", path, kind, ", ".join(report[kind]))
    return report
