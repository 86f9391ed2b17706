"""Lightning modules of training stages.

:class:`StageModule` is the base of every stage's LightningModule (see :mod:`.stages` for the
plugin interface that builds them). It holds what every stage shares, so that a method only
writes its network and losses:

* the optimiser (AdamW/Adam over the parameters that require gradients) and a per-step
  (warm-up +) cosine schedule;
* the training and validation loaders of the stage (:meth:`StageModule.attach`), resumable
  mid-epoch (:class:`~.data.ResumableDataLoader`);
* validation metrics: for supervised stages ``val_loss`` (cross-entropy), ``val_auc``,
  ``val_balanced_accuracy`` and ``val_accuracy`` over the whole validation split, gathered
  across DDP ranks with duplicates removed, so they do not depend on the number of processes;
  for self-supervised stages ``val_loss`` (and ``val_<term>``), the sample-weighted mean of
  :meth:`StageModule.losses` with a random stream that is fixed per validation batch;
* the random-number-generator states and a fingerprint of the run's inputs in checkpoints
  (:meth:`StageModule.on_save_checkpoint`), so that a resumed run draws the same dropout masks
  as an uninterrupted one;
* frozen sub-modules (all parameters ``requires_grad=False``) stay in eval mode while training,
  so a frozen encoder runs without dropout and keeps its normalisation statistics.

:class:`LitClassifier` is the stage module of the reference methods: a
:class:`~brainfuse.methods.torch.encoders.BrainClassifier` trained with cross-entropy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from brainfuse.methods.torch.encoders import BrainClassifier
from brainfuse.methods.torch.weights import load_previous

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from brainfuse.methods.torch.data import BrainDataset

MONITORS = {
    "val_loss": "min",
    "val_auc": "max",
    "val_balanced_accuracy": "max",
    "val_accuracy": "max",
}


def rng_states() -> dict[str, Any]:
    """States of the torch (CPU and CUDA), numpy and Python generators."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def binary_scores(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy and accuracy of positive-class probabilities (AUC NaN with one
    class)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    pred = (prob >= 0.5).astype(int)
    both = len(np.unique(y)) > 1
    return {
        "auc": float(roc_auc_score(y, prob)) if both else math.nan,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else math.nan,
        "accuracy": float((pred == y).mean()) if len(y) else math.nan,
    }


def frozen_to_eval(module: nn.Module) -> None:
    """Put every sub-module whose parameters are all frozen into eval mode (top-down).

    Dropout and normalisation layers have no trainable parameters of their own; they follow the
    nearest ancestor that has parameters, so a frozen encoder runs deterministically while the
    layers trained around it keep their dropout.
    """
    for child in module.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()
        else:
            frozen_to_eval(child)


class StageModule(LightningModule):
    """Base class of the LightningModule of a training stage.

    Subclasses set :attr:`input_keys` and implement :meth:`losses`, :meth:`embed` and, for
    supervised stages, :meth:`logits`; see :mod:`brainfuse.methods.torch.plugins` for a worked
    example.

    Parameters
    ----------
    model : nn.Module
        Everything the stage trains or uses; its ``state_dict`` is what ``model.bin`` stores and
        what the next stage loads (:meth:`load_previous`).
    hp : mapping, optional
        Resolved parameters; read here: ``lr``, ``weight_decay``, ``optimizer``
        (``adamw``/``adam``), ``scheduler`` (``cosine``/``constant``), ``warmup_epochs``,
        ``min_lr_ratio``, ``label_smoothing`` (missing keys take the defaults of
        :data:`~.specs.COMMON_PARAMS`).
    class_weights : sequence of float, optional
        Class weights of :meth:`cross_entropy` (the stage context's ``class_weights``).

    Attributes
    ----------
    supervised : bool
        Set by the stage runner from the plugin: validation scores :meth:`logits` (supervised)
        or averages :meth:`losses` (self-supervised).
    fingerprint : str
        Set by the stage runner: identity of the run's inputs, stored in checkpoints.
    previous_report : dict, optional
        What :meth:`load_previous` loaded (recorded in ``metrics.json``).
    """

    #: Batch keys the stage reads (the dataset serves only these, plus augmentation inputs).
    input_keys: tuple[str, ...] = ()

    def __init__(
        self,
        model: nn.Module,
        hp: Mapping[str, Any] | None = None,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        hp = dict(hp or {})
        self.model = model
        self.lr = float(hp.get("lr", 1e-3))
        self.weight_decay = float(hp.get("weight_decay", 1e-4))
        self.optimizer_name = str(hp.get("optimizer", "adamw"))
        self.scheduler_name = str(hp.get("scheduler", "cosine"))
        self.warmup_epochs = float(hp.get("warmup_epochs", 0.0))
        self.min_lr_ratio = float(hp.get("min_lr_ratio", 0.01))
        self.label_smoothing = float(hp.get("label_smoothing", 0.0))
        weights = (
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)
        self.supervised = True
        self.fingerprint = ""
        self.previous_report: dict[str, list[str]] | None = None
        self.train_set: BrainDataset | None = None
        self.val_set: BrainDataset | None = None
        self.batch_size, self.num_workers, self.epochs = 8, 0, 1
        self._attached = False
        self._pending_restore: dict[str, Any] = {}
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self._val_terms: dict[str, float] = {}
        self._val_count = 0

    # ----------------------------------------------------------------- what a stage implements

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named loss terms of a batch; ``"loss"`` is the total that is minimised.

        Every entry is logged (``train_<name>``; ``val_<name>`` for self-supervised stages).
        """
        raise NotImplementedError

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, D) representation of a batch: what a linear probe reads for a self-supervised
        stage (called in eval mode, without gradients)."""
        raise NotImplementedError

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, 2) class logits of a batch (supervised stages)."""
        raise NotImplementedError

    def load_previous(self, path: str) -> dict[str, list[str]]:
        """Initialise from the previous stage's ``model.bin``: by default every tensor of
        ``self.model`` with the same name and shape (:func:`~.weights.load_previous`)."""
        return load_previous(self.model, path)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates (default: those that require gradients)."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def select_on_validation(
        self, val_set: BrainDataset, batch_size: int, device: torch.device
    ) -> dict[str, Any]:
        """Choices left to the validation subjects after training (the selected model is loaded;
        called in eval mode, without gradients, before the test subjects are read; ``val_set``
        may be empty). Returns JSON-serialisable entries for ``metrics.json``; the default
        chooses nothing."""
        return {}

    def test_extras(
        self, test_set: BrainDataset, batch_size: int, device: torch.device
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Extra test-time outputs, computed after model selection (called in eval mode, without
        gradients).

        Returns
        -------
        metrics : dict
            JSON-serialisable entries added to ``metrics.json``.
        tables : dict of str to DataFrame
            File name (e.g. ``"routing.tsv"``) to table, written atomically into the stage's
            ``tables`` folder (a declared output of every stage, read by attribution).
        """
        return {}, {}

    # ----------------------------------------------------------------- helpers for subclasses

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy with the stage's class weights and label smoothing."""
        return F.cross_entropy(
            logits.float(), y, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    # ----------------------------------------------------------------- data

    def attach(
        self,
        train_set: BrainDataset,
        val_set: BrainDataset | None,
        batch_size: int,
        num_workers: int,
        epochs: int,
    ) -> None:
        """Give the module its loaders' datasets (built once the rank and world size are
        known)."""
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.epochs = int(epochs)
        self._attached = True

    def train_dataloader(self) -> DataLoader:
        from brainfuse.methods.torch.data import train_loader

        if self.train_set is None:
            raise RuntimeError("no training data: call attach() first")
        return train_loader(
            self.train_set,
            self.batch_size,
            self.train_set.seed,
            self.global_rank,
            self.trainer.world_size,
            self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        from brainfuse.methods.torch.data import eval_loader

        if self.val_set is None:
            return []
        return eval_loader(
            self.val_set,
            self.batch_size,
            self.global_rank,
            self.trainer.world_size,
            self.num_workers,
        )

    # ----------------------------------------------------------------- training

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        frozen_to_eval(self.model)
        terms = self.losses(batch)
        sync = self.trainer.world_size > 1
        n = len(batch["y"])
        self.log("train_loss", terms["loss"], on_step=True, on_epoch=True, batch_size=n,
                 sync_dist=sync)  # fmt: skip
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train_{name}", value, on_epoch=True, batch_size=n, sync_dist=sync)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val_outputs, self._val_terms, self._val_count = [], {}, 0

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.supervised:
            logits = self.logits(batch).float()
            self._val_outputs.append((logits.detach(), batch["y"], batch["index"]))
            return
        # A fixed random stream per validation batch: val_loss of a stage that draws masks or
        # views does not vary with the training state of the generator, and validation leaves
        # that state as it found it.
        devices = [torch.cuda.current_device()] if batch["y"].is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(1_000_003 + batch_idx)
            terms = self.losses(batch)
        n = len(batch["y"])
        for name, value in terms.items():
            self._val_terms[name] = self._val_terms.get(name, 0.0) + float(value) * n
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        sync = self.trainer.world_size > 1
        if not self.supervised:
            if self._val_count:
                for name, total in self._val_terms.items():
                    self.log(f"val_{name}", total / self._val_count, on_epoch=True, sync_dist=sync)
            return
        if not self._val_outputs:
            return
        logits, y, index = (torch.cat(parts) for parts in zip(*self._val_outputs, strict=True))
        self._val_outputs = []
        if sync:
            logits, y, index = (self.all_gather(t).flatten(0, 1) for t in (logits, y, index))
        # Padding of the last shard repeats samples; keep one copy of each.
        order = torch.argsort(index, stable=True)
        logits, y, index = logits[order], y[order], index[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        logits, y = logits[first], y[first]
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        prob = logits.softmax(-1)[:, 1].cpu().numpy()
        scores = binary_scores(y.cpu().numpy(), prob)
        metrics = {"val_loss": float(loss), **{f"val_{k}": v for k, v in scores.items()}}
        # Every rank holds the same gathered values; syncing averages identical numbers.
        for name, value in metrics.items():
            self.log(name, value, on_epoch=True, sync_dist=sync)

    def configure_optimizers(self) -> dict[str, Any]:
        params = list(self.trainable_parameters())
        if not params:
            raise ValueError(f"{type(self).__name__}: no trainable parameters")
        if self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"optimizer={self.optimizer_name!r}: expected 'adamw' or 'adam'")
        if self.scheduler_name == "constant":
            return {"optimizer": opt}
        if self.scheduler_name != "cosine":
            raise ValueError(f"scheduler={self.scheduler_name!r}: expected 'cosine' or 'constant'")
        total = max(1, self.total_steps())
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(round(self.warmup_epochs * per_epoch))
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def total_steps(self) -> int:
        """Optimiser steps of the whole run (the cosine schedule's length).

        Computed from the attached training set: Lightning's ``estimated_stepping_batches``
        loads the training loader before a checkpoint is restored, and the loader's saved
        position is then never applied.
        """
        if not self._attached or self.train_set is None:
            return int(self.trainer.estimated_stepping_batches)
        per_rank = math.ceil(len(self.train_set) / self.trainer.world_size)
        return self.epochs * math.ceil(per_rank / self.batch_size)

    # ----------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["brainfuse"] = {
            "fingerprint": self.fingerprint,
            "rng": rng_states(),
            # Lightning does not save it: a run resumed after early stopping would train on.
            "should_stop": bool(self.trainer.should_stop),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied in on_train_start: loading happens before Lightning's own setup, which may
        # still draw random numbers.
        self._pending_restore = checkpoint.get("brainfuse", {})

    def on_train_start(self) -> None:
        if self._pending_restore:
            if "rng" in self._pending_restore:
                set_rng_states(self._pending_restore["rng"])
            self.trainer.should_stop = bool(self._pending_restore.get("should_stop", False))
        self._pending_restore = {}


class LitClassifier(StageModule):
    """Supervised training of a :class:`BrainClassifier` on dense brain-network batches.

    Cross-entropy training with AdamW/Adam and a per-step (warm-up +) cosine schedule.

    Parameters
    ----------
    model : BrainClassifier
        The network; its ``input_keys`` select the batch entries.
    lr : float
        Peak learning rate.
    weight_decay : float
        Decoupled (AdamW) or L2 (Adam) weight decay.
    optimizer : {"adamw", "adam"}
        Optimiser.
    scheduler : {"cosine", "constant"}
        Per-step schedule: linear warm-up over ``warmup_epochs`` then cosine decay to
        ``min_lr_ratio * lr`` at the last step, or a constant rate.
    warmup_epochs : float
        Warm-up length in epochs.
    min_lr_ratio : float
        Floor of the cosine schedule as a share of ``lr``.
    label_smoothing : float
        Cross-entropy label smoothing.
    class_weights : sequence of float, optional
        Cross-entropy class weights.
    fingerprint : str
        Identity of the run's inputs, stored in checkpoints.
    freeze_encoder : bool
        Train the head only.
    """

    def __init__(
        self,
        model: BrainClassifier,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        fingerprint: str = "",
        freeze_encoder: bool = False,
    ) -> None:
        hp = {
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "warmup_epochs": warmup_epochs,
            "min_lr_ratio": min_lr_ratio,
            "label_smoothing": label_smoothing,
        }
        super().__init__(model, hp, class_weights)
        self.fingerprint = fingerprint
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.model.encoder.requires_grad_(False)

    @property
    def input_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.model.input_keys)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": self.cross_entropy(self(batch), batch["y"])}

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.embed(batch)
