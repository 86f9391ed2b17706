"""One Lightning training stage of one torch method on one outer fold.

:func:`run_torch_stage` is what the ``train_stage`` rule runs for ``family == "torch"`` methods.
The fold's test subjects are read once, after training, with the model selected on the
validation subjects.

Restarts
--------
The run checkpoints to ``checkpoint_dir`` (not a Snakemake output, so Snakemake never deletes
it when a job fails):

* ``last.ckpt`` every ``checkpoint_every_n_steps`` optimiser steps and at the end of training:
  the resume point after a SIGKILL, an out-of-memory kill or a node failure;
* ``last.ckpt`` again when the process receives SIGTERM (SLURM time limit, ``scancel``,
  Snakemake interrupt): Lightning notices the signal, finishes the current batch, and the
  :class:`SaveOnSigterm` callback saves the state there; the process then exits with status 143.
  A signal during validation skips this save (validation outputs are not checkpointed), so
  the periodic ``last.ckpt`` is the resume point;
* ``best.ckpt``, the model with the best validation metric so far (model selection).

When ``last.ckpt`` exists and was written by a run with the same inputs (a fingerprint of the
method, stage, fold, resolved parameters, seed, devices, caches, fold file and previous stage),
the run resumes from it (``Trainer.fit(ckpt_path=...)``) and reports the step it resumed from as
``resumed_from_step``. A checkpoint of different inputs is discarded with a warning. Resuming is
exact: the checkpoint holds the model, optimiser, schedule, early-stopping and model-selection
state, the random-generator states and the position in the epoch (see
:class:`~.data.ResumableDataLoader`), and augmentations are keyed by (seed, epoch, sample), so a
resumed run trains on the same batches with the same dropout masks and ends with the same
weights as an uninterrupted one (on CPU; on GPU up to non-deterministic kernels). The
checkpoints are deleted after the outputs are written unless ``keep_checkpoints`` is set; CSV
logs (and TensorBoard logs, when installed) stay in ``checkpoint_dir/logs``.

With ``devices > 1`` the stage runs DDP (NCCL on GPU, gloo on CPU); Lightning starts the other
ranks by re-running the current script (``sys.argv``) with ``LOCAL_RANK`` set, so the entry
point must be a script file (Snakemake's ``script:`` is), not ``python -c``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer, seed_everything
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from .. import atomic
from ..cache import files_hash, read_cache
from ..folds import read_folds, subjects_of
from ..metrics import binary_metrics
from .augment import build_augmentations
from .data import BrainDataset, eval_loader, train_loader
from .encoders import BrainClassifier, build_encoder, encoder_arguments
from .module import MONITORS, LitClassifier
from .registry import COMMON_PARAMS, DEFAULT_PARAMS, TORCH_METHODS, method_params

log = logging.getLogger("brainfuse")

LAST = "last.ckpt"
BEST = "best.ckpt"
MODEL_FORMAT = "brainfuse-torch-1"

# Parameters that do not change what is trained; a resumed run may change them.
_OPERATIONAL = {"num_threads", "num_workers", "keep_checkpoints", "checkpoint_every_n_steps"}

# Messages Lightning emits for choices made on purpose here.
_EXPECTED_WARNINGS = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*all_gather is deprecated.*",  # inside Lightning's DDP all_gather (torch 2.13)
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # inside Lightning (torch 2.13)
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that a kill cannot leave half-done.

    Lightning's own writer stages the file in the system temporary directory and moves it into
    place, which is a copy (not an atomic rename) when that directory is on another file system,
    as it often is on clusters; this one writes beside the target and renames.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic.atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class PeriodicCheckpoint(Callback):
    """Save ``last.ckpt`` every ``every_n_steps`` optimiser steps.

    A step that ends an epoch is saved at the end of that epoch instead, after its validation:
    Lightning does not re-run the validation of an epoch resumed from its last batch, so a
    checkpoint taken between the two would lose that validation's early-stopping and
    model-selection update.
    """

    def __init__(self, path: str | Path, every_n_steps: int) -> None:
        self.path, self.every_n_steps = str(path), max(1, int(every_n_steps))
        self._pending = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._pending = True
        else:
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending:
            self._pending = False
            trainer.save_checkpoint(self.path)


class SaveOnSigterm(Callback):
    """Save ``last.ckpt`` when Lightning stops training because of SIGTERM.

    Lightning's signal connector raises :class:`SIGTERMException` at the end of the batch during
    which SIGTERM arrived (on every DDP rank at the same step); this callback writes the
    checkpoint then, unless the signal interrupted validation.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.saved_step: int | None = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException) and trainer.training:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step
            log.warning("SIGTERM: saved %s at step %d", self.path, trainer.global_step)


def load_previous(model: torch.nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a previous stage's ``model.bin`` into the matching parameters of ``model``.

    Keys present in both with the same shape are loaded (``strict=False``); the rest are
    reported.

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


def check_params(method: str, hp: dict[str, Any]) -> None:
    """Refuse parameters no part of the stage uses (typos would otherwise pass silently)."""
    known = set(COMMON_PARAMS) | set(DEFAULT_PARAMS.get(method, {})) | {"encoder"}
    known |= encoder_arguments(hp["encoder"])
    unknown = sorted(set(hp) - known)
    if unknown:
        raise ValueError(f"methods.{method}.params: unknown keys {unknown}")
    if hp["monitor"] not in MONITORS:
        raise ValueError(f"monitor={hp['monitor']!r}; expected one of {sorted(MONITORS)}")


def _fingerprint(
    method: str,
    stage: str,
    fold: int,
    hp: dict[str, Any],
    seed: int,
    positive: str,
    devices: int,
    cache_paths: dict[str, str],
    folds_path: str,
    previous: str | None,
) -> str:
    caches = {}
    for modality, path in sorted(cache_paths.items()):
        stat = os.stat(path)
        caches[modality] = [stat.st_size, stat.st_mtime_ns]
    extra = {
        "method": method,
        "stage": stage,
        "fold": fold,
        "params": {k: v for k, v in hp.items() if k not in _OPERATIONAL},
        "seed": seed,
        "positive": positive,
        "devices": devices,
        "caches": caches,
    }
    files = [folds_path] + ([previous] if previous else [])
    return files_hash(files, extra)


def _resume_point(ckpt_dir: Path, fingerprint: str, rank: int) -> tuple[str | None, int]:
    """``(path, step)`` of a checkpoint to resume from, or ``(None, 0)``; rank 0 discards stale
    or unreadable checkpoints."""
    last = ckpt_dir / LAST
    if last.exists():
        try:
            state = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as err:
            log.warning("cannot read %s (%s); starting afresh", last, err)
            state = None
        if state is not None and state.get("brainfuse", {}).get("fingerprint") == fingerprint:
            return str(last), int(state.get("global_step", 0))
        if state is not None:
            log.warning("%s was written for other inputs or parameters; starting afresh", last)
    if rank == 0:
        _remove_checkpoints(ckpt_dir)
    return None, 0


def _remove_checkpoints(ckpt_dir: Path) -> None:
    for path in ckpt_dir.glob("*.ckpt"):
        path.unlink()
    for path in ckpt_dir.glob(".*.ckpt*"):  # temporary files of interrupted writes
        path.unlink()


def _loggers(ckpt_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(ckpt_dir), name="logs", version=0)]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(
            TensorBoardLogger(save_dir=str(ckpt_dir), name="logs", version=0, sub_dir="tensorboard")
        )
    except (ImportError, ModuleNotFoundError):
        pass
    return loggers


@contextmanager
def _process_settings(num_threads: int | None):
    """Restore process-wide torch settings that training changes."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        with warnings.catch_warnings():
            for message in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


@torch.no_grad()
def predict_proba(
    model: BrainClassifier,
    dataset: BrainDataset,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Positive-class probabilities of every sample of ``dataset``, in order."""
    model = model.to(device).eval()
    out = []
    for batch in eval_loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(model(batch).float().softmax(-1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def run_torch_stage(
    method: str,
    stage: str,
    fold: int,
    params: dict,
    cache_paths: dict[str, str],
    folds_path: str,
    previous: str | None,
    positive: str,
    seed: int,
    out_model: str,
    out_metrics: str,
    out_predictions: str,
    checkpoint_dir: str,
    devices: int = 1,
    *,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Train ``method``'s ``stage`` on ``fold``; write the model, its metrics and test predictions.

    Parameters
    ----------
    method : str
        A key of :data:`~.registry.TORCH_METHODS`.
    stage : str
        Stage name (recorded; every stage trains the classifier with its own parameters).
    fold : int
        Outer fold of ``folds_path``.
    params : dict
        Overrides of the method's defaults (see :func:`~.registry.method_params`).
    cache_paths : dict of str to str
        Cache of each modality the method needs.
    folds_path : str
        ``folds.tsv``; train/val/test subjects of ``fold``.
    previous : str, optional
        The previous stage's ``model.bin``; its matching weights initialise the model.
    positive : str
        Label of the positive class.
    seed : int
        Seed of initialisation, shuffling, augmentation and dropout.
    out_model, out_metrics, out_predictions : str
        Outputs (written atomically by global rank 0 only).
    checkpoint_dir : str
        Checkpoints and logs of this stage (see the module docstring); not a rule output.
    devices : int
        Processes/GPUs; ``> 1`` trains with DDP.
    callbacks : sequence of Callback
        Extra Lightning callbacks (tests and instrumentation).
    """
    start = time.perf_counter()
    spec = TORCH_METHODS[method]
    hp = method_params(method, params)
    check_params(method, hp)
    ckpt_dir = Path(checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set by Lightning for the ranks it starts
    cuda = torch.cuda.is_available()
    with _process_settings(hp["num_threads"]):
        seed_everything(seed, workers=True, verbose=False)
        caches = {m: read_cache(cache_paths[m]) for m in spec.modalities}
        augment = build_augmentations(hp["augment"])
        full = BrainDataset(
            caches,
            positive,
            modalities=spec.modalities,
            fields=None,
            length=hp["length"],
            eeg_length=hp["eeg_length"],
            seed=seed,
            standardize=hp["standardize"],
        )
        encoder = build_encoder(hp["encoder"], full.n_nodes, **_encoder_kwargs(hp))
        model = BrainClassifier(encoder, 2, hidden=hp["head_hidden"], dropout=hp["dropout"])
        # Serve only what the encoder and the augmentations read (fft, EEG, ... cost time).
        full = full.with_fields([*model.input_keys, *(augment.requires if augment else ())])
        previous_report = load_previous(model, previous) if previous else None

        folds = read_folds(folds_path)
        roles = {r: subjects_of(folds, fold, r) for r in ("train", "val", "test")}
        train_set = full.subset(roles["train"], train=True, transform=augment)
        val_set = full.subset(roles["val"], train=False, transform=None)
        if len(train_set) == 0:
            raise ValueError(f"fold {fold}: no training samples with {', '.join(spec.modalities)}")
        has_val = len(val_set) > 0
        if not has_val:
            log.warning("fold %d: no validation samples; the last epoch's model is used", fold)

        counts = np.bincount(train_set.labels, minlength=2).astype(float)
        weights = (
            (counts.sum() / (2 * np.maximum(counts, 1))).tolist() if hp["class_weighted"] else None
        )
        fingerprint = _fingerprint(
            method,
            stage,
            fold,
            hp,
            seed,
            positive,
            devices,
            {m: cache_paths[m] for m in spec.modalities},
            folds_path,
            previous,
        )
        lit = _StageModule(model, train_set, val_set if has_val else None, hp, weights, fingerprint)
        ckpt_path, resumed_from_step = _resume_point(ckpt_dir, fingerprint, rank)
        if ckpt_path:
            log.info(
                "resuming %s/%s fold %d from %s (step %d)",
                method,
                stage,
                fold,
                ckpt_path,
                resumed_from_step,
            )

        monitor, mode = hp["monitor"], MONITORS[hp["monitor"]]
        best_cb = (
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename=BEST.removesuffix(".ckpt"),
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                save_last=False,
                auto_insert_metric_name=False,
                enable_version_counter=False,
                # on_train_epoch_end is skipped for an epoch resumed from its last batch;
                # on_validation_end is not.
                save_on_train_epoch_end=False,
            )
            if has_val
            else None
        )
        last_cb = PeriodicCheckpoint(ckpt_dir / LAST, int(hp["checkpoint_every_n_steps"]))
        sigterm_cb = SaveOnSigterm(ckpt_dir / LAST)
        all_callbacks: list[Callback] = [last_cb, sigterm_cb, *callbacks]
        if has_val:
            all_callbacks += [
                best_cb,
                EarlyStopping(
                    monitor=monitor,
                    mode=mode,
                    patience=int(hp["patience"]),
                    check_on_train_epoch_end=False,
                ),
            ]
        precision = hp["precision"] if cuda else "32-true"
        world = max(1, int(devices))
        steps_per_epoch = math.ceil(math.ceil(len(train_set) / world) / int(hp["batch_size"]))
        trainer = Trainer(
            accelerator="auto",
            devices=world,
            strategy="ddp" if world > 1 else "auto",
            # Lightning starts the ranks itself; SLURM only provides the allocation (and no
            # Lightning auto-requeue behind Snakemake's back).
            plugins=[LightningEnvironment(), AtomicCheckpointIO()],
            precision=precision,
            max_epochs=int(hp["epochs"]),
            min_epochs=int(hp["min_epochs"]),
            callbacks=all_callbacks,
            logger=_loggers(ckpt_dir),
            default_root_dir=str(ckpt_dir),
            enable_progress_bar=sys.stderr.isatty(),
            enable_model_summary=False,
            deterministic=True if not cuda else "warn",
            benchmark=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if has_val else 0,
            log_every_n_steps=max(1, min(50, steps_per_epoch)),
            use_distributed_sampler=False,
        )
        try:
            trainer.fit(lit, ckpt_path=ckpt_path, weights_only=False)
        except SIGTERMException as err:
            step = sigterm_cb.saved_step
            log.warning(
                "interrupted by SIGTERM at step %d; %s",
                trainer.global_step,
                f"checkpoint saved at step {step}"
                if step is not None
                else "resume from the last periodic checkpoint",
            )
            raise SystemExit(128 + signal.SIGTERM) from err
        if trainer.global_rank != 0:
            return

        best_path = best_cb.best_model_path if best_cb is not None else ""
        best_step = trainer.global_step
        if best_path:
            best = torch.load(best_path, map_location="cpu", weights_only=False)
            lit.load_state_dict(best["state_dict"])
            best_step = int(best["global_step"])
        test_set = full.subset(roles["test"], train=False, transform=None)
        device = torch.device("cuda") if cuda else torch.device("cpu")
        y_score = predict_proba(lit.model, test_set, int(hp["batch_size"]), device)
        y_true = test_set.labels.astype(int)
        y_pred = (y_score >= 0.5).astype(int)

        predictions = test_set.table[["sample_id", "subject", "label"]].copy()
        predictions.insert(0, "method", method)
        predictions.insert(1, "fold", fold)
        predictions["y_true"], predictions["y_score"] = y_true, y_score
        predictions["y_pred"] = y_pred
        best_score = best_cb.best_model_score if best_cb is not None else None
        metrics = {
            "method": method,
            "stage": stage,
            "fold": fold,
            "format": "torch",
            "encoder": hp["encoder"],
            "monitor": monitor,
            "best_val": None if best_score is None else float(best_score),
            "best_step": best_step,
            "epochs": int(trainer.current_epoch),
            "steps": int(trainer.global_step),
            "resumed_from_step": resumed_from_step,
            "early_stopped": bool(trainer.should_stop),
            "devices": world,
            "accelerator": "cuda" if cuda else "cpu",
            "precision": str(precision),
            "n_train": len(train_set),
            "n_val": len(val_set),
            "n_test": len(test_set),
            "missing_modalities": full.missing,
            "previous": previous,
            "previous_keys": previous_report,
            "seconds": time.perf_counter() - start,
            **_test_metrics(y_true, y_pred, y_score),
        }
        saved = {
            "format": MODEL_FORMAT,
            "method": method,
            "stage": stage,
            "fold": fold,
            "encoder": hp["encoder"],
            "n_nodes": full.n_nodes,
            "params": hp,
            "input_keys": list(lit.model.input_keys),
            "state_dict": lit.model.state_dict(),
        }
        with atomic.atomic_path(out_model) as tmp:
            torch.save(saved, tmp)
        atomic.write_tsv(out_predictions, predictions)
        atomic.write_json(out_metrics, metrics)
        if not hp["keep_checkpoints"]:
            _remove_checkpoints(ckpt_dir)


def _encoder_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(hp)
    if (
        hp["encoder"] == "temporal_transformer"
        and hp.get("tokens") == "roi"
        and hp.get("in_len") is None
    ):
        # ROI tokens hold the whole window, or its spectrum
        key = hp.get("input_key", "timeseries")
        kwargs["in_len"] = hp["length"] if key == "timeseries" else hp["length"] // 2 + 1
    return kwargs


def _test_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> dict:
    if len(y_true) == 0:
        return {
            k: math.nan
            for k in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")
        }
    return binary_metrics(y_true, y_pred, y_score)


class _StageModule(LitClassifier):
    """:class:`LitClassifier` that builds its loaders once the rank and world size are known."""

    def __init__(
        self,
        model: BrainClassifier,
        train_set: BrainDataset,
        val_set: BrainDataset | None,
        hp: dict[str, Any],
        class_weights: list[float] | None,
        fingerprint: str,
    ) -> None:
        super().__init__(
            model,
            lr=hp["lr"],
            weight_decay=hp["weight_decay"],
            optimizer=hp["optimizer"],
            scheduler=hp["scheduler"],
            warmup_epochs=hp["warmup_epochs"],
            min_lr_ratio=hp["min_lr_ratio"],
            label_smoothing=hp["label_smoothing"],
            class_weights=class_weights,
            fingerprint=fingerprint,
            freeze_encoder=hp["freeze_encoder"],
        )
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.num_workers = int(hp["batch_size"]), int(hp["num_workers"])
        self.epochs = int(hp["epochs"])

    def train_dataloader(self) -> DataLoader:
        return train_loader(
            self.train_set,
            self.batch_size,
            self.train_set.seed,
            self.global_rank,
            self.trainer.world_size,
            self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return eval_loader(
            self.val_set,
            self.batch_size,
            self.global_rank,
            self.trainer.world_size,
            self.num_workers,
        )

    def total_steps(self) -> int:
        per_rank = math.ceil(len(self.train_set) / self.trainer.world_size)
        return self.epochs * math.ceil(per_rank / self.batch_size)


def read_model(path: str | Path) -> dict[str, Any]:
    """A ``model.bin`` written by :func:`run_torch_stage` (state dict, params, encoder name)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FORMAT} model file")
    return saved


def rebuild_model(saved: dict[str, Any]) -> BrainClassifier:
    """The trained :class:`BrainClassifier` of a :func:`read_model` result."""
    hp = saved["params"]
    encoder = build_encoder(saved["encoder"], int(saved["n_nodes"]), **_encoder_kwargs(hp))
    model = BrainClassifier(encoder, 2, hidden=hp["head_hidden"], dropout=hp["dropout"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def describe(path: str | Path) -> str:
    """One line about a model file (for logs and reports)."""
    saved = read_model(path)
    n = sum(v.numel() for v in saved["state_dict"].values())
    return json.dumps(
        {
            "method": saved["method"],
            "stage": saved["stage"],
            "fold": saved["fold"],
            "encoder": saved["encoder"],
            "parameters": int(n),
        }
    )


__all__ = [
    "SaveOnSigterm",
    "check_params",
    "describe",
    "load_previous",
    "predict_proba",
    "read_model",
    "rebuild_model",
    "run_torch_stage",
]
