"""Composable, seeded augmentations of brain-network samples, applied on the fly.

Each augmentation is a small callable ``aug(sample, generator) -> sample`` over one item of
:class:`~brainfuse.methods.torch.data.BrainDataset` (a dict of tensors). It is applied with
probability ``p`` and has one documented strength parameter; all random draws come from the
``torch.Generator`` it is given, so a sample's augmentation is reproducible from
``(seed, epoch, sample)``. Augmentations never modify their input tensors in place.

Graph augmentations act on ``fc`` (and on ``sc``, ``timeseries`` and ``node_mask`` where a node
disappears); time augmentations act on the keys in ``keys`` (``timeseries`` by default, or
``envelopes``), respecting the window's ``time_mask``: padding stays zero.

Example
-------
>>> aug = Compose([EdgeDrop(rate=0.1), TimeFlip(p=0.5)])
>>> aug = build_augmentations({"edge_drop": {"rate": 0.1}, "time_flip": {"p": 0.5}})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from brainfuse.methods.torch.data import adjust_fc, apply_per_item

Sample = dict[str, Tensor]

#: The mask that delimits the valid time points of each time-series key.
TIME_MASK = {"timeseries": "time_mask", "envelopes": "envelope_mask"}


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=generator)


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class Augmentation:
    """Base class: applies :meth:`apply` with probability ``p``.

    Parameters
    ----------
    p : float
        Probability that the augmentation is applied to a sample.
    """

    #: Item keys the augmentation needs (the dataset must serve them).
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, p: float = 1.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p} is not a probability")
        self.p = float(p)

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        # The coin is always drawn so that later draws do not depend on p.
        coin = float(_uniform(generator, 1))
        return self.apply(dict(sample), generator) if coin < self.p else sample

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        raise NotImplementedError

    def batch(self, batch: Sample, generators: Sequence[torch.Generator]) -> Sample:
        """Apply to a stacked batch, item ``b`` drawing from ``generators[b]``: the same result
        as calling the augmentation on each item. Augmentations with heavy arithmetic override
        it to do that arithmetic once for the batch."""
        return apply_per_item(self, batch, generators)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply augmentations in order, with one generator.

    Parameters
    ----------
    augmentations : sequence of callables
        Each ``aug(sample, generator) -> sample``.
    """

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(sorted({k for a in self.augmentations for k in a.requires}))

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        for aug in self.augmentations:
            sample = aug(sample, generator)
        return sample

    def batch(self, batch: Sample, generators: Sequence[torch.Generator]) -> Sample:
        """Apply to a stacked batch (see :meth:`Augmentation.batch`); each item's generator
        sees the same draws in the same order as with :meth:`__call__`."""
        for aug in self.augmentations:
            batch = aug.batch(batch, generators)
        return batch

    def __len__(self) -> int:
        return len(self.augmentations)

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


# --------------------------------------------------------------------------- graph


def _node_mask(sample: Sample) -> Tensor:
    fc = sample["fc"]
    return sample.get("node_mask", torch.ones(fc.shape[-1], dtype=torch.bool))


def drop_nodes(sample: Sample, drop: Tensor) -> Sample:
    """Remove the nodes where ``drop`` is True: zero rows/columns, clear their mask entry."""
    keep = ~drop
    out = dict(sample)
    for key in ("fc", "sc"):
        if key in out:
            out[key] = out[key] * keep.unsqueeze(-1) * keep.unsqueeze(-2)
    if "timeseries" in out:
        out["timeseries"] = out["timeseries"] * keep.unsqueeze(-1)
    out["node_mask"] = _node_mask(sample) & keep
    return out


def _symmetric_uniform(generator: torch.Generator, n: int) -> Tensor:
    """A symmetric (n, n) matrix of U(0, 1) draws (upper triangle mirrored)."""
    upper = torch.triu(_uniform(generator, n, n), diagonal=1)
    return upper + upper.T


class NodeDrop(Augmentation):
    """Drop each valid node with probability ``rate`` (its FC/SC row and column and its time
    series become 0, its ``node_mask`` entry False).

    Parameters
    ----------
    rate : float
        Share of nodes dropped on average (strength), default 0.1.
    p : float
        Probability of applying.
    """

    requires = ("fc",)

    def __init__(self, rate: float = 0.1, p: float = 1.0) -> None:
        super().__init__(p)
        self.rate = float(rate)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        mask = _node_mask(sample)
        drop = (_uniform(generator, mask.shape[-1]) < self.rate) & mask
        return drop_nodes(sample, drop)


class EdgeDrop(Augmentation):
    """Set each off-diagonal FC edge (a symmetric pair) to 0 with probability ``rate``.

    Parameters
    ----------
    rate : float
        Share of edges removed (strength), default 0.1.
    keys : sequence of str
        Matrices to thin (``fc`` and/or ``sc``); each gets its own draw.
    p : float
        Probability of applying.
    """

    requires = ("fc",)

    def __init__(self, rate: float = 0.1, keys: Sequence[str] = ("fc",), p: float = 1.0) -> None:
        super().__init__(p)
        self.rate, self.keys = float(rate), tuple(keys)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        for key in self.keys:
            n = sample[key].shape[-1]
            keep = _symmetric_uniform(generator, n) >= self.rate
            keep |= torch.eye(n, dtype=torch.bool)
            sample[key] = sample[key] * keep
        return sample


class NodeFeatureNoise(Augmentation):
    """Add Gaussian noise to the node feature vectors of valid nodes.

    With the default ``keys=("fc",)`` the node features are FC rows, so the noise is *not*
    symmetric (each node's feature vector is perturbed independently); use
    :class:`EdgePerturbation` for symmetric noise on the graph itself.

    Parameters
    ----------
    sigma : float
        Noise standard deviation (strength), default 0.05.
    keys : sequence of str
        (..., N, F) node-feature tensors to perturb.
    p : float
        Probability of applying.
    """

    requires = ("fc",)

    def __init__(self, sigma: float = 0.05, keys: Sequence[str] = ("fc",), p: float = 1.0) -> None:
        super().__init__(p)
        self.sigma, self.keys = float(sigma), tuple(keys)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        mask = _node_mask(sample).unsqueeze(-1)
        for key in self.keys:
            x = sample[key]
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            sample[key] = x + self.sigma * noise * mask
        return sample


class EdgePerturbation(Augmentation):
    """Add symmetric Gaussian noise to the FC edges between valid nodes, clipped to [-1, 1];
    the diagonal is unchanged.

    Parameters
    ----------
    sigma : float
        Noise standard deviation on each edge (strength), default 0.05.
    p : float
        Probability of applying.
    """

    requires = ("fc",)

    def __init__(self, sigma: float = 0.05, p: float = 1.0) -> None:
        super().__init__(p)
        self.sigma = float(sigma)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        fc = sample["fc"]
        n = fc.shape[-1]
        upper = torch.triu(torch.randn((n, n), generator=generator), diagonal=1)
        mask = _node_mask(sample)
        valid = (mask.unsqueeze(-1) & mask.unsqueeze(-2)).to(fc.dtype)
        sample["fc"] = (fc + self.sigma * (upper + upper.T) * valid).clamp(-1.0, 1.0)
        return sample


class Subgraph(Augmentation):
    """Keep a connected neighbourhood: a random valid seed node and the ``keep`` share of valid
    nodes most strongly connected to it (by |r|); the other nodes are dropped as in
    :class:`NodeDrop`.

    Parameters
    ----------
    keep : float
        Share of valid nodes kept (strength; smaller is stronger), default 0.8.
    p : float
        Probability of applying.
    """

    requires = ("fc",)

    def __init__(self, keep: float = 0.8, p: float = 1.0) -> None:
        super().__init__(p)
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep={keep} must be in (0, 1]")
        self.keep = float(keep)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        mask = _node_mask(sample)
        valid = torch.nonzero(mask).flatten()
        if len(valid) == 0:
            return sample
        seed = int(valid[_randint(generator, 0, len(valid) - 1)])
        strength = sample["fc"][seed].abs().masked_fill(~mask, -1.0)
        strength[seed] = math.inf
        n_keep = max(1, math.ceil(self.keep * len(valid)))
        kept = torch.zeros_like(mask)
        kept[torch.topk(strength, n_keep).indices] = True
        return drop_nodes(sample, mask & ~kept)


# --------------------------------------------------------------------------- time


def _valid_width(sample: Sample, key: str) -> int:
    return int(sample[TIME_MASK[key]].sum())


def pearson(x: Tensor, node_mask: Tensor, time_weight: Tensor | None = None) -> Tensor:
    """Pearson r between the rows of x (..., N, T) over the time points where ``time_weight``
    (..., T) is 1 (all by default): zero rows/columns for masked or flat nodes, unit diagonal
    for the others."""
    if time_weight is None:
        x = x - x.mean(-1, keepdim=True)
    else:
        weight = time_weight.to(x.dtype).unsqueeze(-2)
        count = weight.sum(-1, keepdim=True).clamp(min=1.0)
        x = (x - (x * weight).sum(-1, keepdim=True) / count) * weight
    norm = x.norm(dim=-1)
    valid = node_mask & (norm > 1e-8)
    z = x / torch.where(valid, norm, torch.ones_like(norm)).unsqueeze(-1)
    pairs = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    r = (z @ z.transpose(-1, -2)).clamp(-1.0, 1.0) * pairs
    eye = torch.eye(x.shape[-2], dtype=torch.bool)
    return torch.where(eye, valid.unsqueeze(-1).to(r.dtype), r)


class TimePointDrop(Augmentation):
    """Pseudo-FC: recompute ``fc`` from the time series after dropping a share of its valid time
    points (the time series itself is left unchanged).

    Parameters
    ----------
    rate : float
        Share of valid time points dropped (strength), default 0.2; at least 3 points are kept.
    p : float
        Probability of applying.
    """

    requires = ("fc", "timeseries")

    def __init__(self, rate: float = 0.2, p: float = 1.0) -> None:
        super().__init__(p)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate={rate} must be in [0, 1)")
        self.rate = float(rate)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        width = _valid_width(sample, "timeseries")
        n_keep = max(3, round((1.0 - self.rate) * width))
        if n_keep >= width:
            return sample
        kept = torch.randperm(width, generator=generator)[:n_keep].sort().values
        x = sample["timeseries"][:, kept]
        # the cached FC was harmonised in the fold; its view gets the same adjustment
        sample["fc"] = adjust_fc(pearson(x, _node_mask(sample)), sample).to(sample["fc"].dtype)
        return sample

    def batch(self, batch: Sample, generators: Sequence[torch.Generator]) -> Sample:
        """One batched Pearson over each item's kept time points (the per-item draws as in
        :meth:`apply`)."""
        widths = batch["time_mask"].sum(-1).tolist()
        weight = torch.zeros(batch["time_mask"].shape)
        applied = torch.zeros(len(generators), dtype=torch.bool)
        for b, (generator, width) in enumerate(zip(generators, widths, strict=True)):
            if float(_uniform(generator, 1)) >= self.p:
                continue
            n_keep = max(3, round((1.0 - self.rate) * width))
            if n_keep < width:
                weight[b, torch.randperm(width, generator=generator)[:n_keep]] = 1.0
                applied[b] = True
        if not applied.any():
            return batch
        out = dict(batch)
        fc = adjust_fc(pearson(batch["timeseries"], _node_mask(batch), weight), batch)
        out["fc"] = torch.where(applied[:, None, None], fc.to(batch["fc"].dtype), batch["fc"])
        return out


class _TimeAugmentation(Augmentation):
    def __init__(self, keys: Sequence[str] = ("timeseries",), p: float = 1.0) -> None:
        super().__init__(p)
        unknown = set(keys) - set(TIME_MASK)
        if unknown:
            raise ValueError(f"no time mask known for {sorted(unknown)}")
        self.keys = tuple(keys)

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.keys


class TimeNoise(_TimeAugmentation):
    """Add Gaussian noise to the valid time points (padding stays 0).

    Parameters
    ----------
    sigma : float
        Noise standard deviation (strength; series are z-scored, so relative to their SD),
        default 0.1.
    keys : sequence of str
        ``timeseries`` and/or ``envelopes``.
    p : float
        Probability of applying.
    """

    def __init__(
        self, sigma: float = 0.1, keys: Sequence[str] = ("timeseries",), p: float = 1.0
    ) -> None:
        super().__init__(keys, p)
        self.sigma = float(sigma)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        for key in self.keys:
            x = sample[key]
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            sample[key] = x + self.sigma * noise * sample[TIME_MASK[key]]
        return sample


class TimeFlip(_TimeAugmentation):
    """Reverse the valid part of the time axis (time reversal; FC is unchanged by it).

    Parameters
    ----------
    keys : sequence of str
        ``timeseries`` and/or ``envelopes``.
    p : float
        Probability of applying (the strength), default 0.5.
    """

    def __init__(self, keys: Sequence[str] = ("timeseries",), p: float = 0.5) -> None:
        super().__init__(keys, p)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        for key in self.keys:
            width = _valid_width(sample, key)
            x = sample[key].clone()
            x[..., :width] = x[..., :width].flip(-1)
            sample[key] = x
        return sample


class TimeCrop(_TimeAugmentation):
    """Keep a random contiguous share of the valid time points, moved to the start of the
    window; the rest becomes padding (``time_mask`` False).

    Parameters
    ----------
    min_share : float
        Smallest share of the valid points kept (strength; the share is drawn uniformly in
        [min_share, 1]), default 0.8.
    keys : sequence of str
        ``timeseries`` and/or ``envelopes``; each is cropped independently.
    p : float
        Probability of applying.
    """

    def __init__(
        self, min_share: float = 0.8, keys: Sequence[str] = ("timeseries",), p: float = 1.0
    ) -> None:
        super().__init__(keys, p)
        if not 0.0 < min_share <= 1.0:
            raise ValueError(f"min_share={min_share} must be in (0, 1]")
        self.min_share = float(min_share)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        for key in self.keys:
            width = _valid_width(sample, key)
            new = _randint(generator, max(1, math.ceil(self.min_share * width)), max(width, 1))
            start = _randint(generator, 0, width - new)
            x = torch.zeros_like(sample[key])
            x[..., :new] = sample[key][..., start : start + new]
            mask = torch.zeros_like(sample[TIME_MASK[key]])
            mask[:new] = True
            sample[key], sample[TIME_MASK[key]] = x, mask
        return sample


class FrequencyMask(_TimeAugmentation):
    """SpecAugment-style frequency masking: zero a random band of rFFT bins of the valid part of
    each series and transform back (``fft``, if served, is computed afterwards).

    Parameters
    ----------
    max_share : float
        Largest band width as a share of the frequency bins (strength), default 0.1.
    n_masks : int
        Bands masked per application.
    keys : sequence of str
        ``timeseries`` and/or ``envelopes``.
    p : float
        Probability of applying.
    """

    def __init__(
        self,
        max_share: float = 0.1,
        n_masks: int = 1,
        keys: Sequence[str] = ("timeseries",),
        p: float = 1.0,
    ) -> None:
        super().__init__(keys, p)
        self.max_share, self.n_masks = float(max_share), int(n_masks)

    def apply(self, sample: Sample, generator: torch.Generator) -> Sample:
        for key in self.keys:
            width = _valid_width(sample, key)
            if width < 4:
                continue
            spectrum = torch.fft.rfft(sample[key][..., :width], dim=-1)
            n_bins = spectrum.shape[-1]
            for _ in range(self.n_masks):
                band = _randint(generator, 1, max(1, int(self.max_share * n_bins)))
                start = _randint(generator, 1, max(1, n_bins - band))  # keep the DC bin
                spectrum[..., start : start + band] = 0
            x = sample[key].clone()
            x[..., :width] = torch.fft.irfft(spectrum, n=width, dim=-1)
            sample[key] = x
        return sample


#: Names usable in the ``augment`` parameter of a torch method.
AUGMENTATIONS: dict[str, type[Augmentation]] = {
    "node_drop": NodeDrop,
    "edge_drop": EdgeDrop,
    "node_noise": NodeFeatureNoise,
    "edge_perturb": EdgePerturbation,
    "subgraph": Subgraph,
    "pseudo_fc": TimePointDrop,
    "time_noise": TimeNoise,
    "time_flip": TimeFlip,
    "time_crop": TimeCrop,
    "freq_mask": FrequencyMask,
}


def build_augmentations(spec: Mapping[str, Mapping[str, Any]] | None) -> Compose | None:
    """Augmentations from a ``{name: kwargs}`` mapping, applied in the mapping's order.

    Returns None for an empty spec, so that the dataset skips augmentation entirely.
    """
    if not spec:
        return None
    unknown = set(spec) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {sorted(AUGMENTATIONS)}")
    return Compose([AUGMENTATIONS[name](**dict(kwargs or {})) for name, kwargs in spec.items()])
