"""Fitting a scikit-learn baseline on one outer fold.

The samples of the fold's test subjects are touched once, after the model (and its ``C``) has
been fixed on the training and validation subjects. Site harmonisation and confound regression
(config ``harmonise``, ``confounds``) are fitted on the training subjects only, before the model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import make_pipeline

from brainfuse.core import atomic
from brainfuse.core.cache import Cache, read_cache
from brainfuse.core.metrics import binary_metrics
from brainfuse.core.samples import read_participants
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.baselines.estimators import fit_select, scores, tangent_space
from brainfuse.methods.baselines.features import SCALED_FEATURES, feature_extractor
from brainfuse.methods.baselines.harmonise import adjust_in_fold
from brainfuse.methods.request import StageRequest
from brainfuse.methods.spec import MethodSpec
from brainfuse.modalities import builtin_modalities
from brainfuse.provenance import stage_manifest, subjects_in, write_manifest

__all__ = ["adjust_features", "fit_baseline", "joint_samples"]


def joint_samples(caches: dict[str, Cache], modalities: tuple[str, ...]) -> pd.DataFrame:
    """Rows usable by a method: for one modality, that cache's rows (``row_<modality>`` index)."""
    (modality,) = modalities
    table = caches[modality].table.copy()
    table[f"row_{modality}"] = np.arange(len(table))
    return table


def fit_baseline(request: StageRequest, spec: MethodSpec) -> None:
    """Fit a scikit-learn baseline on ``request``'s fold (``C`` chosen by inner cross-validation
    over its training and validation subjects), predict
    its test samples once and write the outputs."""
    start = time.perf_counter()
    modalities = tuple(request.cache_paths)
    caches = {m: read_cache(request.cache_paths[m]) for m in modalities}
    samples = joint_samples(caches, modalities)
    x_all = feature_extractor(spec.features)(caches)[samples[f"row_{modalities[0]}"].to_numpy()]
    y_all = (samples["label"].astype(str) == str(request.positive)).astype(int).to_numpy()
    folds = read_folds(request.folds_path)
    roles = {
        r: samples["subject"].astype(str).isin(subjects_of(folds, request.fold, r)).to_numpy()
        for r in ("train", "val", "test")
    }
    tangent = spec.features == "tangent"
    x_all, adjusted, tangent_step = adjust_features(
        request.params, tuple(request.cache_paths), samples, x_all, roles["train"], tangent
    )
    model, c = fit_select(
        spec.estimator,
        x_all[roles["train"]],
        y_all[roles["train"]],
        x_all[roles["val"]],
        y_all[roles["val"]],
        request.seed,
        tangent=tangent and tangent_step is None,
        scale=spec.features in SCALED_FEATURES,
        groups_train=samples.loc[roles["train"], "subject"].to_numpy(),
        groups_val=samples.loc[roles["val"], "subject"].to_numpy(),
    )
    saved = model
    if tangent_step is not None:  # model.bin maps time series to predictions, as without it
        saved = make_pipeline(tangent_step, *(step for _, step in model.steps))
    test = roles["test"]
    y_score = scores(model, x_all[test])
    y_pred = model.predict(x_all[test])
    predictions = samples.loc[test, ["sample_id", "subject", "label"]].copy()
    predictions.insert(0, "method", request.method)
    predictions.insert(1, "fold", request.fold)
    predictions["y_true"], predictions["y_score"], predictions["y_pred"] = (
        y_all[test],
        y_score,
        y_pred,
    )
    metrics = {
        "method": request.method,
        "stage": request.stage,
        "fold": request.fold,
        "selected_C": c,
        "n_train": int(roles["train"].sum()),
        "n_val": int(roles["val"].sum()),
        "n_test": int(test.sum()),
        "seconds": time.perf_counter() - start,
        "format": "joblib",
        "adjustment": adjusted,
        **binary_metrics(y_all[test], y_pred, y_score),
    }
    outputs = request.outputs
    with atomic.atomic_path(outputs.model) as tmp:
        joblib.dump(saved, tmp)
    atomic.write_tsv(outputs.predictions, predictions)
    outputs.tables_dir.mkdir(parents=True, exist_ok=True)  # declared for every stage; empty here
    write_manifest(
        outputs.provenance_path,
        stage_manifest(
            method=request.method,
            stage=request.stage,
            fold=request.fold,
            seed=request.seed,
            params={k: v for k, v in request.params.items() if k != "num_threads"},
            cache_paths=request.cache_paths,
            folds_path=request.folds_path,
            previous=request.previous,
            subjects={
                "fit": subjects_in(samples.loc[roles["train"]]),
                "validation": subjects_in(samples.loc[roles["val"]]),
                "test": subjects_in(samples.loc[test]),
            },
            # the participants table is read only by the harmonisation and confounds
            extra_inputs={"participants": request.params["participants"]}
            if request.params.get("participants")
            else {},
            adjustment=adjusted if "fit_subjects" in adjusted else None,
        ),
    )
    atomic.write_json(outputs.metrics, metrics)


def adjust_features(
    params: Mapping[str, Any],
    modalities: Sequence[str],
    samples: pd.DataFrame,
    x_all: np.ndarray,
    train: np.ndarray,
    tangent: bool,
) -> tuple[np.ndarray, dict, object | None]:
    """Features after the in-fold harmonisation and confound regression of ``params``
    (``harmonise``, ``confounds``, ``participants``, ``participant_column``; none: unchanged),
    their record, and the tangent-space step fitted on the training samples when the features
    are time series (the adjustment then applies to the tangent vectors). Deterministic: the
    attribution step recomputes a fold's features with it.

    ``modalities`` are those the method reads: a QC field of another modality (``mean_fd``
    for EEG or SC) is skipped as a confound."""
    harmonise = params.get("harmonise") or {"method": "none"}
    confounds = tuple(params.get("confounds") or ())
    if harmonise["method"] == "none" and not confounds:
        return x_all, {"harmonise": "none", "confounds": []}, None
    tangent_step = None
    if tangent:  # harmonise the tangent vectors: the reference is fitted in the fold, as before
        tangent_step = tangent_space().fit(list(x_all[train]))
        x_all = tangent_step.transform(list(x_all))
    participants = None
    if params.get("participants"):
        participants = read_participants(params["participants"], params["participant_column"])
    # a QC field of a modality this method does not read (mean_fd for EEG or SC) is skipped
    read = set(modalities)
    absent_ok = {
        field
        for name, m in builtin_modalities().items()
        if name not in read
        for field in m.qc_fields
    }
    x_all, record = adjust_in_fold(
        x_all, samples, train, harmonise, confounds, participants, absent_ok
    )
    return x_all, record, tangent_step
