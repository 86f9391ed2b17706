"""Torch datasets over the Parquet caches, with modalities joined per subject (and session).

Every graph has the atlas's N nodes, so samples batch densely: ``fc`` is (B, N, N), ``timeseries``
(B, N, L). Tensor columns are read once as numpy arrays (zero-copy from pyarrow, read-only); an
item copies only its own slices.

Time-window rule (fMRI time series and EEG envelopes): a run with ``n`` valid time points and a
window of ``L`` points gives

* ``n >= L`` - a random window of ``L`` points in training (``train=True``; the draw comes from
  the item's generator), the centred window ``[(n - L) // 2, (n - L) // 2 + L)`` otherwise;
* ``n < L`` - all ``n`` points followed by ``L - n`` zeros; ``time_mask`` is False on the padding.

Each ROI is z-scored over the run's valid time points before the window is cut
(``standardize=True``), so the statistics never depend on the window.

Randomness is a pure function of ``(seed, epoch, sample)``: an item's generator is seeded from
those three numbers, never from a stream that advances as items are read. Shuffling order, number
of workers and resuming from a checkpoint therefore do not change what a sample looks like.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, default_collate

from brainfuse.core.cache import Cache, read_cache

log = logging.getLogger("brainfuse")

Sample = dict[str, Tensor]
Transform = Callable[[Sample, torch.Generator], Sample]

#: The item keys each modality can serve (``y`` and ``index`` are always present).
MODALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "fmri": ("fc", "node_mask", "timeseries", "time_mask", "fft"),
    "eeg": ("envelopes", "envelope_mask", "aec", "band_power"),
    "sc": ("sc",),
}
#: Each sample's in-fold FC adjustment, (2, N, N): slope and offset per entry. Present only when
#: ``harmonise``/``confounds`` adjusted the FC (:mod:`.harmonise_inputs`); served with the time
#: series, so that FC computed from them in training is adjusted as the cached FC was.
FC_AFFINE = "fc_affine"
#: A data key and the mask key that travels with it.
COMPANION_MASK: dict[str, str] = {
    "fc": "node_mask", "timeseries": "time_mask", "fft": "time_mask",
    "envelopes": "envelope_mask",
}  # fmt: skip


def join_modalities(
    tables: Mapping[str, pd.DataFrame],
    anchor: str | None = None,
    optional: Iterable[str] = (),
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Join the samples of several modalities by subject (and session when both tables have one).

    The anchor modality (the first one by default) keeps one row per sample (e.g. per fMRI run);
    every other modality contributes its first row (in ``sample_id`` order) of the same subject
    and session, as column ``row_<modality>``.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        Each cache's identifier table (``subject``, optional ``session``, ``sample_id``, ...).
    anchor : str, optional
        The modality whose rows are the samples.
    optional : iterable of str
        Non-anchor modalities a sample may lack: it is kept, with ``row_<modality> = -1``.

    Returns
    -------
    joined : DataFrame
        The anchor's columns plus ``row_<modality>`` (int) for every modality.
    missing : dict of str to list of str
        For each modality, the subjects that have some other modality but lack this one; their
        samples are left out (kept without it for an optional modality). Modalities with nobody
        missing are omitted.
    """
    optional = set(optional)
    names = list(tables)
    anchor = anchor or names[0]
    base = tables[anchor].reset_index(drop=True).copy()
    base[f"row_{anchor}"] = np.arange(len(base))
    missing: dict[str, list[str]] = {}
    for name in names:
        if name == anchor:
            continue
        other = tables[name].reset_index(drop=True).copy()
        other[f"row_{name}"] = np.arange(len(other))
        keys = ["subject"]
        if "session" in base.columns and "session" in other.columns:
            keys.append("session")
        left, right = _keyed(base, keys), _keyed(other, keys)
        if "sample_id" in right.columns:
            right = right.sort_values("sample_id", kind="stable")
        right = right.drop_duplicates("_key")[["_key", f"row_{name}"]]
        merged = left.merge(right, on="_key", how="left")
        lacking = merged[f"row_{name}"].isna()
        if lacking.any():
            missing[name] = sorted(set(merged.loc[lacking, "subject"].astype(str)))
        if name in optional:
            merged[f"row_{name}"] = merged[f"row_{name}"].fillna(-1)
        else:
            merged = merged.loc[~lacking]
        base = merged.drop(columns="_key").reset_index(drop=True)
        base[f"row_{name}"] = base[f"row_{name}"].astype(int)
    present = set(base["subject"].astype(str))
    without_anchor = {str(s) for n in names if n != anchor for s in tables[n]["subject"]} - set(
        tables[anchor]["subject"].astype(str)
    )
    if without_anchor:
        missing[anchor] = sorted(without_anchor - present)
    for name, subjects in missing.items():
        log.warning(
            "%d subject(s) lack %s data and are %s: %s",
            len(subjects),
            name,
            f"served without {name}" if name in optional else "left out of this dataset",
            ", ".join(subjects),
        )
    return base, missing


def _keyed(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = table.copy()
    parts = [out[k].astype(object).where(out[k].notna(), "").astype(str) for k in keys]
    out["_key"] = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    return out


def _resolve_fields(modalities: Sequence[str], fields: Iterable[str] | None) -> frozenset[str]:
    available = {f for m in modalities for f in MODALITY_FIELDS[m]}
    wanted = available if fields is None else set(fields)
    if not wanted <= available:
        raise ValueError(f"fields {sorted(wanted - available)} need another modality")
    return frozenset(wanted | {COMPANION_MASK[f] for f in wanted if f in COMPANION_MASK})


def adjust_fc(fc: Tensor, sample: Mapping[str, Tensor]) -> Tensor:
    """FC computed from a sample's (or a batch's) time series, with the in-fold adjustment of its
    cached FC applied (:data:`FC_AFFINE`); unchanged when there is none.

    ``fc`` is (..., N, N); its leading dimensions match those of the affine's (``B`` for a batch,
    none for a sample).
    """
    affine = sample.get(FC_AFFINE)
    if affine is None:
        return fc
    affine = affine.to(fc.dtype)
    out = fc * affine[..., 0, :, :] + affine[..., 1, :, :]
    node_mask = sample.get("node_mask")
    if node_mask is not None:  # masked parcels stay 0, whatever the offset
        node_mask = node_mask.bool()
        out = out * (node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)).to(out.dtype)
    return out


def crop_window(
    n_valid: int, length: int, train: bool, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Start and width of the time window (see the module docstring for the rule)."""
    if n_valid <= length:
        return 0, n_valid
    if train:
        start = int(torch.randint(0, n_valid - length + 1, (1,), generator=generator))
    else:
        start = (n_valid - length) // 2
    return start, length


def amplitude_spectrum(x: Tensor, time_mask: Tensor) -> Tensor:
    """|rFFT| of each row over the window, scaled by 1/sqrt(valid points); (..., L // 2 + 1)."""
    n_valid = time_mask.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
    return torch.fft.rfft(x, dim=-1).abs() / n_valid.sqrt()


def _series_stats(series: np.ndarray, n_valid: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD (1 where 0) over the first ``n_valid`` points of a (..., T) series, NaN read
    as 0; mean 0 and SD 1 (no scaling) for fewer than two points."""
    if n_valid <= 1:
        return np.zeros(series.shape[:-1], np.float32), np.ones(series.shape[:-1], np.float32)
    x = np.nan_to_num(series[..., :n_valid].astype(np.float32), nan=0.0)
    sd = x.std(axis=-1)
    return x.mean(axis=-1), np.where(sd > 0, sd, np.float32(1.0))


def _windows(
    series: np.ndarray,
    rows: np.ndarray,
    n_valid: np.ndarray,
    length: int,
    train: bool,
    generators: Sequence[torch.Generator | None],
    stats: Sequence[tuple[np.ndarray, np.ndarray]] | None,
) -> tuple[Tensor, Tensor]:
    """Cut rows of a (n, ..., T) series array to their windows: values (B, ..., L), masks (B, L).

    Only the window is read (NaN as 0) and, with ``stats`` (each row's mean and SD over its
    valid points, see :func:`_series_stats`), standardised; its start comes from
    :func:`crop_window` with the row's own generator.
    """
    out = np.zeros((len(rows), *series.shape[1:-1], length), np.float32)
    mask = np.zeros((len(rows), length), bool)
    for b, (row, n, gen) in enumerate(zip(rows, n_valid, generators, strict=True)):
        start, width = crop_window(int(n), length, train, gen)
        window = np.nan_to_num(series[row, ..., start : start + width].astype(np.float32), nan=0.0)
        if stats is not None:
            mean, sd = stats[b]
            window = (window - mean[..., None]) / sd[..., None]
        out[b, ..., :width] = window
        mask[b, :width] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def _n_timepoints(table: pd.DataFrame, rows: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Valid time points per row: the table's ``n_timepoints`` or the last finite column + 1."""
    if "n_timepoints" in table.columns:
        return table["n_timepoints"].to_numpy()[rows].astype(int)
    finite = np.isfinite(series[rows]).reshape(len(rows), -1, series.shape[-1]).any(axis=1)
    return np.where(finite.any(-1), series.shape[-1] - np.argmax(finite[:, ::-1], axis=-1), 0)


class BrainDataset(Dataset):
    """Samples of one or more caches, joined per subject, served as dicts of tensors.

    Parameters
    ----------
    caches : mapping of str to Cache or path
        Modality (``fmri``, ``eeg``, ``sc``) to cache; paths are read with
        :func:`brainfuse.core.cache.read_cache`.
    positive : str
        Label of the positive class (``y = 1``).
    modalities : sequence of str, optional
        Modalities to join, the first being the anchor whose rows are the samples (default: the
        keys of ``caches`` in order).
    fields : iterable of str, optional
        Item keys to serve (default: every key the modalities provide, see
        :data:`MODALITY_FIELDS`). A data key brings its mask along (``fc`` -> ``node_mask``,
        ``timeseries`` -> ``time_mask``, ...).
    length, eeg_length : int
        Windows of the fMRI time series and of the EEG envelopes (time points).
    train : bool
        Random windows (training) or centred windows (evaluation).
    transform : callable, optional
        ``transform(sample, generator) -> sample``, e.g. :class:`~.augment.Compose`; applied before
        ``fft`` is computed, so the spectrum always matches the served time series.
    seed : int
        Seed of the per-item generators.
    standardize : bool
        Z-score each ROI (and EEG band x node) over its valid time points.
    optional : iterable of str
        Non-anchor modalities a subject may lack: its samples are kept, and that modality's
        fields are zeros with all-False masks (EEG: ``envelope_mask``).

    Attributes
    ----------
    table : DataFrame
        One row per sample: the anchor's identifiers, ``y`` and ``row_<modality>``.
    missing : dict of str to list of str
        Subjects left out because they lack a modality (also logged as a warning).

    Notes
    -----
    Items are ``dict[str, Tensor]`` with, depending on the modalities: ``fc`` (N, N) Pearson r
    with NaN set to 0 (masked parcels have zero rows), ``node_mask`` (N,) bool, ``timeseries``
    (N, L), ``time_mask`` (L,) bool, ``fft`` (N, L // 2 + 1), ``envelopes`` (bands, N_eeg, L_eeg),
    ``envelope_mask`` (L_eeg,), ``aec`` (bands, N_eeg, N_eeg), ``band_power`` (bands, N_eeg),
    ``sc`` (N, N); always ``y`` (int64) and ``index`` (int64, the item's position in this
    dataset). ``dataset[i]`` uses epoch 0; ``dataset[i, epoch]`` draws that epoch's randomness.
    """

    def __init__(
        self,
        caches: Mapping[str, Cache | str | Path],
        positive: str,
        modalities: Sequence[str] | None = None,
        fields: Iterable[str] | None = None,
        length: int = 200,
        eeg_length: int = 200,
        train: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
        standardize: bool = True,
        optional: Iterable[str] = (),
    ) -> None:
        self.modalities = tuple(modalities or caches)
        unknown = [m for m in self.modalities if m not in MODALITY_FIELDS]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {sorted(MODALITY_FIELDS)}")
        loaded = {
            m: c if isinstance(c, Cache) else read_cache(c)
            for m, c in caches.items() if m in self.modalities
        }  # fmt: skip
        self.metadata = {m: loaded[m].metadata for m in self.modalities}
        self._arrays = {m: loaded[m].arrays for m in self.modalities}
        self._tables = {m: loaded[m].table for m in self.modalities}
        self.optional = frozenset(optional)
        if self.modalities[0] in self.optional or not self.optional <= {"eeg"}:
            raise ValueError(f"optional={sorted(self.optional)}: only a non-anchor EEG may be")
        table, self.missing = join_modalities(self._tables, self.modalities[0], self.optional)
        table["y"] = (table["label"].astype(str) == str(positive)).astype(np.int64)
        self.positive = str(positive)
        self.fields = _resolve_fields(self.modalities, fields)
        self.length, self.eeg_length = int(length), int(eeg_length)
        self.train, self.transform, self.seed = train, transform, int(seed)
        self.standardize = standardize
        # per (modality, key): (cache row, valid points) -> mean, SD; shared by subsets and views
        self._series_stats: dict[tuple[str, str], dict[tuple[int, int], tuple]] = {}
        self._set_table(table)

    def _set_table(self, table: pd.DataFrame) -> None:
        self.table = table.reset_index(drop=True)
        self._rows = {m: self.table[f"row_{m}"].to_numpy() for m in self.modalities}
        self._y = self.table["y"].to_numpy()
        self._n_time: dict[str, np.ndarray] = {}
        for m, key in (("fmri", "timeseries"), ("eeg", "envelopes")):
            if m in self.modalities and key in self._arrays[m]:
                series, rows = self._arrays[m][key], self._rows[m]
                n_time = _n_timepoints(self._tables[m], np.maximum(rows, 0), series)
                self._n_time[m] = np.where(rows >= 0, n_time, 0)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        """0/1 labels of the samples, in order."""
        return self._y

    @property
    def n_nodes(self) -> int:
        """Nodes of the anchor modality's graphs (the atlas size for fMRI and SC)."""
        anchor = self.modalities[0]
        key = {"fmri": "fc", "eeg": "aec", "sc": "sc"}[anchor]
        return int(self._arrays[anchor][key].shape[-1])

    def with_fields(self, fields: Iterable[str]) -> BrainDataset:
        """A view of this dataset that serves only ``fields`` (and their masks)."""
        out = copy.copy(self)
        out.fields = _resolve_fields(self.modalities, fields)
        return out

    def subset(
        self,
        subjects: Iterable[str],
        *,
        train: bool | None = None,
        transform: Transform | None | type[Ellipsis] = Ellipsis,
    ) -> BrainDataset:
        """The samples of ``subjects`` (e.g. one fold role), sharing this dataset's arrays.

        ``train`` and ``transform`` replace this dataset's values when given (``transform=None``
        removes the transform).
        """
        keep = self.table["subject"].astype(str).isin({str(s) for s in subjects})
        out = copy.copy(self)
        out._set_table(self.table.loc[keep])
        if train is not None:
            out.train = train
        if transform is not Ellipsis:
            out.transform = transform  # type: ignore[assignment]
        return out

    def generator(self, index: int, epoch: int) -> torch.Generator:
        """The generator of item ``index`` in ``epoch`` (keyed by the sample's cache row)."""
        row = int(self._rows[self.modalities[0]][index])
        state = np.random.SeedSequence([self.seed, int(epoch), row]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        return {k: v[0] for k, v in self.__getitems__([key]).items()}

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> Sample:
        """A batch of items, stacked (``fc`` (B, N, N), ``y`` (B,), ...): what
        :class:`~torch.utils.data.DataLoader` asks for; see :func:`collate_batch`.

        Reading, masking and windowing run on the whole batch at once; each item's random draws
        still come from its own generator, in the order the items are listed, so an item looks
        the same whichever batch it is in.
        """
        pairs = [(k, 0) if isinstance(k, (int, np.integer)) else k for k in keys]
        index = np.array([int(i) for i, _ in pairs], dtype=np.int64)
        random = self.train or self.transform is not None
        gens = [self.generator(i, e) if random else None for i, e in pairs]
        batch: Sample = {}
        if "fmri" in self.modalities:
            batch |= self._fmri_batch(index, gens)
        if "eeg" in self.modalities:
            batch |= self._eeg_batch(index, gens)
        if "sc" in self.modalities and "sc" in self.fields:
            sc = self._arrays["sc"]["sc"][self._rows["sc"][index]]
            batch["sc"] = torch.from_numpy(np.nan_to_num(sc.astype(np.float32), nan=0.0))
        if self.transform is not None and len(index):
            batch = _transform_batch(self.transform, batch, gens)  # type: ignore[arg-type]
        if "fft" in self.fields:
            batch["fft"] = amplitude_spectrum(batch["timeseries"], batch["time_mask"].unsqueeze(1))
        batch["y"] = torch.from_numpy(self._y[index].astype(np.int64))
        batch["index"] = torch.from_numpy(index)
        return batch

    def _fmri_batch(self, index: np.ndarray, gens: list[torch.Generator | None]) -> Sample:
        arrays, rows, out = self._arrays["fmri"], self._rows["fmri"][index], {}
        fc = arrays["fc"][rows]
        node_mask = np.isfinite(np.diagonal(fc, axis1=-2, axis2=-1))
        if "node_mask" in arrays:
            node_mask &= arrays["node_mask"][rows].astype(bool)
        out["node_mask"] = torch.from_numpy(node_mask)
        if "fc" in self.fields:
            fc = np.nan_to_num(fc.astype(np.float32, copy=False), nan=0.0, copy=False)
            if not node_mask.all():  # masked parcels: zero rows and columns
                fc = fc * (node_mask[:, :, None] & node_mask[:, None, :])
            out["fc"] = torch.from_numpy(fc)
        if self.fields & {"timeseries", "fft"}:
            n_valid = self._n_time["fmri"][index]
            x, time_mask = _windows(
                arrays["timeseries"],
                rows,
                n_valid,
                self.length,
                self.train,
                gens,
                self._stats("fmri", "timeseries", rows, n_valid),
            )
            out["timeseries"] = x * out["node_mask"].unsqueeze(-1)
            out["time_mask"] = time_mask
            if FC_AFFINE in arrays:
                out[FC_AFFINE] = torch.from_numpy(np.array(arrays[FC_AFFINE][rows]))
        return out

    def _stats(
        self, modality: str, key: str, rows: np.ndarray, n_valid: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each row's standardisation statistics (None when not standardising), computed over
        the whole run once and kept: every later epoch reads only its windows."""
        if not self.standardize:
            return None
        known = self._series_stats.setdefault((modality, key), {})
        series = self._arrays[modality][key]
        for row, n in zip(rows.tolist(), n_valid.tolist(), strict=True):
            if (row, n) not in known:
                known[row, n] = _series_stats(series[row], n)
        return [known[row, n] for row, n in zip(rows.tolist(), n_valid.tolist(), strict=True)]

    def _eeg_batch(self, index: np.ndarray, gens: list[torch.Generator | None]) -> Sample:
        arrays, rows, out = self._arrays["eeg"], self._rows["eeg"][index], {}
        present = rows >= 0  # a subject may lack EEG (optional modality): zeros, masks False
        rows = np.maximum(rows, 0)
        if "envelopes" in self.fields:
            n_valid = np.where(present, self._n_time["eeg"][index], 0)
            out["envelopes"], out["envelope_mask"] = _windows(
                arrays["envelopes"],
                rows,
                n_valid,
                self.eeg_length,
                self.train,
                gens,
                self._stats("eeg", "envelopes", rows, n_valid),
            )
        for key in ("aec", "band_power"):
            if key in self.fields:
                values = np.nan_to_num(arrays[key][rows].astype(np.float32))
                values[~present] = 0.0
                out[key] = torch.from_numpy(values)
        return out


def _transform_batch(
    transform: Transform, batch: Sample, generators: list[torch.Generator]
) -> Sample:
    """A transform over a batch: its own ``batch`` method when it has one (see
    :class:`~.augment.Compose`), else item by item."""
    if hasattr(transform, "batch"):
        return transform.batch(batch, generators)
    return apply_per_item(transform, batch, generators)


def apply_per_item(
    transform: Transform, batch: Sample, generators: Sequence[torch.Generator]
) -> Sample:
    """Apply an item-wise ``transform(sample, generator)`` to each item of a stacked batch, item
    ``b`` with ``generators[b]``, and stack the results again."""
    items = [{k: v[b] for k, v in batch.items()} for b in range(len(generators))]
    items = [transform(s, g) for s, g in zip(items, generators, strict=True)]
    return {k: torch.stack([s[k] for s in items]) for k in items[0]} if items else batch


def collate_batch(batch: Sample | list[Sample]) -> Sample:
    """The loaders' ``collate_fn``: a :class:`BrainDataset` hands over whole batches
    (``__getitems__``), which pass through; lists of items are stacked as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)


# --------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` pairs: a permutation that depends on ``(seed, epoch)`` only.

    With ``world_size > 1`` the permutation is padded (by wrapping) to a multiple of the world
    size and rank ``r`` takes every ``world_size``-th index from position ``r``, as
    :class:`~torch.utils.data.distributed.DistributedSampler` does. :meth:`skip` makes the next
    iteration of a given epoch start later, which is how a resumed run continues mid-epoch.
    """

    def __init__(
        self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.seed, self.shuffle = n, int(seed), shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, samples)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch."""
        self.epoch = int(epoch)

    def skip(self, epoch: int, samples: int) -> None:
        """Leave out the first ``samples`` of ``epoch``'s share on its next iteration."""
        self._skip = (int(epoch), int(samples))

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        total = len(self) * self.world_size
        order = (order * math.ceil(total / max(self.n, 1)))[:total] if self.n else []
        share = order[self.rank :: self.world_size]
        start = 0
        if self._skip is not None and self._skip[0] == epoch:
            start = self._skip[1]
        self._skip = None
        for index in share[start:]:
            yield index, epoch


class ResumableDataLoader(DataLoader):
    """A training loader whose position within an epoch is saved in Lightning checkpoints.

    Lightning stores ``state_dict()`` of loaders that have one and hands it back through
    ``load_state_dict()`` before the resumed epoch starts; the sampler then skips the batches the
    interrupted run had already trained on, so a resumed run sees exactly the batches of an
    uninterrupted one. Batches are counted as they are handed out, after any worker prefetching.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int,
        drop_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last), **kwargs
        )
        self._epoch_sampler = sampler
        self._delivered = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skipped = self._epoch_sampler._skip
        self._delivered = 0
        if skipped is not None and skipped[0] == self._epoch_sampler.epoch:
            self._delivered = skipped[1] // self.batch_sampler.batch_size  # type: ignore[union-attr]
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Epoch and batches handed out in it."""
        return {"epoch": self._epoch_sampler.epoch, "batches": self._delivered}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume ``state["epoch"]`` after its first ``state["batches"]`` batches."""
        batch_size = self.batch_sampler.batch_size  # type: ignore[union-attr]
        self._epoch_sampler.set_epoch(state["epoch"])
        self._epoch_sampler.skip(state["epoch"], state["batches"] * batch_size)


class ShardSampler(Sampler[int]):
    """Evaluation order: rank ``r`` takes indices ``r, r + world, ...``, padded by wrapping so
    that every rank has the same count (duplicates are removed after gathering by ``index``)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size
        order = (list(range(self.n)) * self.world_size)[:total] if self.n else []
        return iter(order[self.rank :: self.world_size])


def train_loader(
    dataset: BrainDataset,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> ResumableDataLoader:
    """Shuffled, resumable training loader (see :class:`EpochSampler`)."""
    sampler = EpochSampler(len(dataset), seed, shuffle=True, rank=rank, world_size=world_size)
    return ResumableDataLoader(
        dataset,
        sampler,
        batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_batch,
        generator=_own_generator(seed),
    )


def eval_loader(
    dataset: BrainDataset, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0
) -> DataLoader:
    """Sequential evaluation loader, sharded across ranks (see :class:`ShardSampler`)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        sampler=ShardSampler(len(dataset), rank, world_size),
        collate_fn=collate_batch,
        generator=_own_generator(0),
    )


def _own_generator(seed: int) -> torch.Generator:
    """A loader's private generator: creating a loader iterator otherwise draws a base seed from
    the global generator, so dropout masks would depend on when iterators are created (which
    differs between a resumed and an uninterrupted run)."""
    return torch.Generator().manual_seed(int(seed))
