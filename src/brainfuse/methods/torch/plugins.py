"""Stage plugins: what one stage of a torch method trains, and how it is evaluated.

A torch method is an ordered list of stages (``config.yaml``: ``methods.<name>.stages``); the
``train_stage`` rule runs every (method, stage, fold) as its own job, with the previous stage's
``model.bin`` as an input. :func:`~.runner.run_torch_stage` owns everything that is the same for
every stage - joined modalities and fold subsets, augmentations, resumable loaders, the Trainer,
periodic and SIGTERM checkpoints, fingerprinted resume, model selection on the validation split,
the single read of the test subjects, and the atomic ``model.bin``/``metrics.json``/
``predictions.tsv``. A :class:`StagePlugin` supplies what differs between stages: a
:class:`~.module.StageModule` (the network and its losses) and whether the stage is supervised.

Evaluation of a stage
---------------------
Every stage writes test predictions and metrics, so each stage's numbers are honest:

* a **supervised** stage (``supervised=True``) is selected on the validation cross-entropy (or
  the ``monitor`` parameter) and predicts the test subjects with its own :meth:`logits`;
* a **self-supervised** stage (``supervised=False``) is selected on its validation loss (the
  mean of :meth:`losses` over the validation subjects; ``monitor`` must be ``val_loss``) and
  is evaluated by a linear probe on its frozen :meth:`embed`: a logistic regression
  (standardised features, balanced class weights) fitted on the fold's training subjects, ``C``
  chosen on the validation subjects (balanced accuracy, then AUC), the test subjects touched
  once (:func:`linear_probe`).

Lookup
------
:func:`plugin_for` returns the plugin of ``(spec, stage)``. A method whose
:attr:`~brainfuse.methods.spec.MethodSpec.plugin` names a module gets its stages from that
module's ``stage_plugins(spec) -> dict[str, StagePlugin]``, imported when a stage runs (so the
catalog stays torch-free and nothing registers itself at import). A method without a plugin
module trains :data:`CLASSIFIER` (its ``features`` encoder plus an MLP head, cross-entropy) in
every stage, which is how the reference methods (``gcn_fc``, ``gat_fc``, ...) run.

Parameters
----------
A stage's parameters (``StageContext.hp``) are resolved by
:meth:`~brainfuse.methods.catalog.Catalog.params` ``(method, params, stage)``: the torch
family's :data:`~brainfuse.methods.torch.specs.COMMON_PARAMS`, then the spec's ``params``, then
the config's ``params``, then the entries of ``per_stage[<stage>]`` (from the defaults, then
from the config), so one method's stages can differ in epochs, learning rate, ... Unknown keys
are refused.

Writing a stage: a worked example
---------------------------------
A two-stage method, ``my_ssl``: masked-node pre-training, then supervised fine-tuning.

.. code-block:: python

    # my_pkg/my_ssl.py (any importable module, inside brainfuse or not)
    import torch
    from torch import Tensor, nn

    from brainfuse.methods.spec import MethodSpec
    from brainfuse.methods.torch.encoders import GraphTransformer
    from brainfuse.methods.torch.module import StageModule
    from brainfuse.methods.torch.plugins import StageContext, StagePlugin


    class Network(nn.Module):
        # One network for both stages: the fine-tuning stage loads the pre-trained tensors by
        # name (StageModule.load_previous), so the names must match.
        def __init__(self, n_nodes: int, d_model: int) -> None:
            super().__init__()
            self.encoder = GraphTransformer(n_nodes, d_model=d_model, readout="mean")
            self.decoder = nn.Linear(d_model, n_nodes)  # pre-training only
            self.head = nn.Linear(d_model, 2)  # fine-tuning only


    class Pretrain(StageModule):
        input_keys = ("fc", "node_mask")  # batch keys served to this stage

        def __init__(self, ctx: StageContext) -> None:
            super().__init__(Network(ctx.n_nodes, ctx.hp["d_model"]), ctx.hp, ctx.class_weights)
            self.mask_ratio = ctx.hp["mask_ratio"]

        def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
            # Hide random nodes, predict every node's strength from the rest. Random draws use
            # the global torch generator: checkpoints save it (exact resume), and the base
            # class fixes it per batch during validation.
            fc, mask = batch["fc"], batch["node_mask"]
            hidden = (torch.rand(mask.shape, device=fc.device) < self.mask_ratio) & mask
            seen = mask & ~hidden
            visible = fc * seen[:, :, None] * seen[:, None, :]
            strength = self.model.decoder(self.model.encoder(visible, seen))  # (B, N)
            loss = ((strength - fc.abs().mean(-1)) ** 2)[hidden].mean()
            return {"loss": loss, "strength_mse": loss}  # "loss" is minimised; all are logged

        def embed(self, batch: dict[str, Tensor]) -> Tensor:  # read by the linear probe
            return self.model.encoder(batch["fc"], batch["node_mask"])


    class Finetune(Pretrain):
        def losses(self, batch):
            return {"loss": self.cross_entropy(self.logits(batch), batch["y"])}

        def logits(self, batch):  # supervised stages predict with this
            return self.model.head(self.embed(batch))


    def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
        return {
            "pretrain": StagePlugin(Pretrain, supervised=False),
            "finetune": StagePlugin(Finetune, supervised=True),
        }

and its catalog entry (no torch there; inside brainfuse, in a family's ``specs.py``)::

    catalog.add(MethodSpec(
        name="my_ssl", family="torch", modalities=("fmri",), stages=("pretrain", "finetune"),
        description="masked-node pre-training, then fine-tuning",
        params={"d_model": 64, "mask_ratio": 0.3,
                "per_stage": {"finetune": {"lr": 3e-4, "epochs": 20}}},
        plugin="my_pkg.my_ssl",
    ))

plus ``my_ssl: {stages: [pretrain, finetune]}`` in ``config.yaml``.

The contract, in short (see :class:`~.module.StageModule`):

* ``build(ctx)`` (here the class itself) is called after ``seed_everything(seed)``; draw
  initial weights there and nowhere else, so runs are reproducible;
* ``self.model`` holds every tensor of the stage; ``model.bin`` stores its ``state_dict`` and
  the next stage receives that file. By default :meth:`~.module.StageModule.load_previous`
  copies every tensor with the same name and shape; override it to map weights differently
  (M3D-BFS copies one expert into all experts). Freeze in ``build``
  (``requires_grad_(False)``): the optimiser skips frozen tensors and frozen sub-modules run in
  eval mode;
* ``losses(batch)`` returns named scalars, ``"loss"`` the one minimised; all randomness inside
  it must come from the global torch generator (or from generators seeded from the batch),
  which checkpoints save, so a killed and resumed run ends with the same weights;
* ``embed(batch)`` is the (B, D) representation (probed for a self-supervised stage),
  ``logits(batch)`` the (B, 2) logits of a supervised stage;
* ``input_keys`` lists the batch keys read; the keys available are those of
  :class:`~.data.BrainDataset` (``fc``, ``node_mask``, ``timeseries``, ``time_mask``,
  ``fft``, ``sc``, EEG keys, always ``y`` and ``index``);
* optional: ``test_extras(test_set, batch_size, device)`` adds entries to ``metrics.json`` and
  writes extra tables into the stage's ``tables`` folder (M3D-BFS: ``routing.tsv``);
  ``attach(...)`` may be overridden to change the training set (``self.supervised`` and
  ``self.fingerprint`` are set by then). Validation, checkpoint hooks, the optimiser and the
  schedule are the base class's.

``tests/test_fusion.py`` runs this example (``test_self_supervised_stage_is_probed_and_chained``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.torch.data import BrainDataset, eval_loader
from brainfuse.methods.torch.encoders import BrainClassifier, build_encoder
from brainfuse.methods.torch.module import LitClassifier, StageModule

log = logging.getLogger("brainfuse")

__all__ = [
    "CLASSIFIER",
    "StageContext",
    "StagePlugin",
    "embeddings",
    "fit_linear_probe",
    "linear_probe",
    "plugin_for",
]


@dataclass(frozen=True)
class StageContext:
    """What a plugin's ``build`` may read.

    Attributes
    ----------
    method, stage : str
        The method and the stage being built.
    fold : int
        Outer fold.
    seed : int
        The run's seed (``seed_everything`` has been called with it).
    hp : dict
        Resolved parameters of this stage (see the module docstring).
    dataset : BrainDataset
        All samples of the method's modalities (every field), e.g. for sizes or metadata; never
        fit anything on it (it holds the test subjects).
    train_set : BrainDataset
        The fold's training samples (no augmentation), e.g. for statistics of the inputs.
    class_weights : list of float, optional
        Inverse-frequency class weights of the training split when ``class_weighted`` is set.
    previous : str, optional
        The previous stage's ``model.bin``; the runner loads it after ``build`` through
        :meth:`~.module.StageModule.load_previous`, so ``build`` only needs it to read
        metadata.
    """

    method: str
    stage: str
    fold: int
    seed: int
    hp: dict[str, Any]
    dataset: BrainDataset
    train_set: BrainDataset
    class_weights: list[float] | None = None
    previous: str | None = None

    @property
    def n_nodes(self) -> int:
        """N, the atlas size of the anchor modality."""
        return self.dataset.n_nodes


@dataclass(frozen=True)
class StagePlugin:
    """One stage of a method.

    Attributes
    ----------
    build : callable
        ``build(ctx: StageContext) -> StageModule``; a StageModule subclass taking the context
        works as is.
    supervised : bool
        Whether the stage trains a classifier (evaluated with its logits) or learns
        representations without labels (evaluated with a linear probe on :meth:`embed`).
    description : str
        One line for logs and the report.
    """

    build: Callable[[StageContext], StageModule]
    supervised: bool
    description: str = field(default="")


def plugin_for(spec: MethodSpec, stage: str) -> StagePlugin:
    """The plugin of ``spec``'s ``stage``, from the spec's plugin module (imported here).

    Methods without a plugin module use :data:`CLASSIFIER` in every stage.

    Raises
    ------
    KeyError
        When the method is not a torch method or its module has no such stage.
    """
    if spec.family != "torch":
        raise KeyError(f"{spec.name!r} is not a torch method (family {spec.family!r})")
    if spec.plugin is None:
        return CLASSIFIER
    plugins = importlib.import_module(spec.plugin).stage_plugins(spec)
    try:
        return plugins[stage]
    except KeyError:
        raise KeyError(
            f"method {spec.name!r} has no stage {stage!r}; its stages: {sorted(plugins)}"
        ) from None


# --------------------------------------------------------------------------- default classifier


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


def build_classifier_model(hp: dict[str, Any], n_nodes: int) -> BrainClassifier:
    """The :class:`BrainClassifier` of a reference method: ``hp["encoder"]`` and an MLP head."""
    encoder = build_encoder(hp["encoder"], n_nodes, **_encoder_kwargs(hp))
    return BrainClassifier(encoder, 2, hidden=hp["head_hidden"], dropout=hp["dropout"])


def _build_classifier(ctx: StageContext) -> LitClassifier:
    hp = ctx.hp
    return LitClassifier(
        build_classifier_model(hp, ctx.n_nodes),
        lr=hp["lr"],
        weight_decay=hp["weight_decay"],
        optimizer=hp["optimizer"],
        scheduler=hp["scheduler"],
        warmup_epochs=hp["warmup_epochs"],
        min_lr_ratio=hp["min_lr_ratio"],
        label_smoothing=hp["label_smoothing"],
        class_weights=ctx.class_weights,
        freeze_encoder=hp["freeze_encoder"],
    )


#: Every stage of a method without plugins: encoder + head trained with cross-entropy
#: (``freeze_encoder`` trains the head only, e.g. to probe a previous stage).
CLASSIFIER = StagePlugin(
    _build_classifier, supervised=True, description="encoder + MLP head, cross-entropy"
)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embeddings(
    module: StageModule, dataset: BrainDataset, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """(n, D) :meth:`~.module.StageModule.embed` of every sample of ``dataset``, in order (eval
    mode)."""
    module = module.to(device).eval()
    out = []
    for batch in eval_loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(module.embed(batch).float().flatten(1).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    groups_train: np.ndarray | None = None,
    groups_val: np.ndarray | None = None,
):
    """A logistic regression probe of embeddings, or None when the training and validation
    labels have one class.

    Standardised features, balanced class weights; ``C`` chosen among
    :data:`~brainfuse.methods.baselines.estimators.C_GRID` by subject-grouped inner
    cross-validation over the training and validation samples
    (:func:`~brainfuse.methods.baselines.estimators.fit_select`, as the baselines), then fitted
    on all of them.

    Parameters
    ----------
    x_train, x_val : ndarray
        (n, D) embeddings.
    y_train, y_val : ndarray
        0/1 labels.
    seed : int
        Seed of the inner splits and the estimator.
    groups_train, groups_val : ndarray, optional
        Subject of each sample (default: each sample its own subject).

    Returns
    -------
    model : sklearn Pipeline or None
        ``StandardScaler`` then ``LogisticRegression``.
    c : float
        The chosen ``C``.
    """
    from brainfuse.methods.baselines.estimators import fit_select

    if len(np.unique(np.concatenate([y_train, y_val]))) < 2:
        return None, 1.0
    return fit_select(
        "logreg",
        x_train,
        y_train,
        x_val,
        y_val,
        seed,
        groups_train=groups_train,
        groups_val=groups_val,
    )


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    seed: int,
    groups_train: np.ndarray | None = None,
    groups_val: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Positive-class probabilities of the test samples from :func:`fit_linear_probe`'s probe
    (the test samples are scored once, by the selected probe; without a second class in the
    training labels, the training share of positives for everyone).

    Returns
    -------
    y_score : ndarray
        (n_test,) probabilities.
    c : float
        The chosen ``C``.
    """
    model, c = fit_linear_probe(x_train, y_train, x_val, y_val, seed, groups_train, groups_val)
    if model is None:
        return np.full(len(x_test), float(np.mean(y_train)) if len(y_train) else 0.5), c
    if len(x_test) == 0:
        return np.zeros(0), c
    return model.predict_proba(x_test)[:, 1], c
