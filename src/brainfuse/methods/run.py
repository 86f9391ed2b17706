"""One training stage of one method on one outer fold.

The samples of the fold's test subjects are touched once, after the model (and its
hyper-parameters) has been fixed on the training and validation subjects.
"""

from __future__ import annotations

import logging
import time

import joblib
import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.cache import Cache, read_cache
from brainfuse.core.metrics import binary_metrics
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.baselines.estimators import fit_select, scores
from brainfuse.methods.catalog import FEATURES, METHODS, SCALED_FEATURES


def joint_samples(caches: dict[str, Cache], modalities: tuple[str, ...]) -> pd.DataFrame:
    """Rows usable by a method: for one modality, that cache's rows (``row_<modality>`` index)."""
    (modality,) = modalities
    table = caches[modality].table.copy()
    table[f"row_{modality}"] = np.arange(len(table))
    return table


def run_stage(
    method: str,
    stage: str,
    fold: int,
    cache_paths: dict[str, str],
    folds_path: str,
    positive: str,
    seed: int,
    out_model: str,
    out_metrics: str,
    out_predictions: str,
    params: dict | None = None,
    previous: str | None = None,
    checkpoint_dir: str | None = None,
    devices: int = 1,
) -> None:
    """Fit ``method``'s ``stage`` on ``fold``; write the model, its metrics and test predictions.

    Torch methods train with Lightning (:func:`brainfuse.methods.torch.runner.run_torch_stage`),
    checkpointing to ``checkpoint_dir`` and resuming from it when restarted.
    """
    spec = METHODS[method]
    if spec.family == "torch":
        from brainfuse.methods.torch.runner import run_torch_stage

        # The `lightning` package adds a console handler on import; its records belong in the
        # job's log file (the root logger), not in Snakemake's terminal output.
        logging.getLogger("lightning").handlers.clear()

        return run_torch_stage(
            method,
            stage,
            fold,
            params or {},
            cache_paths,
            folds_path,
            previous,
            positive,
            seed,
            out_model,
            out_metrics,
            out_predictions,
            checkpoint_dir,
            devices,
        )
    start = time.perf_counter()
    modalities = tuple(cache_paths)
    caches = {m: read_cache(cache_paths[m]) for m in modalities}
    samples = joint_samples(caches, modalities)
    x_all = FEATURES[spec.features](caches)[samples[f"row_{modalities[0]}"].to_numpy()]
    y_all = (samples["label"].astype(str) == str(positive)).astype(int).to_numpy()
    folds = read_folds(folds_path)
    roles = {
        r: samples["subject"].astype(str).isin(subjects_of(folds, fold, r)).to_numpy()
        for r in ("train", "val", "test")
    }
    model, c = fit_select(
        spec.estimator,
        x_all[roles["train"]],
        y_all[roles["train"]],
        x_all[roles["val"]],
        y_all[roles["val"]],
        seed,
        tangent=spec.features == "tangent",
        scale=spec.features in SCALED_FEATURES,
    )
    test = roles["test"]
    y_score = scores(model, x_all[test])
    y_pred = model.predict(x_all[test])
    predictions = samples.loc[test, ["sample_id", "subject", "label"]].copy()
    predictions.insert(0, "method", method)
    predictions.insert(1, "fold", fold)
    predictions["y_true"], predictions["y_score"], predictions["y_pred"] = (
        y_all[test],
        y_score,
        y_pred,
    )
    metrics = {
        "method": method,
        "stage": stage,
        "fold": fold,
        "selected_C": c,
        "n_train": int(roles["train"].sum()),
        "n_val": int(roles["val"].sum()),
        "n_test": int(test.sum()),
        "seconds": time.perf_counter() - start,
        "format": "joblib",
        **binary_metrics(y_all[test], y_pred, y_score),
    }
    with atomic.atomic_path(out_model) as tmp:
        joblib.dump(model, tmp)
    atomic.write_tsv(out_predictions, predictions)
    atomic.write_json(out_metrics, metrics)
