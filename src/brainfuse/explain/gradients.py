"""Integrated gradients of the torch stage modules.

Integrated gradients (captum; zero baseline) of the log-odds of the positive class with
respect to every float input the model reads (``fc``, ``sc``, ``timeseries``, ...), on the
fold's test samples, with the model rebuilt exactly as the stage runner builds it. The
attribution of an edge is the sum over its two symmetric entries; a node input (a time
series, a band power) gives its parcel the sum of |attribution| over time points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainfuse.explain.blocks import FoldBlock
from brainfuse.methods.catalog import Catalog, default_catalog

if TYPE_CHECKING:
    from brainfuse.methods.torch.harmonise_inputs import InputAdjustment


def integrated_gradients(
    forward,
    inputs: Mapping[str, Any],
    extras: Mapping[str, Any],
    n_steps: int = 32,
    internal_batch_size: int | None = 64,
    baselines: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Integrated gradients of ``forward(batch) -> (B,) score`` w.r.t. every tensor of
    ``inputs``, the tensors of ``extras`` passed along unchanged.

    ``baselines`` maps an input to its reference point (same shape, or a leading axis of 1);
    zero where not given. Returns the attributions (numpy, shaped like the inputs) and the
    largest completeness error relative to the largest score change (IG attributions sum to
    ``f(x) - f(baseline)``; discrete steps in the model make that approximate).
    """
    import torch
    from captum.attr import IntegratedGradients

    keys, extra_keys = list(inputs), list(extras)

    def wrapped(*tensors):
        batch = dict(zip(keys, tensors[: len(keys)], strict=True))
        batch.update(zip(extra_keys, tensors[len(keys) :], strict=True))
        return forward(batch)

    xs = tuple(inputs[k].float() for k in keys)
    bases = tuple(
        torch.zeros_like(x)
        if baselines is None or k not in baselines
        else torch.as_tensor(baselines[k], dtype=x.dtype).expand_as(x).contiguous()
        for k, x in zip(keys, xs, strict=True)
    )
    ig = IntegratedGradients(wrapped)
    attributions, delta = ig.attribute(
        xs,
        baselines=bases,
        additional_forward_args=tuple(extras[k] for k in extra_keys),
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    if not isinstance(attributions, tuple):
        attributions = (attributions,)
    with torch.no_grad():
        scores = forward({**dict(zip(keys, xs, strict=True)), **extras})
        base = forward({**dict(zip(keys, bases, strict=True)), **extras})
    scale = float((scores - base).abs().max().clamp(min=1e-6))
    rel = float(delta.abs().max()) / scale
    return {k: a.detach().cpu().numpy() for k, a in zip(keys, attributions, strict=True)}, rel


def mean_inputs(dataset, keys: Sequence[str], batch_size: int = 16) -> dict[str, Any]:
    """Mean of each input over the samples of ``dataset`` (shape (1, ...)): the reference
    subject that integrated gradients start from (``baseline="train_mean"``)."""
    import torch

    from brainfuse.methods.torch.data import eval_loader

    sums: dict[str, Any] = {}
    n = 0
    with torch.no_grad():
        for batch in eval_loader(dataset, batch_size):
            n += len(batch["y"])
            for k in keys:
                total = batch[k].float().sum(0, keepdim=True)
                sums[k] = total if k not in sums else sums[k] + total
    return {k: v / max(n, 1) for k, v in sums.items()}


def attribution_to_block(key: str, attr: np.ndarray) -> FoldBlock:
    """Per-sample attributions of one input (B, ...) -> a :class:`FoldBlock` (mean over samples
    of the per-sample magnitude and of the signed value)."""
    if key in ("fc", "sc"):  # (B, N, N): an edge is both symmetric entries
        edge = attr + np.swapaxes(attr, -1, -2)
        idx = np.arange(edge.shape[-1])
        edge[..., idx, idx] = 0.0
        per_sample, signed = np.abs(edge)[:, None], edge[:, None]
    elif key == "aec":  # (B, bands, N, N)
        edge = attr + np.swapaxes(attr, -1, -2)
        idx = np.arange(edge.shape[-1])
        edge[..., idx, idx] = 0.0
        per_sample, signed = np.abs(edge), edge
    elif key in ("timeseries", "fft"):  # (B, N, L)
        per_sample, signed = np.abs(attr).sum(-1)[:, None], attr.sum(-1)[:, None]
    elif key == "envelopes":  # (B, bands, N, L)
        per_sample, signed = np.abs(attr).sum(-1), attr.sum(-1)
    elif key == "band_power":  # (B, bands, N)
        per_sample, signed = np.abs(attr), attr
    else:
        raise ValueError(f"no attribution mapping for input {key!r}")
    return FoldBlock(per_sample.mean(0), signed.mean(0))


#: Batch keys that are attributed (the others, masks and indices, are passed along).
ATTRIBUTED_KEYS = ("fc", "sc", "timeseries", "fft", "band_power", "aec", "envelopes")


def torch_fold_blocks(
    model_path: str | Path,
    caches: Mapping[str, Any],
    test_subjects: set[str],
    positive: str,
    seed: int,
    n_steps: int = 32,
    batch_size: int = 8,
    train_subjects: set[str] | None = None,
    baseline: str = "zero",
    previous: str | None = None,
    catalog: Catalog | None = None,
    adjustment: InputAdjustment | None = None,
    val_subjects: set[str] | None = None,
) -> tuple[dict[str, FoldBlock] | None, dict[str, Any]]:
    """Integrated-gradients blocks of one fold's torch ``model.bin`` on its test samples.

    ``baseline``: ``zero`` (default) or ``train_mean`` (the mean input of the fold's training
    subjects; needs ``train_subjects``). Zero keeps the path inside what graph models see:
    scaling an FC matrix keeps its top-k edges, so the integral is smooth (on the demo the
    completeness error stays below 0.2), whereas the path from the mean FC changes the top-k
    graph along the way (errors up to 0.9) and recovered fewer planted parcels.

    ``previous``: the previous stage's ``model.bin`` as its ``metrics.json`` records it (a
    plugin may read it while building the module). ``catalog``: where the method is looked up
    (default: the built-in methods). ``adjustment``: the run's in-fold harmonisation and
    confounds, applied to the FC/SC matrices as in training (fitted on ``train_subjects``,
    applied to them, ``val_subjects`` and the test subjects).

    Returns ``(None, info)`` with ``info["reason"]`` when the model cannot be explained (a
    self-supervised final stage predicts with a linear probe that ``model.bin`` does not hold).
    """
    import torch

    from brainfuse.methods.torch.data import BrainDataset, eval_loader
    from brainfuse.methods.torch.harmonise_inputs import adjust_matrices
    from brainfuse.methods.torch.trained import TrainedStage
    from brainfuse.methods.torch.weights import read_model

    catalog = default_catalog() if catalog is None else catalog

    saved = read_model(model_path)
    if not saved.get("supervised", True):
        return None, {
            "reason": "the final stage is self-supervised; its predictions come from a linear "
            "probe on embeddings that model.bin does not store"
        }
    spec = catalog[saved["method"]]
    hp = saved["params"]
    keys = [k for k in saved["input_keys"] if k in ATTRIBUTED_KEYS]
    if not keys:
        return None, {"reason": f"no attributable inputs among {saved['input_keys']}"}

    def dataset_of(caches: Mapping[str, Any]) -> BrainDataset:
        return BrainDataset(
            caches,
            positive,
            modalities=spec.present(caches),  # an optional modality's cache may be absent
            fields=saved["input_keys"],
            length=hp.get("length", 200),
            eeg_length=hp.get("eeg_length", 200),
            seed=seed,
            standardize=hp.get("standardize", True),
        )

    dataset = dataset_of(caches)
    if adjustment is not None:
        roles = {
            "train": set(train_subjects or ()),
            "val": set(val_subjects or ()),
            "test": set(test_subjects),
        }
        adjusted, _ = adjust_matrices(caches, dataset.table, roles, adjustment)
        dataset = dataset_of(adjusted)
    train_set = dataset.subset(train_subjects, train=False) if train_subjects else None
    lit = TrainedStage.load(
        model_path, dataset, train_set=train_set, previous=previous, seed=seed, catalog=catalog
    ).module
    test = dataset.subset(test_subjects, train=False, transform=None)
    if len(test) == 0:
        return None, {"reason": "no test samples"}

    def forward(batch):
        logits = lit.logits(batch).float()
        return logits[:, 1] - logits[:, 0]

    if baseline == "train_mean" and train_set is not None and len(train_set):
        reference = mean_inputs(train_set, keys, batch_size)
    elif baseline in ("zero", "train_mean"):
        baseline, reference = "zero", None
    else:
        raise ValueError(f"baseline={baseline!r}: expected 'train_mean' or 'zero'")
    per_key: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    deltas = []
    torch.manual_seed(seed)
    for batch in eval_loader(test, batch_size):
        inputs = {k: batch[k] for k in keys}
        extras = {k: v for k, v in batch.items() if k not in keys and k not in ("y", "index")}
        attrs, delta = integrated_gradients(
            forward, inputs, extras, n_steps=n_steps, baselines=reference
        )
        deltas.append(delta)
        for k in keys:
            per_key[k].append(attrs[k])
    blocks = {k: attribution_to_block(k, np.concatenate(v)) for k, v in per_key.items()}
    return blocks, {
        "n_test": len(test),
        "ig_relative_completeness_error": float(max(deltas)),
        "baseline": baseline,
        "input_keys": list(saved["input_keys"]),
    }
