"""What one training job is asked to do: :class:`StageRequest` (one method, stage and fold).

Torch-free: the ``train_stage`` script builds a request from the rule's inputs and params and
hands it to :func:`brainfuse.methods.run.run_stage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StageOutputs", "StageRequest"]


@dataclass(frozen=True)
class StageOutputs:
    """The files a stage writes (atomically).

    Attributes
    ----------
    model : str
        ``model.bin``: a joblib estimator (sklearn) or a torch state dict with metadata.
    metrics : str
        ``metrics.json``.
    predictions : str
        ``predictions.tsv``: one row per test sample.
    tables : str, optional
        Folder of the stage's extra per-sample tables (e.g. M3D-BFS's ``routing.tsv``), made
        for every stage so that later rules can declare it; default: ``tables`` beside
        ``metrics.json``.
    provenance : str, optional
        ``provenance.json``: the subjects each role of the stage read and the inputs' hashes
        (:mod:`brainfuse.provenance`); default: beside ``metrics.json``.
    """

    model: str
    metrics: str
    predictions: str
    tables: str | None = None
    provenance: str | None = None

    @property
    def tables_dir(self) -> Path:
        """The folder of the extra tables."""
        return Path(self.tables) if self.tables else Path(self.metrics).parent / "tables"

    @property
    def provenance_path(self) -> Path:
        """The provenance manifest."""
        if self.provenance:
            return Path(self.provenance)
        return Path(self.metrics).parent / "provenance.json"


@dataclass(frozen=True)
class StageRequest:
    """One stage of one method on one outer fold.

    Attributes
    ----------
    method : str
        A method of the catalog.
    stage : str
        The stage's name: selects its plugin and its ``per_stage`` parameters.
    fold : int
        Outer fold of ``folds_path``.
    cache_paths : mapping of str to str
        Cache of each modality the method reads.
    folds_path : str
        ``folds.tsv``: train/val/test subjects of every fold.
    positive : str
        Label of the positive class.
    seed : int
        Seed of initialisation, shuffling, augmentation and dropout.
    outputs : StageOutputs
        Where the stage writes.
    params : mapping
        Overrides of the method's defaults (the config's ``methods.<name>.params``).
    previous : str, optional
        The previous stage's ``model.bin`` (torch stages initialise from it).
    checkpoint_dir : str, optional
        Checkpoints and logs of a torch stage (not a rule output, so Snakemake never deletes
        it); required for torch methods.
    devices : int
        Processes/GPUs of a torch stage; ``> 1`` trains with DDP.
    pretrained : str, optional
        The ``manifest.json`` of a run-once pre-training whose ``encoder.bin`` is ``previous``
        (``pretrain_on`` or ``init``, :mod:`brainfuse.methods.pretrained`): copied into the
        stage's provenance, its subjects listed as unlabelled pre-training.
    """

    method: str
    stage: str
    fold: int
    cache_paths: Mapping[str, str]
    folds_path: str
    positive: str
    seed: int
    outputs: StageOutputs
    params: Mapping[str, Any] = field(default_factory=dict)
    previous: str | None = None
    checkpoint_dir: str | None = None
    devices: int = 1
    pretrained: str | None = None
