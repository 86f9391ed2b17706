"""Attributions of one method's final-stage models over the outer folds."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from brainfuse.core.atlas import known_networks
from brainfuse.explain.blocks import BLOCK_MODALITY, BlockInfo, MethodAttribution
from brainfuse.explain.gradients import torch_fold_blocks
from brainfuse.explain.linear import ATTRIBUTED_FEATURES, linear_blocks
from brainfuse.explain.routing import routing_summary
from brainfuse.methods.catalog import Catalog, default_catalog

log = logging.getLogger("brainfuse")


def _cache_info(cache, modality: str) -> BlockInfo:
    meta = cache.metadata
    if modality == "eeg":
        nodes = list(meta.get("node_names") or meta.get("roi_names") or [])
    else:
        nodes = list(meta.get("roi_names") or [])
    if not nodes:
        key = {"fmri": "fc", "sc": "sc", "eeg": "aec"}[modality]
        nodes = [f"node_{i}" for i in range(cache.arrays[key].shape[-1])]
    # the atlas' network labels, where the cache has them for these nodes (not EEG channels)
    networks = known_networks(meta.get("roi_networks"), len(nodes))
    bands = list(meta.get("bands") or [""]) if modality == "eeg" else [""]
    return BlockInfo(nodes=nodes, networks=list(networks), bands=bands)


def _block_info(name: str, infos: Mapping[str, BlockInfo]) -> BlockInfo:
    info = infos[BLOCK_MODALITY[name]]
    if name in ("fc", "sc", "timeseries", "fft"):
        return BlockInfo(info.nodes, info.networks, [""])
    return info


def explain_method(
    method: str,
    model_paths: Sequence[str],
    previous_paths: Sequence[str],
    routing_paths: Sequence[str],
    cache_paths: Mapping[str, str],
    folds_path: str,
    positive: str,
    seed: int,
    n_steps: int = 32,
    baseline: str = "zero",
    catalog: Catalog | None = None,
    adjustment: Mapping[str, Any] | None = None,
) -> MethodAttribution:
    """Attributions of ``method``'s final-stage models of every fold.

    Parameters
    ----------
    method : str
        A method of ``catalog``.
    model_paths : sequence of str
        The final stage's ``model.bin`` of each fold, in fold order.
    previous_paths : sequence of str
        The previous stage's ``model.bin`` of each fold, in fold order (a stage plugin may read
        it while building); empty for a method with one stage.
    routing_paths : sequence of str
        The final stage's ``routing.tsv`` of each fold (M3D-BFS); empty for other methods.
    cache_paths : mapping of str to str
        Modality to its Parquet cache.
    folds_path : str
        ``folds.tsv``.
    positive : str
        The positive class label.
    seed : int
        The run's seed.
    n_steps : int
        Integrated-gradients steps of torch models.
    baseline : str
        The integrated-gradients reference of torch models (see :func:`torch_fold_blocks`).
    catalog : Catalog, optional
        Where ``method`` is looked up (default: the built-in methods).
    adjustment : mapping, optional
        The run's in-fold harmonisation and confounds (``harmonise``, ``confounds``,
        ``participants``, ``participant_column``, as the training jobs get them): each fold's
        features are adjusted as its model saw them (fitted again on the same training
        subjects, which gives the same fit) before they are explained.

    Returns
    -------
    MethodAttribution
    """
    from brainfuse.core.cache import read_cache
    from brainfuse.folds import read_folds

    catalog = default_catalog() if catalog is None else catalog
    spec = catalog[method]
    caches = {m: read_cache(p) for m, p in cache_paths.items()}
    infos = {m: _cache_info(c, m) for m, c in caches.items()}
    folds = read_folds(folds_path)
    if spec.family == "sklearn" and spec.estimator == "majority":
        return MethodAttribution(
            method,
            "none",
            list(range(len(model_paths))),
            {},
            {},
            ["a constant prediction (the majority class) has no biomarkers"],
        )
    if spec.family == "sklearn" and spec.features not in ATTRIBUTED_FEATURES:
        return MethodAttribution(
            method,
            "none",
            list(range(len(model_paths))),
            {},
            {},
            [f"no mapping of the features {spec.features!r} onto parcels or edges"],
        )
    if spec.family == "sklearn":
        result = _linear_attribution(
            method, spec.features, model_paths, caches, infos, folds, adjustment or {}
        )
    else:
        previous = list(previous_paths) or [None] * len(model_paths)
        result = _torch_attribution(
            method,
            model_paths,
            previous,
            caches,
            folds,
            positive,
            seed,
            n_steps,
            baseline,
            catalog,
            adjustment or {},
        )
        routing = routing_summary(routing_paths)
        if routing is not None:
            result.extra["routing"] = routing
    result.info = {name: _block_info(name, infos) for name in result.blocks}
    return result


def _linear_attribution(
    method: str,
    features: str,
    model_paths: Sequence[str],
    caches: Mapping[str, Any],
    infos: Mapping[str, BlockInfo],
    folds: pd.DataFrame,
    adjustment: Mapping[str, Any],
) -> MethodAttribution:
    """Haufe patterns of the linear baseline of every fold (on its adjusted features, with
    ``adjustment``)."""
    import joblib
    from sklearn.pipeline import make_pipeline

    from brainfuse.folds import subjects_of
    from brainfuse.methods.baselines.features import SCALED_FEATURES, feature_extractor
    from brainfuse.methods.baselines.fit import adjust_features, joint_samples

    result = MethodAttribution(method, "haufe", list(range(len(model_paths))), {}, {})
    result.extra["folds"] = {}
    modalities = tuple(caches)
    samples = joint_samples(caches, modalities)
    x_all = feature_extractor(features)(caches)[samples[f"row_{modalities[0]}"].to_numpy()]
    subjects = samples["subject"].astype(str)
    info = infos[modalities[0]]
    adjusted = False
    for fold, path in zip(result.folds, model_paths, strict=True):
        fit_subjects = subjects_of(folds, fold, "train") | subjects_of(folds, fold, "val")
        rows = subjects.isin(fit_subjects).to_numpy()
        model = joblib.load(path)
        x_fold, record, tangent_step = adjust_features(
            adjustment,
            modalities,
            samples,
            x_all,
            subjects.isin(subjects_of(folds, fold, "train")).to_numpy(),
            features == "tangent",
        )
        adjusted = adjusted or "fit_subjects" in record
        if tangent_step is not None:  # model.bin starts with that step; x_fold is after it
            model = make_pipeline(*(step for _, step in model.steps[1:]))
        fold_blocks = linear_blocks(model, x_fold[rows], features, info.n_nodes, len(info.bands))
        if fold_blocks is None:
            result.notes.append(f"fold {fold}: the model has no linear weights")
            continue
        result.extra["folds"][fold] = {"n_fit": int(rows.sum())}
        for name, block in fold_blocks.items():
            result.blocks.setdefault(name, {})[fold] = block
    result.notes.append(
        "Haufe activation patterns (cov(X) w / var(Xw)) on each fold's training and "
        "validation subjects, the data the final model was fitted on, in units of each "
        "feature's SD (the pattern of the same model on z-scored features)"
        + (
            "; X is the tangent-space embedding of the FC (reference fitted in the fold), "
            "so edges are tangent-space coordinates"
            if features == "tangent"
            else "; X is the standardised features (the model's own scaler)"
            if features in SCALED_FEATURES
            else ""
        )
        + (
            "; the features are those the model was fitted on, after the fold's ComBat and "
            "confound regression"
            if adjusted
            else ""
        )
    )
    return result


def _torch_attribution(
    method: str,
    model_paths: Sequence[str],
    previous_paths: Sequence[str | None],
    caches: Mapping[str, Any],
    folds: pd.DataFrame,
    positive: str,
    seed: int,
    n_steps: int,
    baseline: str,
    catalog: Catalog,
    adjustment: Mapping[str, Any],
) -> MethodAttribution:
    """Integrated gradients of the torch model of every fold (its FC/SC inputs adjusted as in
    training, with ``adjustment``)."""
    from brainfuse.folds import subjects_of
    from brainfuse.methods.torch.harmonise_inputs import input_adjustment

    result = MethodAttribution(
        method, "integrated_gradients", list(range(len(model_paths))), {}, {}
    )
    result.extra["folds"] = {}
    for fold, path, previous in zip(result.folds, model_paths, previous_paths, strict=True):
        try:
            fold_blocks, info = torch_fold_blocks(
                path,
                caches,
                subjects_of(folds, fold, "test"),
                positive,
                seed,
                n_steps,
                train_subjects=subjects_of(folds, fold, "train"),
                baseline=baseline,
                previous=previous,
                catalog=catalog,
                adjustment=input_adjustment(adjustment),
                val_subjects=subjects_of(folds, fold, "val"),
            )
        except Exception as err:  # one model the attribution cannot handle must not stop
            # the report; the reason is logged with its traceback and shown on the page
            log.exception("%s fold %d: attribution failed", method, fold)
            fold_blocks, info = None, {"reason": f"attribution failed ({err!r})"}
        result.extra["folds"][fold] = info
        if fold_blocks is None:
            result.notes.append(f"fold {fold}: {info['reason']}")
            continue
        for name, block in fold_blocks.items():
            result.blocks.setdefault(name, {})[fold] = block
    if not result.blocks:
        result.kind = "none"
    else:
        reference = "a zero input" if baseline == "zero" else "the training subjects' mean input"
        result.notes.append(
            f"integrated gradients (captum, {n_steps} steps, from {reference}) of the "
            "positive-class log-odds on each fold's test samples; mean |attribution| over "
            "samples"
        )
    return result
