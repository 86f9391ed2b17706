"""Building blocks shared by the self-supervised methods.

* Batch-level view generators (:func:`masked_pearson`, :func:`pseudo_fc`, :func:`augment_graph`,
  :func:`augment_series`, :func:`augment_spectrum`): they act on whole (B, ...) batches on the
  model's device and draw from the global torch generator unless given one (stage checkpoints
  save that generator, and validation fixes it per batch, see
  :class:`~brainfuse.methods.torch.module.StageModule`).
* :class:`MLP` (projectors, predictors, heads).
* :class:`SSLStage`: the :class:`~brainfuse.methods.torch.module.StageModule` base of every stage of
  this package: parameters, loading the previous stage by
  name prefix (:func:`load_matching`) and the frozen-embedding evaluation of
  :func:`frozen_embedding_metrics` (linear SVM and logistic regression on standardised
  embeddings, few-shot draws) added to ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from brainfuse.methods.torch.module import StageModule

if TYPE_CHECKING:
    from brainfuse.methods.torch.data import BrainDataset
    from brainfuse.methods.torch.plugins import StageContext

log = logging.getLogger("brainfuse")

__all__ = [
    "MLP",
    "SSLStage",
    "augment_graph",
    "augment_series",
    "augment_spectrum",
    "frozen_embedding_metrics",
    "load_matching",
    "masked_pearson",
    "pseudo_fc",
]


def _rand(shape: Sequence[int], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.rand(tuple(shape), generator=gen, device=like.device, dtype=like.dtype)


def _randn(shape: Sequence[int], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return torch.randn(tuple(shape), generator=gen, device=like.device, dtype=like.dtype)


def masked_pearson(x: Tensor, keep: Tensor, node_mask: Tensor | None = None) -> Tensor:
    """Pearson r between the rows of each (N, L) sample over the time points in ``keep``.

    Parameters
    ----------
    x : Tensor
        (B, N, L) time series.
    keep : Tensor
        (B, L) bool, the time points used.
    node_mask : Tensor, optional
        (B, N) bool; masked (and flat) nodes get zero rows and columns.

    Returns
    -------
    Tensor
        (B, N, N) correlations with a unit diagonal for valid nodes (as
        :func:`brainfuse.methods.torch.augment.pearson`, batched).
    """
    w = keep.to(x.dtype).unsqueeze(1)
    n = w.sum(-1, keepdim=True).clamp(min=1.0)
    xc = (x - (x * w).sum(-1, keepdim=True) / n) * w
    norm = xc.norm(dim=-1)
    valid = norm > 1e-8
    if node_mask is not None:
        valid = valid & node_mask.bool()
    z = xc / torch.where(valid, norm, torch.ones_like(norm)).unsqueeze(-1)
    r = (z @ z.transpose(1, 2)).clamp(-1.0, 1.0)
    pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    r = r.masked_fill(~pair | eye, 0.0)
    return r + torch.diag_embed(valid.to(x.dtype))


def pseudo_fc(
    timeseries: Tensor,
    time_mask: Tensor,
    node_mask: Tensor | None,
    rate: float,
    gen: torch.Generator | None = None,
) -> Tensor:
    """Pseudo-FC views: Pearson r after dropping ``rate`` of each sample's valid time points.

    Exactly ``max(3, round((1 - rate) * n_valid))`` valid points are kept per sample (a uniform
    random subset), as :class:`~brainfuse.methods.torch.augment.TimePointDrop` does for one sample.

    Parameters
    ----------
    timeseries : Tensor
        (B, N, L).
    time_mask : Tensor
        (B, L) bool, valid time points.
    node_mask : Tensor, optional
        (B, N) bool.
    rate : float
        Share of valid time points dropped.
    gen : torch.Generator, optional
        Source of the draws (on the batch's device); default: the global generator.
    """
    valid = time_mask.bool()
    n_valid = valid.sum(-1)
    n_keep = torch.clamp(torch.round((1.0 - rate) * n_valid.float()), min=3).long()
    n_keep = torch.minimum(n_keep, n_valid)
    score = _rand(valid.shape, gen, timeseries).masked_fill(~valid, 2.0)
    rank = score.argsort(-1).argsort(-1)
    keep = rank < n_keep.unsqueeze(-1)
    return masked_pearson(timeseries, keep, node_mask)


def augment_graph(
    fc: Tensor,
    node_mask: Tensor | None,
    edge_drop: float,
    sigma: float,
    gen: torch.Generator | None = None,
) -> Tensor:
    """A perturbed view of (B, N, N) correlation graphs: symmetric edge dropping with
    probability ``edge_drop`` and symmetric Gaussian edge noise ``sigma`` (clipped to [-1, 1]);
    the diagonal and masked nodes are unchanged."""
    b, n, _ = fc.shape
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=fc.device), diagonal=1)
    keep = (_rand((b, n, n), gen, fc) >= edge_drop) & upper
    keep = keep | keep.transpose(1, 2) | torch.eye(n, dtype=torch.bool, device=fc.device)
    noise = torch.triu(_randn((b, n, n), gen, fc), diagonal=1)
    noise = (noise + noise.transpose(1, 2)) * sigma
    if node_mask is not None:
        m = node_mask.bool()
        noise = noise * (m.unsqueeze(-1) & m.unsqueeze(-2))
    out = (fc * keep + noise).clamp(-1.0, 1.0)
    eye = torch.eye(n, dtype=torch.bool, device=fc.device)
    return torch.where(eye, fc, out)


def augment_series(
    x: Tensor,
    time_mask: Tensor,
    sigma: float,
    mask_rate: float,
    gen: torch.Generator | None = None,
) -> Tensor:
    """A perturbed view of (B, N, L) series: Gaussian noise ``sigma`` on valid points, then
    each valid time point zeroed (for every ROI) with probability ``mask_rate``."""
    valid = time_mask.bool().unsqueeze(1).to(x.dtype)
    noisy = x + sigma * _randn(x.shape, gen, x) * valid
    drop = (_rand((x.shape[0], 1, x.shape[-1]), gen, x) < mask_rate).to(x.dtype)
    return noisy * (1.0 - drop) * valid


def augment_spectrum(
    spectrum: Tensor, max_share: float, sigma: float, gen: torch.Generator | None = None
) -> Tensor:
    """A perturbed view of (B, N, F) amplitude spectra: one random band of at most
    ``max_share * F`` bins (never the DC bin) zeroed per sample, then multiplicative noise
    ``exp(sigma * e)``."""
    b, _, f = spectrum.shape
    width = (_rand((b,), gen, spectrum) * max(1, int(max_share * f))).long() + 1
    start = 1 + (_rand((b,), gen, spectrum) * max(1, f - 1 - int(width.max()))).long()
    bins = torch.arange(f, device=spectrum.device)
    band = (bins >= start.unsqueeze(-1)) & (bins < (start + width).unsqueeze(-1))
    noise = torch.exp(sigma * _randn(spectrum.shape, gen, spectrum))
    return spectrum * noise * (~band).unsqueeze(1).to(spectrum.dtype)


class MLP(nn.Sequential):
    """``Linear -> (BatchNorm|LayerNorm) -> ReLU -> Linear`` (or one Linear when
    ``hidden == 0``).

    Parameters
    ----------
    in_dim, hidden, out_dim : int
        Sizes.
    norm : {"batch", "layer", "none"}
        Normalisation of the hidden layer (BYOL uses batch norm in its projector/predictor).
    dropout : float
        Dropout before the last layer.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, norm: str = "layer", dropout: float = 0.0
    ) -> None:
        if hidden <= 0:
            super().__init__(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
            return
        norms: dict[str, nn.Module] = {
            "batch": nn.BatchNorm1d(hidden),
            "layer": nn.LayerNorm(hidden),
            "none": nn.Identity(),
        }
        if norm not in norms:
            raise ValueError(f"norm={norm!r}: expected one of {sorted(norms)}")
        super().__init__(
            nn.Linear(in_dim, hidden),
            norms[norm],
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )


# --------------------------------------------------------------------------- frozen evaluation


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) > 1 else math.nan


def frozen_embedding_metrics(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    shots: Sequence[int] = (2, 4, 8),
    repeats: int = 10,
    c: float = 1.0,
    seed: int = 0,
    train_groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Linear read-outs of frozen embeddings: full training set and few-shot draws.

    Embeddings are standardised on the training rows (inside each fitted pipeline), then a
    logistic regression and a linear SVM are fitted.

    Parameters
    ----------
    train_x, test_x : ndarray
        (n, D) embeddings.
    train_y, test_y : ndarray
        0/1 labels.
    shots : sequence of int
        k, labelled training subjects per class of a few-shot draw (values above the smaller
        class's subject count are skipped).
    repeats : int
        Draws per k.
    c : float
        Inverse regularisation strength of both models.
    seed : int
        Seed of the draws.
    train_groups : ndarray, optional
        Subject of each training row; a draw picks subjects (all their rows), not rows.

    Returns
    -------
    dict
        ``{"logreg": {"auc": ...}, "svm": {"auc": ...}, "few_shot": {"logreg": {"k=2": {"auc_mean",
        "auc_std", "balanced_accuracy_mean", "draws"}, ...}, "svm": {...}}}``; NaN where the
        test set has one class.
    """
    from sklearn.metrics import balanced_accuracy_score

    from brainfuse.methods.baselines.estimators import make_estimator, scores

    groups = np.arange(len(train_y)) if train_groups is None else np.asarray(train_groups)
    out: dict[str, Any] = {}
    both = len(np.unique(train_y)) > 1 and len(test_y) > 0
    for kind in ("logreg", "svm"):
        if not both:
            out[kind] = {"auc": math.nan, "balanced_accuracy": math.nan}
            continue
        model = make_estimator(kind, c, seed).fit(train_x, train_y)
        pred = model.predict(test_x)
        out[kind] = {
            "auc": _auc(test_y, scores(model, test_x)),
            "balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
        }
    rng = np.random.default_rng(seed)
    subjects = {k: np.unique(groups[train_y == k]) for k in (0, 1)}
    few: dict[str, dict[str, Any]] = {"logreg": {}, "svm": {}}
    for k in shots:
        if not both or k > min(len(subjects[0]), len(subjects[1])):
            continue
        draws: dict[str, list[tuple[float, float]]] = {"logreg": [], "svm": []}
        for _ in range(int(repeats)):
            chosen = np.concatenate([rng.choice(subjects[c_], k, replace=False) for c_ in (0, 1)])
            rows = np.isin(groups, chosen)
            for kind in ("logreg", "svm"):
                model = make_estimator(kind, c, seed).fit(train_x[rows], train_y[rows])
                pred = model.predict(test_x)
                draws[kind].append(
                    (_auc(test_y, scores(model, test_x)), balanced_accuracy_score(test_y, pred))
                )
        for kind, values in draws.items():
            auc = np.array([v[0] for v in values], dtype=float)
            bacc = np.array([v[1] for v in values], dtype=float)
            few[kind][f"k={k}"] = {
                "auc_mean": float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan,
                "auc_std": float(np.nanstd(auc)) if np.isfinite(auc).any() else math.nan,
                "balanced_accuracy_mean": float(bacc.mean()),
                "draws": len(values),
            }
    out["few_shot"] = few
    return out


# --------------------------------------------------------------------------- stage base


def load_matching(
    model: nn.Module, path: str, prefixes: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Copy the tensors of a ``model.bin`` whose names (and shapes) match ``model``'s.

    Parameters
    ----------
    model : nn.Module
        Receives the tensors.
    path : str
        A ``model.bin`` of :func:`~brainfuse.methods.torch.runner.run_torch_stage`.
    prefixes : sequence of str, optional
        Only names starting with one of these are considered (on both sides); the other tensors
        of the file are ignored silently (e.g. a pre-training decoder that a fine-tuning stage
        does not have).

    Returns
    -------
    dict
        ``missing``, ``unexpected`` and ``mismatched`` key lists, as
        :func:`~brainfuse.methods.torch.weights.load_previous` reports them.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a joblib file, or a damaged file
        raise ValueError(f"{path}: not a torch model.bin ({err})") from err
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state_dict in the file")

    def wanted(key: str) -> bool:
        return prefixes is None or any(key.startswith(p) for p in prefixes)

    own = {k: v for k, v in model.state_dict().items() if wanted(k)}
    state = {k: v for k, v in state.items() if wanted(k)}
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    loadable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    model.load_state_dict(loadable, strict=False)
    report = {
        "missing": sorted(set(own) - set(loadable) - set(mismatched)),
        "unexpected": sorted(k for k in state if k not in own),
        "mismatched": mismatched,
    }
    log.info("loaded %d tensors from %s", len(loadable), path)
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            log.warning("previous stage %s: %s keys: %s", path, kind, ", ".join(report[kind]))
    return report


class HeadFinetune:
    """Fine-tuning mixin: a linear/MLP ``model.head`` on the stage's ``embed``, cross-entropy.

    ``head_init: probe`` starts fine-tuning from the linear probe (LP-FT, Kumar et al., 2022):
    before the first step of a fresh run, a standardised logistic regression is fitted to the
    pre-trained embeddings of the training and validation subjects (``C`` by inner
    cross-validation, :func:`~brainfuse.methods.torch.plugins.fit_linear_probe`) and folded into
    the linear head.
    With a
    random head, the first updates push large, noisy gradients into the pre-trained encoder;
    on a few dozen subjects this undid what pre-training had learnt (demo: fine-tuned models
    below their own linear probes). ``head_init: random`` keeps the usual initialisation.
    """

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.head(self.embed(batch))

    def on_fit_start(self) -> None:
        # A resumed run restores its head from the checkpoint instead.
        if self.hp.get("head_init") == "probe" and self.trainer.ckpt_path is None:
            self.initialise_head_from_probe()

    @torch.no_grad()
    def initialise_head_from_probe(self) -> float | None:
        """Set the linear head to the probe of the current embeddings; returns its ``C`` (None
        when the training subjects have one class and the head is left as it is)."""
        from brainfuse.methods.torch.plugins import embeddings, fit_linear_probe

        linear = _single_linear(self.model.head)
        train = self._labelled_train.subset(
            self._labelled_train.table["subject"], train=False, transform=None
        )
        sets = [train] + ([self.val_set] if self.val_set is not None else [])
        x = [embeddings(self, data, self.batch_size, self.device) for data in sets]
        y = [data.labels for data in sets]
        groups = [data.table["subject"].astype(str).to_numpy() for data in sets]
        if self.val_set is None:
            x.append(x[0][:0])
            y.append(y[0][:0])
            groups.append(groups[0][:0])
        probe, c = fit_linear_probe(x[0], y[0], x[1], y[1], self.seed, groups[0], groups[1])
        self.train()
        if probe is None:
            return None
        scaler, logreg = probe[0], probe[-1]
        w = logreg.coef_[0] / scaler.scale_
        b = logreg.intercept_[0] - float(w @ scaler.mean_)
        # softmax([0, z]) with z = w.x + b gives the probe's positive-class probability.
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1] = torch.as_tensor(w, dtype=linear.weight.dtype)
        linear.bias[1] = float(b)
        log.info("head initialised from the linear probe (C=%g)", c)
        return c

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": self.cross_entropy(self.logits(batch), batch["y"])}


def _single_linear(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1 or linears[0].out_features != 2:
        raise ValueError(
            "head_init=probe needs a linear head (head_hidden: 0); this head has "
            f"{len(linears)} linear layers"
        )
    return linears[0]


class SSLStage(StageModule):
    """Base of the stage modules of the self-supervised methods.

    Adds to :class:`~brainfuse.methods.torch.module.StageModule`:

    * the fold's labelled training subjects kept for the frozen-embedding probe (a
      self-supervised stage sees the fold's training subjects only, never the test subjects);
    * :meth:`load_previous` restricted to :attr:`load_prefixes`;
    * ``frozen_eval`` (bool parameter): :meth:`test_extras` adds ``frozen_embeddings`` to
      ``metrics.json``, the :func:`frozen_embedding_metrics` of :meth:`embed` (fitted on the
      fold's labelled training subjects, scored on the test subjects).

    Parameters
    ----------
    ctx : StageContext
        The stage's context.
    model : nn.Module
        Every tensor of the stage.
    """

    #: Name prefixes of ``self.model`` initialised from the previous stage (None: all).
    load_prefixes: tuple[str, ...] | None = None

    def __init__(self, ctx: StageContext, model: nn.Module) -> None:
        super().__init__(model, ctx.hp, ctx.class_weights)
        self.hp: dict[str, Any] = dict(ctx.hp)
        self.seed = int(ctx.seed)
        self._labelled_train: BrainDataset | None = None

    def attach(
        self,
        train_set: BrainDataset,
        val_set: BrainDataset | None,
        batch_size: int,
        num_workers: int,
        epochs: int,
    ) -> None:
        """Keep the labelled training set for the frozen-embedding probe."""
        self._labelled_train = train_set
        super().attach(train_set, val_set, batch_size, num_workers, epochs)

    def load_previous(self, path: str) -> dict[str, list[str]]:
        """Initialise the tensors under :attr:`load_prefixes` from the previous ``model.bin``."""
        return load_matching(self.model, path, self.load_prefixes)

    def test_extras(
        self, test_set: BrainDataset, batch_size: int, device: torch.device
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``n_pretrain`` (samples a self-supervised stage trained on) and, when the
        ``frozen_eval`` parameter is set, ``frozen_embeddings`` metrics."""
        extras: dict[str, Any] = {}
        if not self.supervised and self.train_set is not None:
            extras["n_pretrain"] = len(self.train_set)
        if not self.hp.get("frozen_eval", False) or self._labelled_train is None:
            return extras, {}
        from brainfuse.methods.torch.plugins import embeddings

        labelled = self._labelled_train
        train = labelled.subset(labelled.table["subject"].astype(str), train=False, transform=None)
        x_train = embeddings(self, train, batch_size, device)
        x_test = embeddings(self, test_set, batch_size, device)
        result = frozen_embedding_metrics(
            x_train,
            train.labels,
            x_test,
            test_set.labels,
            shots=tuple(self.hp.get("few_shot", (2, 4, 8))),
            repeats=int(self.hp.get("few_shot_repeats", 10)),
            c=float(self.hp.get("frozen_C", 1.0)),
            seed=self.seed,
            train_groups=train.table["subject"].astype(str).to_numpy(),
        )
        return {**extras, "frozen_embeddings": result}, {}
