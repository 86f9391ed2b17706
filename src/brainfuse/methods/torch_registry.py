"""Torch methods and their default hyper-parameters.

This module imports neither torch nor Lightning, so that the Snakefile can read the registry
(modalities, stages, encoder names) without paying for those imports at parse time.

``TORCH_METHODS`` is merged into :data:`brainfuse.methods.catalog.METHODS` by the caller. A method
listed in :data:`PLUGIN_MODULES` builds its stages with the plugins that module registers (see
:mod:`brainfuse.methods.torch.plugins`); any other method trains its ``features`` encoder (a key of
:data:`brainfuse.methods.torch.encoders.ENCODERS`) with an MLP head in every stage.
"""

from __future__ import annotations

from typing import Any

from brainfuse.methods.catalog import MethodSpec

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
    "augment": {},  # name -> kwargs, see brainfuse.methods.torch.augment.AUGMENTATIONS
    "head_hidden": 64,
    "dropout": 0.1,
    "freeze_encoder": False,  # train the classifier head only (linear probing of a previous stage)
    "keep_checkpoints": False,  # keep *.ckpt in checkpoint_dir after the stage succeeded
}

#: Per-method defaults: the encoder's constructor arguments and any training overrides.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    # Chosen on the synthetic caches (brainfuse.methods.torch.synthetic: 24 subjects, planted FC
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
    # SC+FC fusion (brainfuse.methods.fusion.m3d_bfs). Architecture as in the paper (4-layer GCN,
    # hidden 128, 2 fusion layers, top-1 noisy gating, contrastive weight 0.5, alpha 0.6, tau
    # 0.1); schedule and fusion width sized for ~30 subjects on one CPU core (synthetic caches,
    # 30 subjects, 3 folds: 15-25 s per fold for the three stages).
    "m3d_bfs": {
        "hidden": 128,
        "n_layers": 4,
        "sc_top_k": None,  # SC edges kept per node (None: every edge, weighted)
        "fc_top_k": 10,  # FC edges kept per node (top |r|)
        "sc_standardize": True,  # z-score each subject's SC before it becomes node features
        "fc_standardize": False,
        # LayerNorm of node states erases a node's overall connection strength (a disconnected
        # parcel's signature): on the demo the SC encoder stayed at chance with it.
        "node_norm": "batch",
        "fusion_dim": 64,
        "n_fusion_layers": 2,
        "n_experts": 4,  # per MoE in the finetune stage (the pretrain stage has one)
        "expert_hidden": 64,
        "experts_k": 1,  # experts per node token
        "noisy_gating": True,
        "moe_coef": 0.01,  # scale of cv^2(importance) + cv^2(load)
        "clip_weight": 0.5,  # pretrain: CE + clip_weight * CLIP
        "clip_tau": 0.1,
        "disen_tau": 0.1,
        "alpha": 0.6,  # finetune: CE + alpha * L_moe + (1 - alpha) * L_disen
        "freeze_encoders_in_pretrain": False,
        # ~15 training subjects per fold: small batches give enough optimiser steps.
        "batch_size": 4,
        "epochs": 30,
        "lr": 2e-3,
        "per_stage": {},
    },
}
# ConneX (brainfuse.methods.fusion.connex) and its one-modality ablations share their defaults.
DEFAULT_PARAMS["connex"] = {
    "hidden": 64,
    "n_layers": 2,  # GCN layers of each modality's backbone
    "sc_top_k": None,
    "fc_top_k": 10,
    "sc_standardize": True,
    "fc_standardize": False,
    "node_norm": "batch",
    "heads": 4,
    "n_attention_layers": 1,
    "n_mixer_layers": 2,
    "token_hidden": 64,
    "channel_hidden": 128,
    "loss_weight_sc": 0.5,  # multi-head joint loss: weights of the SC, FC and fused heads
    "loss_weight_fc": 0.5,
    "loss_weight_fused": 1.0,
    "batch_size": 4,
    "epochs": 30,
    # The best validation epoch of the whole schedule: with a handful of validation subjects the
    # loss is noisy while BatchNorm's running statistics settle, and early stopping then quit
    # before learning (synthetic caches: test AUC 0.44 with patience 10, 0.94 without).
    "patience": 30,
}
DEFAULT_PARAMS["connex_sc_only"] = dict(DEFAULT_PARAMS["connex"])
DEFAULT_PARAMS["connex_fc_only"] = dict(DEFAULT_PARAMS["connex"])

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
    "m3d_bfs": MethodSpec(
        ("fmri", "sc"), "torch", features="m3d_bfs",
        description="M3D-BFS: SC/FC GCNs, mixtures of experts per modality and joint (3 stages)",
    ),
    "connex": MethodSpec(
        ("fmri", "sc"), "torch", features="connex",
        description="ConneX: SC/FC GCNs, cross-modal attention, MLP-Mixer, multi-head loss",
    ),
    "connex_sc_only": MethodSpec(
        ("sc",), "torch", features="connex",
        description="ConneX ablation on SC alone (GCN, self-attention, MLP-Mixer)",
    ),
    "connex_fc_only": MethodSpec(
        ("fmri",), "torch", features="connex",
        description="ConneX ablation on FC alone (GCN, self-attention, MLP-Mixer)",
    ),
}  # fmt: skip

#: Methods whose stages are plugins: method -> module that registers them when imported
#: (:func:`brainfuse.methods.torch.plugins.register_stage`). Strings, so this file stays torch-free.
PLUGIN_MODULES: dict[str, str] = {
    "m3d_bfs": "brainfuse.methods.fusion.m3d_bfs",
    "connex": "brainfuse.methods.fusion.connex",
    "connex_sc_only": "brainfuse.methods.fusion.connex",
    "connex_fc_only": "brainfuse.methods.fusion.connex",
}


def method_params(
    method: str, params: dict[str, Any] | None = None, stage: str | None = None
) -> dict[str, Any]:
    """Resolved hyper-parameters of ``method`` (and of one of its stages).

    Order, later winning: :data:`COMMON_PARAMS`, the method's :data:`DEFAULT_PARAMS`,
    ``params``, then - with ``stage`` - the method defaults' ``per_stage[stage]`` and
    ``params``' ``per_stage[stage]``.

    Parameters
    ----------
    method : str
        A key of :data:`TORCH_METHODS`.
    params : dict, optional
        Overrides (typically the config's ``methods.<name>.params``). ``stages`` is ignored, so
        the whole config entry can be passed. ``per_stage`` maps a stage name to overrides of
        that stage only, e.g. ``{"epochs": 30, "per_stage": {"finetune": {"lr": 3e-4}}}``.
    stage : str, optional
        Apply that stage's ``per_stage`` entries.

    Returns
    -------
    dict
        A new dict without ``per_stage``; ``encoder`` names the encoder (the method's
        ``features`` unless overridden).
    """
    if method not in TORCH_METHODS:
        raise KeyError(f"{method!r} is not a torch method; known: {sorted(TORCH_METHODS)}")
    defaults = dict(DEFAULT_PARAMS.get(method, {}))
    overrides = {k: v for k, v in (params or {}).items() if k != "stages"}
    per_stage = [defaults.pop("per_stage", None) or {}, overrides.pop("per_stage", None) or {}]
    for entry in per_stage:
        if not isinstance(entry, dict) or not all(isinstance(v, dict) for v in entry.values()):
            raise ValueError(f"methods.{method}.params.per_stage: expected stage -> dict")
    resolved = {
        "encoder": TORCH_METHODS[method].features,
        **COMMON_PARAMS,
        **defaults,
        **overrides,
    }
    if stage is not None:
        for entry in per_stage:
            resolved.update(entry.get(stage, {}))
    return resolved


# The self-supervised methods register themselves here (their registry imports no torch either).
from brainfuse.methods.ssl.registry import install_into as _install_ssl  # noqa: E402

_install_ssl(TORCH_METHODS, DEFAULT_PARAMS, PLUGIN_MODULES)
