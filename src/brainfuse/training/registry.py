"""Torch methods and their default hyper-parameters.

This module imports neither torch nor Lightning, so that the Snakefile can read the registry
(modalities, stages, encoder names) without paying for those imports at parse time.

``TORCH_METHODS`` is merged into :data:`brainfuse.methods.METHODS` by the caller; a method's
``features`` field names the encoder it trains (a key of
:data:`brainfuse.training.encoders.ENCODERS`).
"""

from __future__ import annotations

from typing import Any

from ..methods import MethodSpec

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
    "min_epochs": 1,
    "checkpoint_every_n_steps": 20,  # last.ckpt cadence, the resume point after a SIGKILL
    "precision": "32-true",  # on GPU e.g. bf16-mixed or 16-mixed; CPU always trains in 32-true
    "num_workers": 0,
    "num_threads": None,  # torch intra-op threads; None leaves torch's default
    "length": 200,  # fMRI window L (time points)
    "eeg_length": 200,  # EEG envelope window (samples)
    "standardize": True,  # z-score each ROI time series over its valid time points
    "augment": {},  # name -> kwargs, see brainfuse.training.augment.AUGMENTATIONS
    "head_hidden": 64,
    "dropout": 0.1,
    "freeze_encoder": False,  # train the classifier head only (linear probing of a previous stage)
    "keep_checkpoints": False,  # keep *.ckpt in checkpoint_dir after the stage succeeded
}

#: Per-method defaults: the encoder's constructor arguments and any training overrides.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    # Chosen on the synthetic caches (brainfuse.training.synthetic: 24 subjects, planted FC
    # effect, 3 folds x 3 seeds, one CPU core): the three FC methods reach a test AUC of 1.0 in
    # every fold and seed in ~3 s per fold; the temporal transformer, which has to find the
    # correlation effect in raw time points, averages 0.92 (min 0.62) in ~6 s per fold.
    "gcn_fc": {"hidden": 64, "n_layers": 2, "top_k": 10, "threshold": None, "lr": 3e-3},
    "gat_fc": {
        "hidden": 64,
        "n_layers": 2,
        "heads": 4,
        "top_k": 10,
        "threshold": None,
        "lr": 3e-3,
    },
    "graph_transformer_fc": {
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "dim_feedforward": 128,
        # The cluster readout (K x d_model -> d_model) overfits a few dozen samples.
        "readout": "mean",
        "n_clusters": 8,
        "dropout": 0.0,
    },
    "temporal_transformer": {
        "tokens": "time",
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "dim_feedforward": 128,
    },
}

TORCH_METHODS: dict[str, MethodSpec] = {
    "gcn_fc": MethodSpec(
        ("fmri",), "torch", features="gcn",
        description="GCN (PyG GCNConv) on top-k |r| FC graphs, FC rows as node features",
    ),
    "gat_fc": MethodSpec(
        ("fmri",), "torch", features="gat",
        description="graph attention network (PyG GATConv, r as edge feature) on top-k FC graphs",
    ),
    "graph_transformer_fc": MethodSpec(
        ("fmri",), "torch", features="graph_transformer",
        description="Brain Network Transformer style: FC rows as node tokens, cluster readout",
    ),
    "temporal_transformer": MethodSpec(
        ("fmri",), "torch", features="temporal_transformer",
        description="transformer over time points of the ROI time series (window L)",
    ),
}  # fmt: skip


def method_params(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolved hyper-parameters of ``method``: common, then method defaults, then ``params``.

    Parameters
    ----------
    method : str
        A key of :data:`TORCH_METHODS`.
    params : dict, optional
        Overrides (typically the config's ``methods.<name>.params``). ``stages`` is ignored, so
        the whole config entry can be passed.

    Returns
    -------
    dict
        A new dict; ``encoder`` names the encoder (the method's ``features`` unless overridden).
    """
    if method not in TORCH_METHODS:
        raise KeyError(f"{method!r} is not a torch method; known: {sorted(TORCH_METHODS)}")
    overrides = {k: v for k, v in (params or {}).items() if k != "stages"}
    return {
        "encoder": TORCH_METHODS[method].features,
        **COMMON_PARAMS,
        **DEFAULT_PARAMS.get(method, {}),
        **overrides,
    }
