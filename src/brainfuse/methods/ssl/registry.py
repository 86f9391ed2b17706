"""The self-supervised methods: specs, stages, default parameters and plugin modules.

Torch-free (like :mod:`brainfuse.methods.torch_registry`), so the Snakefile can read it cheaply.
:func:`install_into` merges these tables into the training registry; the stage plugins
themselves register when their module (:data:`SSL_PLUGIN_MODULES`) is imported.

Defaults are demo-sized (a few dozen subjects on a CPU core); :data:`PAPER_PARAMS` holds the
training schedule the MCSP paper reports, to be given as ``params`` on real data.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

from brainfuse.methods.catalog import MethodSpec

__all__ = [
    "PAPER_PARAMS",
    "SSL_DEFAULT_PARAMS",
    "SSL_METHODS",
    "SSL_PLUGIN_MODULES",
    "SSL_STAGES",
    "install",
    "install_into",
]

SSL_METHODS: dict[str, MethodSpec] = {
    "mcsp": MethodSpec(
        ("fmri", "eeg"), "torch", features="mcsp",
        description="MCSP: cross-domain (spatial/temporal/frequency) and cross-modal "
        "(fMRI-EEG) contrastive pre-training, fusion fine-tuning, distillation",
        optional=("eeg",),  # subjects without EEG train and predict with their fMRI alone
    ),
    "mcsp_fmri_only": MethodSpec(
        ("fmri",), "torch", features="mcsp",
        description="MCSP on fMRI alone: cross-domain contrastive pre-training, fine-tuning, "
        "distillation",
    ),
    "brainmass": MethodSpec(
        ("fmri",), "torch", features="brainmass",
        description="BrainMass: BYOL on pseudo-FC views + mask-ROI modelling, then fine-tuning",
    ),
    "brainmae": MethodSpec(
        ("fmri",), "torch", features="brainmae",
        description="BrainMAE: region-aware graph attention, masked autoencoding of ROI x "
        "segment patches, then fine-tuning",
    ),
    "dfc_generative": MethodSpec(
        ("fmri",), "torch", features="dfc_generative",
        description="masked reconstruction of sliding-window FC sequences, then fine-tuning",
    ),
}  # fmt: skip

#: Stages of each method, in order (what ``config.yaml`` lists).
SSL_STAGES: dict[str, tuple[str, ...]] = {
    "mcsp": ("pretrain", "finetune", "distill"),
    "mcsp_fmri_only": ("pretrain", "finetune", "distill"),
    "brainmass": ("pretrain", "finetune"),
    "brainmae": ("pretrain", "finetune"),
    "dfc_generative": ("pretrain", "finetune"),
}

SSL_PLUGIN_MODULES: dict[str, str] = {
    "mcsp": "brainfuse.methods.ssl.mcsp",
    "mcsp_fmri_only": "brainfuse.methods.ssl.mcsp",
    "brainmass": "brainfuse.methods.ssl.brainmass",
    "brainmae": "brainfuse.methods.ssl.brainmae",
    "dfc_generative": "brainfuse.methods.ssl.dfc_generative",
}

#: Parameters every self-supervised method accepts.
_SSL_COMMON: dict[str, Any] = {
    # Pre-train on every subject but the validation ones (labels unused); else training only.
    "pretrain_on_all_unlabelled": False,
    # Frozen-embedding evaluation in metrics.json: standardised linear SVM and logistic
    # regression on the training subjects plus few-shot draws (k subjects per class).
    "frozen_eval": False,
    "few_shot": [2, 4, 8],
    "few_shot_repeats": 10,
    "frozen_C": 1.0,
    "encoder_dropout": 0.1,
}

_MCSP: dict[str, Any] = {
    **_SSL_COMMON,
    "d_model": 64,
    "n_heads": 4,
    "n_layers": 2,
    "dim_feedforward": 128,
    "proj_hidden": 64,
    "proj_dim": 32,
    "tau": 0.1,  # temperature of every contrastive term
    "alpha": 0.8,  # in-domain (resp. contrastive) share of the cross-domain (cross-modal) loss
    "cross_modal_weight": 1.0,
    "eeg_band": "alpha",  # an EEG band of the cache, or "mean" (mean envelope / AEC over bands)
    # Add each parcel's log amplitude relative to the subject's mean (from band_power) to its
    # z-scored envelope: z-scoring removes the amplitude topography, a common EEG effect.
    "eeg_amplitude": True,
    # The augmented views of the in-domain term.
    "view_edge_drop": 0.2,
    "view_edge_noise": 0.05,
    "view_time_noise": 0.2,
    "view_time_mask": 0.1,
    "view_freq_mask": 0.1,
    "view_freq_noise": 0.1,
    # Distillation: w * CE(teacher) + (1 - w) * CE(labels); predictions from the students.
    "distill_soft_weight": 0.5,
    "distill_temperature": 1.0,
    # auto (chosen on the validation subjects) | mean | spatial | temporal | frequency
    "student_readout": "auto",
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "per_stage": {
        "pretrain": {"epochs": 20, "batch_size": 8, "patience": 20},
        "finetune": {"epochs": 20, "batch_size": 8},
        "distill": {"epochs": 20, "batch_size": 8},
    },
}

SSL_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "mcsp": _MCSP,
    "mcsp_fmri_only": copy.deepcopy(_MCSP),
    "brainmass": {
        **_SSL_COMMON,
        "frozen_eval": True,
        # Pseudo-FC views come from the served window: a long one covers the whole run (and
        # matches the run's FC that the embeddings are evaluated on).
        "length": 1200,
        "n_heads": 4,  # divides d_model = N
        "n_layers": 2,
        "dim_feedforward": 256,
        "readout_dim": 1,  # per-node readout; embedding N x readout_dim
        "proj_hidden": 256,
        "proj_dim": 64,
        "view_drop": 0.2,  # share of time points dropped in a pseudo-FC view
        "mask_ratio": 0.15,  # share of valid ROIs masked
        "momentum": 0.996,  # EMA of the BYOL target
        "byol_weight": 1.0,
        "nce_weight": 0.1,
        "mse_weight": 2.0,
        "nce_tau": 0.1,
        # A random MLP head: the pre-trained embeddings carry little of the demo's effect (probe
        # 0.57), and fine-tuning from that probe ended lower (0.52-0.65) than from scratch (0.71).
        "head_init": "random",
        "per_stage": {
            "pretrain": {"epochs": 30, "batch_size": 16, "patience": 30},
            "finetune": {"epochs": 30, "lr": 1e-3},
        },
    },
    "brainmae": {
        **_SSL_COMMON,
        "segment": 20,  # time points per patch (L // segment segments)
        "d_model": 64,
        "d_embed": 32,  # ROI embeddings (region-aware adjacency)
        "n_heads": 4,
        "n_layers": 2,
        "dim_feedforward": 128,
        "mask_ratio": 0.5,
        "decoder_dim": 32,
        "decoder_layers": 1,
        "decoder_heads": 4,
        # Fine-tuning starts from the linear probe of the pre-trained embeddings (LP-FT); that
        # needs a linear head.
        "head_init": "probe",
        "head_hidden": 0,
        # Fine-tuning readout: similarity (cosine similarity of the ROIs' token trajectories,
        # upper triangle) | mean.
        "readout": "similarity",
        "per_stage": {
            "pretrain": {"epochs": 30, "batch_size": 16, "patience": 30},
            # From the probe, small steps: larger ones left the demo's fine-tuned models below
            # their starting point (lr 1e-3: balanced accuracy 0.57, 3e-5: 0.78).
            "finetune": {"epochs": 20, "lr": 3e-5},
        },
    },
    "dfc_generative": {
        **_SSL_COMMON,
        "dfc_window": None,  # None: the cache's fmri.dfc_window (else 30)
        "dfc_step": None,  # None: the cache's fmri.dfc_step (else 5)
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "dim_feedforward": 128,
        "window_mask_ratio": 0.3,
        "edge_mask_ratio": 0.3,
        # Fine-tuning starts from the linear probe of the pre-trained embeddings (LP-FT); that
        # needs a linear head.
        "head_init": "probe",
        "head_hidden": 0,
        "per_stage": {
            "pretrain": {"epochs": 30, "batch_size": 16, "patience": 30},
            "finetune": {"epochs": 20, "lr": 3e-5},  # as BrainMAE (demo: 0.73 against 0.60)
        },
    },
}

#: Training schedules of the papers, for real data (``methods.<name>.params``).
PAPER_PARAMS: dict[str, dict[str, Any]] = {
    "mcsp": {
        "optimizer": "adam",
        "lr": 5e-4,
        "scheduler": "cosine",
        "per_stage": {
            "pretrain": {"epochs": 400, "batch_size": 128},
            "finetune": {"epochs": 50, "batch_size": 32},
            "distill": {"epochs": 50, "batch_size": 32},
        },
    },
}
PAPER_PARAMS["mcsp_fmri_only"] = copy.deepcopy(PAPER_PARAMS["mcsp"])


def install_into(
    torch_methods: MutableMapping[str, MethodSpec],
    default_params: MutableMapping[str, dict[str, Any]],
    plugin_modules: MutableMapping[str, str],
) -> None:
    """Add the self-supervised methods to a registry's tables (idempotent)."""
    torch_methods.update(SSL_METHODS)
    default_params.update(copy.deepcopy(SSL_DEFAULT_PARAMS))
    plugin_modules.update(SSL_PLUGIN_MODULES)


def install() -> None:
    """Add the self-supervised methods to :mod:`brainfuse.methods.torch_registry` and to
    :data:`brainfuse.methods.catalog.METHODS` (idempotent; for scripts and tests run before the
    training registry merges them itself)."""
    from brainfuse.methods import catalog as methods
    from brainfuse.methods import torch_registry as registry

    install_into(registry.TORCH_METHODS, registry.DEFAULT_PARAMS, registry.PLUGIN_MODULES)
    methods.METHODS.update(SSL_METHODS)
