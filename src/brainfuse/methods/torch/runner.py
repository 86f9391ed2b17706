"""One Lightning training stage of one torch method on one outer fold.

:func:`run_torch_stage` is what the ``train_stage`` rule runs for ``family == "torch"`` methods.
What the stage trains comes from its plugin (:func:`~.plugins.plugin_for`: a
:class:`~.module.StageModule` and whether the stage is supervised); everything else - data,
checkpoints, resume, model selection, evaluation and outputs - is here, the same for every
stage. The fold's test subjects are read once, after training, with the model selected on the
validation subjects: a supervised stage predicts them with its classifier, a self-supervised
stage with a linear probe on its frozen embeddings (:func:`~.plugins.linear_probe`).

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

import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from brainfuse.core.metrics import binary_metrics, validation_threshold
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.methods.request import StageRequest
from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.augment import Compose, build_augmentations
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.encoders import BrainClassifier, encoder_arguments
from brainfuse.methods.torch.harmonise_inputs import (
    InputAdjustment,
    adjust_matrices,
    adjustment_summary,
    split_request,
)
from brainfuse.methods.torch.module import MONITORS, StageModule
from brainfuse.methods.torch.plugins import (
    StageContext,
    StagePlugin,
    embeddings,
    linear_probe,
    plugin_for,
)
from brainfuse.methods.torch.weights import MODEL_FORMAT
from brainfuse.provenance import stage_manifest, subjects_in, write_manifest

log = logging.getLogger("brainfuse")

LAST = "last.ckpt"
BEST = "best.ckpt"

# Checkpoints are loaded with weights_only=True. Beyond tensors and Python primitives they hold
# one numpy array, the generator state that StageModule.on_save_checkpoint saves; these are
# the globals its unpickling needs (array reconstruction by numpy's own reduce function,
# whichever module numpy keeps it in).
torch.serialization.add_safe_globals(
    [np.ndarray.__reduce__(np.empty(0))[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
)

# Parameters that do not change what is trained; a resumed run may change them.
OPERATIONAL = {"num_threads", "num_workers", "keep_checkpoints", "checkpoint_every_n_steps"}

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
    model-selection update. The whole training state is saved (``weights_only=False`` here means
    optimiser, callbacks and loops too, as resuming needs; said so that Lightning does not log
    that it defaulted to it).
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
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending:
            self._pending = False
            trainer.save_checkpoint(self.path, weights_only=False)


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
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = trainer.global_step
            log.warning("SIGTERM: saved %s at step %d", self.path, trainer.global_step)


def check_params(
    catalog: Catalog, method: str, hp: dict[str, Any], supervised: bool = True
) -> None:
    """Refuse parameters no part of the stage uses (typos would otherwise pass silently).

    Known keys: those the catalog declares for the method
    (:meth:`~brainfuse.methods.catalog.Catalog.known_params`) and, for methods without stage
    plugins, the encoder's arguments.
    """
    known = catalog.known_params(method)
    if catalog[method].plugin is None:
        known |= encoder_arguments(hp["encoder"])
    unknown = sorted(set(hp) - known)
    if unknown:
        raise ValueError(f"methods.{method}.params: unknown keys {unknown}")
    if hp["small_validation"] not in ("train", "threshold"):
        raise ValueError(
            f"small_validation={hp['small_validation']!r}; expected 'train' or 'threshold'"
        )
    if hp["monitor"] not in MONITORS:
        raise ValueError(f"monitor={hp['monitor']!r}; expected one of {sorted(MONITORS)}")
    if not supervised and hp["monitor"] != "val_loss":
        raise ValueError(
            f"monitor={hp['monitor']!r}: a self-supervised stage is selected on val_loss"
        )


def stage_fingerprint(request: StageRequest, spec: MethodSpec, hp: dict[str, Any]) -> str:
    """What a resumable checkpoint must have been written for: the request's inputs (caches by
    size and time, folds and previous stage by content) and the parameters that change what is
    trained."""
    caches = {}
    for modality in sorted(spec.present(request.cache_paths)):
        stat = os.stat(request.cache_paths[modality])
        caches[modality] = [stat.st_size, stat.st_mtime_ns]
    extra = {
        "method": request.method,
        "stage": request.stage,
        "fold": request.fold,
        "params": {k: v for k, v in hp.items() if k not in OPERATIONAL},
        "seed": request.seed,
        "positive": request.positive,
        "devices": request.devices,
        "caches": caches,
    }
    # A run-once corpus pre-training has no folds file.
    files = [f for f in (request.folds_path, request.previous) if f]
    return files_hash(files, extra)


def _resume_point(ckpt_dir: Path, fingerprint: str, rank: int) -> tuple[str | None, int]:
    """``(path, step)`` of a checkpoint to resume from, or ``(None, 0)``; rank 0 discards stale
    or unreadable checkpoints."""
    last = ckpt_dir / LAST
    if last.exists():
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
        except Exception as err:
            log.warning("cannot read %s (%s); starting afresh", last, err)
            state = None
        if state is not None and state.get("brainfuse", {}).get("fingerprint") == fingerprint:
            return str(last), int(state.get("global_step", 0))
        if state is not None:
            log.warning("%s was written for other inputs or parameters; starting afresh", last)
    if rank == 0:
        remove_checkpoints(ckpt_dir)
    return None, 0


def remove_checkpoints(ckpt_dir: Path) -> None:
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
def process_settings(num_threads: int | None):
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


@dataclass(frozen=True)
class FoldData:
    """The samples of one stage on one fold, before the stage module chooses its fields.

    Attributes
    ----------
    full : BrainDataset
        Every sample of the method's modalities, every field.
    roles : dict of str to set of str
        ``train``, ``val`` and ``test`` subjects of the fold.
    train_plain : BrainDataset
        The training samples without augmentation.
    augment : Compose or None
        The training augmentations (``augment`` parameter).
    class_weights : list of float or None
        Inverse-frequency class weights of the training split (``class_weighted``).
    adjustment : dict or None
        The record of the in-fold harmonisation and confound regression of the FC/SC inputs
        (:func:`~.harmonise_inputs.adjust_matrices`); None when there is none.
    """

    full: BrainDataset
    roles: dict[str, set[str]]
    train_plain: BrainDataset
    augment: Compose | None
    class_weights: list[float] | None
    adjustment: dict[str, Any] | None = None


@dataclass(frozen=True)
class Evaluation:
    """The test subjects scored once by the selected model (:func:`evaluate_stage`).

    Attributes
    ----------
    test_set : BrainDataset
        The fold's test samples.
    y_score : ndarray
        Their positive-class probabilities.
    metrics : dict
        Evaluation kind, validation selection, test metrics and the module's extras, in the
        order ``metrics.json`` lists them.
    tables : dict
        File name -> extra table of the stage module, written beside ``metrics.json``.
    """

    test_set: BrainDataset
    y_score: np.ndarray
    metrics: dict[str, Any]
    tables: dict[str, Any]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_stage` leaves for evaluation and ``metrics.json``."""

    trainer: Trainer
    best: ModelCheckpoint | None
    resumed_from_step: int
    precision: str
    devices: int


def run_torch_stage(
    request: StageRequest,
    catalog: Catalog | None = None,
    *,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Train ``request``'s stage; write the model, its metrics and test predictions.

    Parameters
    ----------
    request : StageRequest
        The method, stage, fold, inputs and outputs (``checkpoint_dir`` is required). Global
        rank 0 writes the outputs, atomically; extra tables of the stage module
        (:meth:`~.module.StageModule.test_extras`) are written into ``outputs.tables_dir``.
    catalog : Catalog, optional
        Where the method is looked up (default:
        :func:`~brainfuse.methods.catalog.default_catalog`).
    callbacks : sequence of Callback
        Extra Lightning callbacks (tests and instrumentation).
    """
    start = time.perf_counter()
    catalog = default_catalog() if catalog is None else catalog
    # the in-fold harmonisation and confounds of the FC/SC inputs are no method parameters
    request, adjustment = split_request(request)
    spec = catalog[request.method]
    plugin = plugin_for(spec, request.stage)
    hp = catalog.params(request.method, request.params, request.stage)
    check_params(catalog, request.method, hp, plugin.supervised)
    if request.checkpoint_dir is None:
        raise ValueError(f"{request.method}/{request.stage}: a torch stage needs checkpoint_dir")
    ckpt_dir = Path(request.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with process_settings(hp["num_threads"]):
        seed_everything(request.seed, workers=True, verbose=False)
        built = build_stage(request, spec, plugin, hp, adjustment)
        data, fingerprint, lit = built.data, built.fingerprint, built.lit
        full, train_set, val_set = built.full, built.train_set, built.val_set
        fit = fit_stage(request, hp, lit, train_set, val_set, ckpt_dir, fingerprint, callbacks)
        if fit.trainer.global_rank != 0:
            return
        best_step = _load_best(lit, fit)
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        evaluation = evaluate_stage(
            request, plugin, hp, lit, full, data.roles, train_set, val_set, device
        )
        test_set = evaluation.test_set
        metrics = {
            "method": request.method,
            "stage": request.stage,
            "fold": request.fold,
            "format": "torch",
            "encoder": hp["encoder"],
            "monitor": hp["monitor"],
            "model_selection": "validation" if fit.best is not None else "last_epoch",
            "best_val": _best_score(fit.best),
            "best_step": best_step,
            "epochs": int(fit.trainer.current_epoch),
            "steps": int(fit.trainer.global_step),
            "resumed_from_step": fit.resumed_from_step,
            "early_stopped": bool(fit.trainer.should_stop),
            "devices": fit.devices,
            "accelerator": "cuda" if torch.cuda.is_available() else "cpu",
            "precision": str(fit.precision),
            "n_train": len(train_set),
            "n_val": len(val_set),
            "n_test": len(test_set),
            "missing_modalities": full.missing,
            "previous": request.previous,
            "previous_keys": lit.previous_report,
            "adjustment": None
            if data.adjustment is None
            else adjustment_summary(data.adjustment, full.fields, full.modalities),
            "seconds": time.perf_counter() - start,
            **evaluation.metrics,
        }
        write_manifest(
            request.outputs.provenance_path,
            stage_manifest(
                method=request.method,
                stage=request.stage,
                fold=request.fold,
                seed=request.seed,
                params={k: v for k, v in hp.items() if k not in OPERATIONAL},
                cache_paths={m: request.cache_paths[m] for m in full.modalities},
                folds_path=request.folds_path,
                previous=request.previous,
                subjects=stage_subjects(plugin, lit, train_set, evaluation.test_set),
                pretrained=request.pretrained,
                extra_inputs={"participants": adjustment.participants}
                if adjustment is not None and adjustment.participants
                else None,
                adjustment=data.adjustment,
            ),
        )
        write_outputs(request, plugin, hp, lit, full, metrics, evaluation)
        if not hp["keep_checkpoints"]:
            remove_checkpoints(ckpt_dir)


@dataclass(frozen=True)
class BuiltStage:
    """A stage ready to train (:func:`build_stage`).

    Attributes
    ----------
    data : FoldData
        The fold's samples and roles.
    fingerprint : str
        What a resumable checkpoint must have been written for.
    lit : StageModule
        The plugin's module, initialised from the previous stage.
    full : BrainDataset
        Every sample, serving only the fields the module and the augmentations read.
    train_set, val_set : BrainDataset
        The training samples (augmented) and the validation samples.
    """

    data: FoldData
    fingerprint: str
    lit: StageModule
    full: BrainDataset
    train_set: BrainDataset
    val_set: BrainDataset


def build_stage(
    request: StageRequest,
    spec: MethodSpec,
    plugin: StagePlugin,
    hp: dict[str, Any],
    adjustment: InputAdjustment | None = None,
) -> BuiltStage:
    """Read the fold's data (its FC/SC matrices harmonised in-fold when ``adjustment`` is given)
    and build the stage module (after ``seed_everything``); the training benchmark builds its
    bare loop from the same call."""
    data = prepare_data(request, spec, hp, adjustment=adjustment)
    fingerprint = stage_fingerprint(
        request,
        spec,
        hp if adjustment is None else {**hp, "input_adjustment": adjustment.fingerprint()},
    )
    lit = build_module(request, plugin, hp, data, fingerprint)
    # Serve only what the stage and the augmentations read (fft, EEG, ... cost time).
    augment = data.augment
    full = data.full.with_fields([*lit.input_keys, *(augment.requires if augment else ())])
    train_set = full.subset(data.roles["train"], train=True, transform=augment)
    val_set = full.subset(data.roles["val"], train=False, transform=None)
    return BuiltStage(data, fingerprint, lit, full, train_set, val_set)


def stage_subjects(
    plugin: StagePlugin, lit: StageModule, train_set: BrainDataset, test_set: BrainDataset
) -> dict[str, list[str]]:
    """The subjects each provenance role of a trained stage read (:mod:`brainfuse.provenance`).

    Taken from the datasets the module's loaders were given, not from the folds table, so that a
    stage reading more than its fold's training subjects shows it: a supervised stage fits on its
    training loader's subjects; a self-supervised stage's loss reads them unlabelled, and its
    linear probe fits on the labelled ``train_set``.
    """
    loaded = subjects_in(lit.train_set.table if lit.train_set is not None else None)
    return {
        "fit": loaded if plugin.supervised else subjects_in(train_set.table),
        "validation": subjects_in(lit.val_set.table if lit.val_set is not None else None),
        "test": subjects_in(test_set.table),
        "unlabelled_pretraining": [] if plugin.supervised else loaded,
    }


def prepare_data(
    request: StageRequest,
    spec: MethodSpec,
    hp: dict[str, Any],
    roles: dict[str, set[str]] | None = None,
    adjustment: InputAdjustment | None = None,
) -> FoldData:
    """Read the caches and the fold's subjects (after ``seed_everything``); ``roles`` (train,
    val and test subjects) replaces the folds file (a corpus pre-training has none).
    ``adjustment`` harmonises the FC/SC matrices in the fold (:mod:`.harmonise_inputs`)."""
    # The method's modalities this dataset has (an optional one may be absent); the first is
    # the anchor whose samples are the rows, so only the others may be missing for a subject.
    modalities = spec.present(request.cache_paths)
    caches = {m: read_cache(request.cache_paths[m]) for m in modalities}
    augment = build_augmentations(hp["augment"])

    def dataset(caches: dict) -> BrainDataset:
        return BrainDataset(
            caches,
            request.positive,
            modalities=modalities,
            fields=None,
            length=hp["length"],
            eeg_length=hp["eeg_length"],
            seed=request.seed,
            standardize=hp["standardize"],
            optional=[m for m in spec.optional if m in modalities[1:]],
        )

    full = dataset(caches)
    if roles is None:
        folds = read_folds(request.folds_path)
        roles = {r: subjects_of(folds, request.fold, r) for r in ("train", "val", "test")}
    roles = training_roles(roles, hp, request)
    record = None
    if adjustment is not None:
        # the cache rows the samples use are known once the modalities are joined
        caches, record = adjust_matrices(caches, full.table, roles, adjustment)
        full = dataset(caches)
    train_plain = full.subset(roles["train"], train=False, transform=None)
    if len(train_plain) == 0:
        raise ValueError(f"fold {request.fold}: no training samples with {', '.join(modalities)}")
    counts = np.bincount(train_plain.labels, minlength=2).astype(float)
    weights = (
        (counts.sum() / (2 * np.maximum(counts, 1))).tolist() if hp["class_weighted"] else None
    )
    return FoldData(full, roles, train_plain, augment, weights, record)


def training_roles(
    roles: dict[str, set[str]], hp: dict[str, Any], request: StageRequest
) -> dict[str, set[str]]:
    """``roles`` with a validation split too small to select on (fewer than
    ``min_val_subjects``) merged into the training subjects, under ``small_validation: train``.

    Such a split selects nothing (:func:`selects_on_validation`); kept apart it would only move
    the decision threshold, on four subjects on the demo, while costing a fifth of the
    training subjects. The test subjects are untouched.
    """
    n_val = len(roles["val"])
    if n_val == 0:
        log.warning("fold %d: no validation samples; the last epoch's model is used", request.fold)
    if hp["small_validation"] != "train" or not 0 < n_val < int(hp["min_val_subjects"]):
        return roles
    log.info(
        "%s/%s fold %d: %d validation subjects (< min_val_subjects=%d) train with the %d "
        "training subjects (small_validation: train)",
        request.method,
        request.stage,
        request.fold,
        n_val,
        int(hp["min_val_subjects"]),
        len(roles["train"]),
    )
    return {**roles, "train": roles["train"] | roles["val"], "val": set()}


def build_module(
    request: StageRequest,
    plugin: StagePlugin,
    hp: dict[str, Any],
    data: FoldData,
    fingerprint: str,
) -> StageModule:
    """The plugin's stage module, told what the runner knows about the stage and initialised
    from the previous stage's ``model.bin`` (:meth:`~.module.StageModule.load_previous`)."""
    context = StageContext(
        method=request.method,
        stage=request.stage,
        fold=request.fold,
        seed=request.seed,
        hp=hp,
        dataset=data.full,
        train_set=data.train_plain,
        class_weights=data.class_weights,
        previous=request.previous,
    )
    lit = _build(plugin, context, fingerprint)
    lit.previous_report = lit.load_previous(request.previous) if request.previous else None
    return lit


def fit_stage(
    request: StageRequest,
    hp: dict[str, Any],
    lit: StageModule,
    train_set: BrainDataset,
    val_set: BrainDataset,
    ckpt_dir: Path,
    fingerprint: str,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``lit``, resuming from a checkpoint of the same inputs; SIGTERM saves one and
    exits with status 143."""
    has_val = len(val_set) > 0
    select = selects_on_validation(val_set, hp)
    if has_val and not select:
        log.info(
            "%s/%s fold %d: %d validation subjects (< min_val_subjects=%d): the full schedule "
            "is trained and its last epoch kept",
            request.method,
            request.stage,
            request.fold,
            val_set.table["subject"].nunique(),
            int(hp["min_val_subjects"]),
        )
    lit.attach(
        train_set,
        val_set if has_val else None,
        int(hp["batch_size"]),
        int(hp["num_workers"]),
        int(hp["epochs"]),
    )
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set by Lightning for the ranks it starts
    ckpt_path, resumed_from_step = _resume_point(ckpt_dir, fingerprint, rank)
    if ckpt_path:
        log.info(
            "resuming %s/%s fold %d from %s (step %d)",
            request.method,
            request.stage,
            request.fold,
            ckpt_path,
            resumed_from_step,
        )
    best_cb = _best_checkpoint(ckpt_dir, hp) if select else None
    sigterm_cb = SaveOnSigterm(ckpt_dir / LAST)
    all_callbacks: list[Callback] = [
        PeriodicCheckpoint(ckpt_dir / LAST, int(hp["checkpoint_every_n_steps"])),
        sigterm_cb,
        *callbacks,
    ]
    if best_cb is not None:
        all_callbacks += [best_cb, _early_stopping(hp)]
    precision = hp["precision"] if torch.cuda.is_available() else "32-true"
    world = max(1, int(request.devices))
    trainer = _trainer(hp, ckpt_dir, all_callbacks, precision, world, len(train_set), has_val)
    try:
        trainer.fit(lit, ckpt_path=ckpt_path, weights_only=True)
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
    return FitResult(trainer, best_cb, resumed_from_step, precision, world)


def selects_on_validation(val_set: BrainDataset, hp: dict[str, Any]) -> bool:
    """Whether early stopping and model selection read the validation split.

    A loss or AUC over a handful of validation subjects is mostly noise: with 4 of them (the
    demo's 24 subjects in 5 folds) the selected epoch was often one of the first, an untrained
    model predicting one class. Below ``min_val_subjects`` the stage trains its whole schedule
    (the cosine decay ends at a small learning rate) and keeps the last epoch; the validation
    metrics are still logged.
    """
    n_subjects = val_set.table["subject"].nunique() if len(val_set) else 0
    return n_subjects > 0 and n_subjects >= int(hp["min_val_subjects"])


def _best_checkpoint(ckpt_dir: Path, hp: dict[str, Any]) -> ModelCheckpoint:
    """``best.ckpt``: model selection on the validation metric ``monitor``."""
    return ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=BEST.removesuffix(".ckpt"),
        monitor=hp["monitor"],
        mode=MONITORS[hp["monitor"]],
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        # on_train_epoch_end is skipped for an epoch resumed from its last batch;
        # on_validation_end is not.
        save_on_train_epoch_end=False,
    )


def _early_stopping(hp: dict[str, Any]) -> EarlyStopping:
    return EarlyStopping(
        monitor=hp["monitor"],
        mode=MONITORS[hp["monitor"]],
        patience=int(hp["patience"]),
        check_on_train_epoch_end=False,
    )


def _trainer(
    hp: dict[str, Any],
    ckpt_dir: Path,
    callbacks: list[Callback],
    precision: str,
    world: int,
    n_train: int,
    has_val: bool,
) -> Trainer:
    steps_per_epoch = math.ceil(math.ceil(n_train / world) / int(hp["batch_size"]))
    return Trainer(
        accelerator="auto",
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        # Lightning starts the ranks itself; SLURM only provides the allocation (and no
        # Lightning auto-requeue behind Snakemake's back).
        plugins=[LightningEnvironment(), AtomicCheckpointIO()],
        precision=precision,
        max_epochs=int(hp["epochs"]),
        min_epochs=int(hp["min_epochs"]),
        callbacks=callbacks,
        logger=_loggers(ckpt_dir),
        default_root_dir=str(ckpt_dir),
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        deterministic=True if not torch.cuda.is_available() else "warn",
        benchmark=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        use_distributed_sampler=False,
    )


def _load_best(lit: StageModule, fit: FitResult) -> int:
    """Load the model selected on validation into ``lit``; the step it was saved at."""
    best_path = fit.best.best_model_path if fit.best is not None else ""
    if not best_path:
        return fit.trainer.global_step
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    lit.load_state_dict(best["state_dict"])
    return int(best["global_step"])


def _best_score(best: ModelCheckpoint | None) -> float | None:
    score = best.best_model_score if best is not None else None
    return None if score is None else float(score)


def evaluate_stage(
    request: StageRequest,
    plugin: StagePlugin,
    hp: dict[str, Any],
    lit: StageModule,
    full: BrainDataset,
    roles: dict[str, set[str]],
    train_set: BrainDataset,
    val_set: BrainDataset,
    device: torch.device,
) -> Evaluation:
    """Select on the validation subjects, then score the test subjects once."""
    batch_size = int(hp["batch_size"])
    with torch.no_grad():
        selection = lit.to(device).eval().select_on_validation(val_set, batch_size, device)
    # from the validation subjects, before the test subjects are read
    threshold = (
        decision_threshold(hp, lit, val_set, batch_size, device) if plugin.supervised else 0.5
    )
    test_set = full.subset(roles["test"], train=False, transform=None)
    if plugin.supervised:
        y_score = predict_proba(lit, test_set, batch_size, device)
        evaluation: dict[str, Any] = {"evaluation": "classifier"}
    else:
        # The probe reads the training subjects without augmentation.
        train_plain = full.subset(roles["train"], train=False, transform=None)
        y_score, evaluation = _probe(
            lit, train_plain, train_set.labels, val_set, test_set, batch_size, device, request.seed
        )
    y_true = test_set.labels.astype(int)
    y_pred = (y_score >= threshold).astype(int)
    with torch.no_grad():
        extra_metrics, extra_tables = (
            lit.to(device).eval().test_extras(test_set, batch_size, device)
        )
    metrics = {
        **evaluation,
        **selection,
        "decision_threshold": threshold,
        **_test_metrics(y_true, y_pred, y_score),
        **extra_metrics,
    }
    return Evaluation(test_set, y_score, metrics, extra_tables)


def decision_threshold(
    hp: dict[str, Any],
    lit: StageModule,
    val_set: BrainDataset,
    batch_size: int,
    device: torch.device,
) -> float:
    """The threshold of a classifier stage's test predictions: ``decision_threshold`` when it
    is a number; with ``validation``, :func:`~brainfuse.core.metrics.validation_threshold` of
    the selected model's scores on the validation subjects (0.5 without them)."""
    setting = hp["decision_threshold"]
    if setting != "validation":
        if isinstance(setting, str):
            raise ValueError(f"decision_threshold={setting!r}: expected 'validation' or a number")
        return float(setting)
    if len(val_set) == 0:
        return 0.5
    return validation_threshold(val_set.labels, predict_proba(lit, val_set, batch_size, device))


def _probe(
    lit: StageModule,
    train_plain: BrainDataset,
    train_labels: np.ndarray,
    val_set: BrainDataset,
    test_set: BrainDataset,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Test probabilities of a self-supervised stage: a linear probe on its frozen
    embeddings."""
    x = {
        role: embeddings(lit, data, batch_size, device)
        for role, data in (("train", train_plain), ("test", test_set))
    }
    # without validation subjects (small_validation: train) C is chosen on the training ones
    x["val"] = (
        embeddings(lit, val_set, batch_size, device)
        if len(val_set)
        else np.zeros((0, x["train"].shape[1]), dtype=x["train"].dtype)
    )
    y_score, probe_c = linear_probe(
        x["train"],
        train_labels,
        x["val"],
        val_set.labels,
        x["test"],
        seed,
        train_plain.table["subject"].astype(str).to_numpy(),
        val_set.table["subject"].astype(str).to_numpy(),
    )
    return y_score, {
        "evaluation": "linear_probe",
        "probe_C": probe_c,
        "embedding_dim": int(x["train"].shape[1]),
    }


def write_outputs(
    request: StageRequest,
    plugin: StagePlugin,
    hp: dict[str, Any],
    lit: StageModule,
    full: BrainDataset,
    metrics: dict[str, Any],
    evaluation: Evaluation,
) -> None:
    """Write ``model.bin``, ``predictions.tsv``, the extra tables and ``metrics.json``
    (atomically, in that order: ``metrics.json`` last)."""
    test_set, y_score = evaluation.test_set, evaluation.y_score
    predictions = test_set.table[["sample_id", "subject", "label"]].copy()
    predictions.insert(0, "method", request.method)
    predictions.insert(1, "fold", request.fold)
    predictions["y_true"], predictions["y_score"] = test_set.labels.astype(int), y_score
    threshold = float(evaluation.metrics.get("decision_threshold", 0.5))
    predictions["y_pred"] = (y_score >= threshold).astype(int)
    saved = {
        "format": MODEL_FORMAT,
        "method": request.method,
        "stage": request.stage,
        "fold": request.fold,
        "encoder": hp["encoder"],
        "n_nodes": full.n_nodes,
        "params": hp,
        "supervised": plugin.supervised,
        "decision_threshold": threshold,
        "input_keys": list(lit.input_keys),
        "state_dict": lit.model.state_dict(),
    }
    outputs = request.outputs
    with atomic.atomic_path(outputs.model) as tmp:
        torch.save(saved, tmp)
    atomic.write_tsv(outputs.predictions, predictions)
    outputs.tables_dir.mkdir(parents=True, exist_ok=True)
    for name, table in evaluation.tables.items():
        atomic.write_tsv(outputs.tables_dir / name, table)
    atomic.write_json(outputs.metrics, metrics)


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


__all__ = [
    "OPERATIONAL",
    "BuiltStage",
    "Evaluation",
    "FitResult",
    "FoldData",
    "SaveOnSigterm",
    "build_module",
    "build_stage",
    "check_params",
    "evaluate_stage",
    "fit_stage",
    "predict_proba",
    "prepare_data",
    "process_settings",
    "remove_checkpoints",
    "run_torch_stage",
    "selects_on_validation",
    "stage_fingerprint",
    "stage_subjects",
    "write_outputs",
]
