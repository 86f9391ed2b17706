"""The reference torch methods (one encoder plus an MLP head) and every torch method's common
hyper-parameters.

Torch-free, so the Snakefile can read it at parse time.
"""

from __future__ import annotations

from typing import Any

from brainfuse.methods.spec import MethodSpec

__all__ = ["CLASSIFIER_STAGES", "COMMON_PARAMS", "SPECS"]

#: Training hyper-parameters shared by every torch method (a method's own defaults and the
#: config's ``params`` override them, in that order).
COMMON_PARAMS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "optimizer": "adamw",  # adamw | adam
    "scheduler": "cosine",  # cosine | constant
    "warmup_epochs": 0,
    "min_lr_ratio": 0.01,  # cosine floor as a share of lr
    "label_smoothing": 0.0,
    "class_weighted": False,  # inverse-frequency class weights from the training split
    "monitor": "val_loss",  # val_loss | val_auc | val_balanced_accuracy | val_accuracy
    "patience": 10,  # early-stopping patience in validation epochs
    # Fewer validation subjects than this: no early stopping nor model selection (their loss is
    # noise); the whole schedule is trained and the last epoch kept.
    "min_val_subjects": 10,
    # What such a validation split is then for: "train": its subjects join the training subjects
    # (nothing is selected on them; the threshold is 0.5); "threshold": they only choose the
    # decision threshold. Demo, 3 seeds: of 21 seed x method scores of the 7 methods then below
    # 0.80, 18 rose with "train" (13 by 0.05-0.19), 3 fell (docs/methods_deep.md, fifth pass).
    "small_validation": "train",
    "min_epochs": 1,
    # Test predictions are positive at or above this probability; "validation": 0.5 unless the
    # validation subjects are separated strictly better by another threshold (a network fitted to
    # zero loss on a few dozen subjects often shifts every new subject to one side of 0.5).
    "decision_threshold": "validation",
    "checkpoint_every_n_steps": 20,  # last.ckpt cadence, the resume point after a SIGKILL
    "precision": "32-true",  # on GPU e.g. bf16-mixed or 16-mixed; CPU always trains in 32-true
    "num_workers": 0,
    "num_threads": None,  # torch intra-op threads; None leaves torch's default
    "length": 200,  # fMRI window L (time points)
    "eeg_length": 200,  # EEG envelope window (samples)
    "standardize": True,  # z-score each ROI time series over its valid time points
    "augment": {},  # name -> kwargs, see brainfuse.methods.torch.augment.AUGMENTATIONS
    "head_hidden": 64,
    "dropout": 0.1,
    "freeze_encoder": False,  # train the classifier head only (linear probing of a previous stage)
    "keep_checkpoints": False,  # keep *.ckpt in checkpoint_dir after the stage succeeded
}

#: Stages of a method trained by the generic classifier stage: ``train`` fits encoder and head;
#: ``probe`` may follow it (e.g. with ``per_stage: {probe: {freeze_encoder: true}}``).
CLASSIFIER_STAGES = ("train", "probe")

# Issue 19: on the demo gcn_fc reached 0.72 and gat_fc 0.64 balanced accuracy (linear FC
# baseline 0.82). Each layer-normed node state lost its magnitude, which is where a node with
# raised correlations differs, and top-10 neighbours mixed each planted parcel's FC row with
# those of unplanted ones; 2 optimiser steps per epoch for 30 epochs on one FC estimate per
# subject overfit (train AUC 1, test scores on one side of 0.5). With no per-node norm, top-5
# graphs, 60 class-balanced epochs on pseudo-FC views: gcn_fc 1.00 / 0.78 / 0.88 and gat_fc
# 0.95 / 0.70 / 0.87 for seeds 0 / 1 / 2, logreg_fc 0.92 / 0.90 / 0.85 (bench methods).
_GRAPH_TRAINING: dict[str, Any] = {
    "top_k": 5,
    "norm": "none",
    "epochs": 60,
    "class_weighted": True,
    "augment": {"pseudo_fc": {"rate": 0.3}},
}

# Defaults chosen on the synthetic caches (brainfuse.methods.torch.synthetic: 24 subjects,
# planted FC effect, 3 folds x 3 seeds, one CPU core): the three FC methods reach a test AUC of
# 1.0 in every fold and seed in ~3 s per fold; the temporal transformer, which has to find the
# correlation effect in raw time points, averages 0.92 (min 0.62) in ~6 s per fold.
SPECS = (
    MethodSpec(
        name="gcn_fc",
        family="torch",
        modalities=("fmri",),
        stages=CLASSIFIER_STAGES,
        description="GCN (PyG GCNConv) on top-k |r| FC graphs, FC rows as node features",
        features="gcn",
        params={"hidden": 64, "n_layers": 2, "threshold": None, "lr": 3e-3, **_GRAPH_TRAINING},
    ),
    MethodSpec(
        name="gat_fc",
        family="torch",
        modalities=("fmri",),
        stages=CLASSIFIER_STAGES,
        description="graph attention network (PyG GATConv, r as edge feature) on top-k FC graphs",
        features="gat",
        params={
            "hidden": 64,
            "n_layers": 2,
            "heads": 4,
            "threshold": None,
            "lr": 3e-3,
            **_GRAPH_TRAINING,
        },
    ),
    MethodSpec(
        name="graph_transformer_fc",
        family="torch",
        modalities=("fmri",),
        stages=CLASSIFIER_STAGES,
        description="Brain Network Transformer style: FC rows as node tokens, cluster readout",
        features="graph_transformer",
        params={
            "d_model": 64,
            "n_heads": 4,
            "n_layers": 2,
            "dim_feedforward": 128,
            # The cluster readout (K x d_model -> d_model) overfits a few dozen samples.
            "readout": "mean",
            "n_clusters": 8,
            "dropout": 0.0,
            # Issue 19 (demo 0.42, one class predicted in most folds): the mean of layer-normed
            # tokens varies little between subjects, so 30 epochs of 2 steps left the logits
            # near the majority-class bias. Twice the steps, a class-balanced loss and a fresh
            # pseudo-FC per sample and epoch (FC of 70% of the time points: the model cannot
            # memorise one FC estimate) give 0.80-0.92 over seeds 0-2 (bench methods).
            "epochs": 60,
            "class_weighted": True,
            "augment": {"pseudo_fc": {"rate": 0.3}},
        },
    ),
    MethodSpec(
        name="temporal_transformer",
        family="torch",
        modalities=("fmri",),
        stages=CLASSIFIER_STAGES,
        description="transformer over time points of the ROI time series (window L)",
        features="temporal_transformer",
        params={
            "tokens": "time",
            "d_model": 64,
            "n_heads": 4,
            "n_layers": 2,
            "dim_feedforward": 128,
        },
    ),
)
