"""One Lightning training stage of one torch method on one outer fold.

:func:`run_torch_stage` is what the ``train_stage`` rule runs for ``family == "torch"`` methods.
What the stage trains comes from its plugin (:func:`~.stages.plugin_for`: a
:class:`~.module.StageModule` and whether the stage is supervised); everything else - data,
checkpoints, resume, model selection, evaluation and outputs - is here, the same for every
stage. The fold's test subjects are read once, after training, with the model selected on the
validation subjects: a supervised stage predicts them with its classifier, a self-supervised
stage with a linear probe on its frozen embeddings (:func:`~.stages.linear_probe`).

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
from collections.abc import Callable, Sequence
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

from brainfuse.core import atomic
from brainfuse.core.cache import files_hash, read_cache
from brainfuse.core.metrics import binary_metrics
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.torch.augment import build_augmentations
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.encoders import BrainClassifier, encoder_arguments
from brainfuse.methods.torch.module import MONITORS, StageModule
from brainfuse.methods.torch.plugins import (
    StageContext,
    StagePlugin,
    build_classifier_model,
    embeddings,
    linear_probe,
    plugin_for,
)
from brainfuse.methods.torch_registry import (
    COMMON_PARAMS,
    DEFAULT_PARAMS,
    PLUGIN_MODULES,
    TORCH_METHODS,
    method_params,
)

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


def check_params(method: str, hp: dict[str, Any], supervised: bool = True) -> None:
    """Refuse parameters no part of the stage uses (typos would otherwise pass silently).

    Known keys: :data:`~.registry.COMMON_PARAMS`, the method's defaults (and those of its
    ``per_stage`` entries) and, for methods without plugins, the encoder's arguments.
    """
    defaults = DEFAULT_PARAMS.get(method, {})
    known = set(COMMON_PARAMS) | set(defaults) | {"encoder"}
    for entry in (defaults.get("per_stage") or {}).values():
        known |= set(entry)
    if method not in PLUGIN_MODULES:
        known |= encoder_arguments(hp["encoder"])
    unknown = sorted(set(hp) - known)
    if unknown:
        raise ValueError(f"methods.{method}.params: unknown keys {unknown}")
    if hp["monitor"] not in MONITORS:
        raise ValueError(f"monitor={hp['monitor']!r}; expected one of {sorted(MONITORS)}")
    if not supervised and hp["monitor"] != "val_loss":
        raise ValueError(
            f"monitor={hp['monitor']!r}: a self-supervised stage is selected on val_loss"
        )


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
    model: BrainClassifier | StageModule,
    dataset: BrainDataset,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Positive-class probabilities of every sample of ``dataset``, in order (a
    :class:`StageModule` predicts with its ``logits``)."""
    model = model.to(device).eval()
    forward = model.logits if isinstance(model, StageModule) else model
    out = []
    for batch in eval_loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(forward(batch).float().softmax(-1)[:, 1].cpu())
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
        Stage name: selects the stage's plugin (:func:`~.stages.plugin_for`) and its
        ``per_stage`` parameters.
    fold : int
        Outer fold of ``folds_path``.
    params : dict
        Overrides of the method's defaults (see :func:`~.registry.method_params`).
    cache_paths : dict of str to str
        Cache of each modality the method needs.
    folds_path : str
        ``folds.tsv``; train/val/test subjects of ``fold``.
    previous : str, optional
        The previous stage's ``model.bin``; the stage module initialises from it
        (:meth:`~.module.StageModule.load_previous`).
    positive : str
        Label of the positive class.
    seed : int
        Seed of initialisation, shuffling, augmentation and dropout.
    out_model, out_metrics, out_predictions : str
        Outputs (written atomically by global rank 0 only). Extra tables of the stage module
        (:meth:`~.module.StageModule.test_extras`) are written beside ``out_metrics``.
    checkpoint_dir : str
        Checkpoints and logs of this stage (see the module docstring); not a rule output.
    devices : int
        Processes/GPUs; ``> 1`` trains with DDP.
    callbacks : sequence of Callback
        Extra Lightning callbacks (tests and instrumentation).
    """
    start = time.perf_counter()
    spec = TORCH_METHODS[method]
    plugin = plugin_for(method, stage)
    hp = method_params(method, params, stage)
    check_params(method, hp, plugin.supervised)
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
            optional=spec.optional,
        )
        folds = read_folds(folds_path)
        roles = {r: subjects_of(folds, fold, r) for r in ("train", "val", "test")}
        train_plain = full.subset(roles["train"], train=False, transform=None)
        if len(train_plain) == 0:
            raise ValueError(f"fold {fold}: no training samples with {', '.join(spec.modalities)}")
        counts = np.bincount(train_plain.labels, minlength=2).astype(float)
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
        context = StageContext(
            method=method,
            stage=stage,
            fold=fold,
            seed=seed,
            hp=hp,
            dataset=full,
            train_set=train_plain,
            class_weights=weights,
            previous=previous,
        )
        lit = _build(plugin, context, fingerprint)
        previous_report = lit.load_previous(previous) if previous else None
        lit.previous_report = previous_report
        # Serve only what the stage and the augmentations read (fft, EEG, ... cost time).
        full = full.with_fields([*lit.input_keys, *(augment.requires if augment else ())])
        train_set = full.subset(roles["train"], train=True, transform=augment)
        val_set = full.subset(roles["val"], train=False, transform=None)
        has_val = len(val_set) > 0
        if not has_val:
            log.warning("fold %d: no validation samples; the last epoch's model is used", fold)
        lit.attach(
            train_set,
            val_set if has_val else None,
            int(hp["batch_size"]),
            int(hp["num_workers"]),
            int(hp["epochs"]),
        )
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
        device = torch.device("cuda") if cuda else torch.device("cpu")
        batch_size = int(hp["batch_size"])
        selection: dict[str, Any] = {}
        if has_val:
            with torch.no_grad():
                selection = lit.to(device).eval().select_on_validation(val_set, batch_size, device)
        test_set = full.subset(roles["test"], train=False, transform=None)
        evaluation: dict[str, Any]
        if plugin.supervised:
            y_score = predict_proba(lit, test_set, batch_size, device)
            evaluation = {"evaluation": "classifier"}
        else:
            # The probe reads the training subjects without augmentation.
            x = {
                role: embeddings(lit, data, batch_size, device)
                for role, data in (
                    ("train", full.subset(roles["train"], train=False, transform=None)),
                    ("val", val_set),
                    ("test", test_set),
                )
            }
            y_score, probe_c = linear_probe(
                x["train"],
                train_set.labels,
                x["val"],
                val_set.labels,
                x["test"],
                seed,
            )
            evaluation = {
                "evaluation": "linear_probe",
                "probe_C": probe_c,
                "embedding_dim": int(x["train"].shape[1]),
            }
        y_true = test_set.labels.astype(int)
        y_pred = (y_score >= 0.5).astype(int)
        with torch.no_grad():
            extra_metrics, extra_tables = (
                lit.to(device).eval().test_extras(test_set, batch_size, device)
            )

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
            **evaluation,
            **selection,
            **_test_metrics(y_true, y_pred, y_score),
            **extra_metrics,
        }
        saved = {
            "format": MODEL_FORMAT,
            "method": method,
            "stage": stage,
            "fold": fold,
            "encoder": hp["encoder"],
            "n_nodes": full.n_nodes,
            "params": hp,
            "supervised": plugin.supervised,
            "input_keys": list(lit.input_keys),
            "state_dict": lit.model.state_dict(),
        }
        with atomic.atomic_path(out_model) as tmp:
            torch.save(saved, tmp)
        atomic.write_tsv(out_predictions, predictions)
        for name, table in extra_tables.items():
            atomic.write_tsv(Path(out_metrics).parent / name, table)
        atomic.write_json(out_metrics, metrics)
        if not hp["keep_checkpoints"]:
            _remove_checkpoints(ckpt_dir)


def _build(plugin: StagePlugin, context: StageContext, fingerprint: str) -> StageModule:
    """The plugin's stage module, told what the runner knows about the stage."""
    lit = plugin.build(context)
    if not isinstance(lit, StageModule):
        raise TypeError(
            f"{context.method}/{context.stage}: the plugin built {type(lit).__name__}, "
            "not a StageModule"
        )
    lit.supervised = plugin.supervised
    lit.fingerprint = fingerprint
    return lit


def _test_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> dict:
    if len(y_true) == 0:
        return {
            k: math.nan
            for k in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1")
        }
    return binary_metrics(y_true, y_pred, y_score)


def read_model(path: str | Path) -> dict[str, Any]:
    """A ``model.bin`` written by :func:`run_torch_stage` (state dict, params, encoder name)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FORMAT} model file")
    return saved


def rebuild_model(saved: dict[str, Any]) -> BrainClassifier:
    """The trained :class:`BrainClassifier` of a :func:`read_model` result (methods without
    stage plugins)."""
    if saved["method"] in PLUGIN_MODULES:
        raise ValueError(f"{saved['method']}: a plugin stage; rebuild it with its own module")
    model = build_classifier_model(saved["params"], int(saved["n_nodes"]))
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
