"""Lightning wrapper of a :class:`~brainfuse.training.encoders.BrainClassifier`.

Cross-entropy training with AdamW/Adam and a per-step (warm-up +) cosine schedule; validation
metrics (``val_loss``, ``val_auc``, ``val_balanced_accuracy``, ``val_accuracy``) are computed over
the whole validation split, gathered across DDP ranks with duplicates removed, so they do not
depend on the number of processes.

Checkpoints carry the random-number-generator states and a fingerprint of the run's inputs
(:meth:`LitClassifier.on_save_checkpoint`), so that a resumed run draws the same dropout masks as
an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor

from .encoders import BrainClassifier

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


class LitClassifier(LightningModule):
    """Supervised training of a classifier on dense brain-network batches.

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
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.optimizer_name, self.scheduler_name = optimizer, scheduler
        self.warmup_epochs, self.min_lr_ratio = float(warmup_epochs), float(min_lr_ratio)
        self.label_smoothing = float(label_smoothing)
        weights = (
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)
        self.fingerprint = fingerprint
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.model.encoder.requires_grad_(False)
        self._pending_restore: dict[str, Any] = {}
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(batch)

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(
            logits.float(), y, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.freeze_encoder:
            self.model.encoder.eval()  # no dropout in a frozen encoder
        logits = self(batch)
        loss = self._loss(logits, batch["y"])
        self.log(
            "train_loss",
            loss,
            on_step=True,
            on_epoch=True,
            batch_size=len(batch["y"]),
            sync_dist=self.trainer.world_size > 1,
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch).float()
        self._val_outputs.append((logits.detach(), batch["y"], batch["index"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        logits, y, index = (torch.cat(parts) for parts in zip(*self._val_outputs, strict=True))
        self._val_outputs = []
        if self.trainer.world_size > 1:
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
            self.log(name, value, on_epoch=True, sync_dist=self.trainer.world_size > 1)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
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

        Subclasses that know their loader should override this: Lightning's
        ``estimated_stepping_batches`` loads the training loader before a checkpoint is restored,
        and the loader's saved position is then never applied.
        """
        return int(self.trainer.estimated_stepping_batches)

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
