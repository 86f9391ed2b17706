"""In-fold harmonisation and confound regression of the torch methods' connectivity inputs.

With config ``harmonise.method: combat`` and/or ``confounds``, the FC matrices (``fc`` of the
fMRI cache) and SC matrices (``sc`` of the SC cache) a torch stage reads are adjusted with the
baselines' :func:`~brainfuse.methods.baselines.harmonise.adjust_in_fold` (same ComBat, same
small-site, unseen-site and constant-feature policies, same confound regression) on the upper
triangle of each matrix, fitted on the samples of the fold's training subjects only (the
subjects of the training loader: not the validation, not the test subjects) and applied to the
training, validation and test samples. The adjusted triangle is written back to both halves,
so the matrices stay symmetric; the diagonal is kept, so a masked parcel (NaN diagonal) is still
masked.

Entries that are not finite (parcels outside a run's mask) enter the fit as 0, which is how the
dataset serves them, and are NaN again afterwards, so what the model sees for them does not
change. Confounds that are per-sample QC fields of another modality (``mean_fd`` for SC
matrices) are skipped for that matrix and listed in its record.

FC that a stage computes from the time series while it trains (the pseudo-FC views of the
``pseudo_fc`` augmentation and of BrainMass, the sliding-window FC of the dFC methods) gets the
same fitted adjustment: ComBat and the confound regression are affine in each edge, so each
sample's slope and offset per edge are stored beside its FC (cache array
:data:`~brainfuse.methods.torch.data.FC_AFFINE`, served with the time series) and applied to
every FC computed from that sample's series (:func:`~brainfuse.methods.torch.data.adjust_fc`).
A window's FC is a noisier estimate of the same correlations, so the site effect fitted on the
whole run's FC is the one removed from it.

Out of scope: the time series themselves (``timeseries``, ``fft`` as the temporal transformer
reads them) and EEG inputs (``envelopes``, ``aec``, ``band_power``) are served unadjusted; each
stage's ``metrics.json`` lists, under ``adjustment``, the inputs it read that were adjusted and
those that were not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.cache import Cache
from brainfuse.core.samples import read_participants
from brainfuse.methods.baselines.harmonise import fit_in_fold, subjects_digest
from brainfuse.methods.request import StageRequest
from brainfuse.methods.torch.data import FC_AFFINE, MODALITY_FIELDS
from brainfuse.modalities import builtin_modalities
from brainfuse.provenance import file_record

log = logging.getLogger("brainfuse")

__all__ = [
    "ADJUSTMENT_KEYS",
    "MATRIX_KEYS",
    "InputAdjustment",
    "adjust_matrices",
    "adjustment_summary",
    "input_adjustment",
    "split_request",
]

#: The request parameters of the adjustment (the ``train_stage`` script adds them beside the
#: method's parameters); they are not method parameters.
ADJUSTMENT_KEYS = ("harmonise", "confounds", "participants", "participant_column")

#: The matrix of each modality that is adjusted (its upper triangle).
MATRIX_KEYS = {"fmri": "fc", "sc": "sc"}


@dataclass(frozen=True)
class InputAdjustment:
    """The config's ``harmonise`` and ``confounds`` for one torch stage.

    Attributes
    ----------
    harmonise : mapping
        ``method``, ``batch``, ``covariates``, ``min_site_size``.
    confounds : tuple of str
        Columns regressed out.
    participants : str or None
        The participants table, for columns the caches lack.
    participant_column : str
        Its subject column.
    """

    harmonise: Mapping[str, Any]
    confounds: tuple[str, ...]
    participants: str | None
    participant_column: str

    def fingerprint(self) -> dict[str, Any]:
        """What a resumable checkpoint must have been trained with (the participants table by
        content)."""
        return {
            "harmonise": dict(self.harmonise),
            "confounds": list(self.confounds),
            "participants": file_record(self.participants)["sha256"] if self.participants else None,
        }


def split_request(request: StageRequest) -> tuple[StageRequest, InputAdjustment | None]:
    """``request`` without the adjustment parameters, and the adjustment (None when
    ``harmonise.method`` is ``none`` and there are no confounds: the inputs are served as
    cached)."""
    params = {k: v for k, v in request.params.items() if k not in ADJUSTMENT_KEYS}
    return dataclasses.replace(request, params=params), input_adjustment(request.params)


def input_adjustment(params: Mapping[str, Any]) -> InputAdjustment | None:
    """The adjustment named by the :data:`ADJUSTMENT_KEYS` of ``params`` (None when
    ``harmonise.method`` is ``none`` and there are no confounds)."""
    harmonise = dict(params.get("harmonise") or {"method": "none"})
    confounds = tuple(params.get("confounds") or ())
    if harmonise["method"] == "none" and not confounds:
        return None
    return InputAdjustment(
        harmonise=harmonise,
        confounds=confounds,
        participants=params.get("participants"),
        participant_column=str(params.get("participant_column") or "participant_id"),
    )


def adjust_matrices(
    caches: Mapping[str, Cache],
    samples: pd.DataFrame,
    roles: Mapping[str, Collection[str]],
    adjustment: InputAdjustment,
) -> tuple[dict[str, Cache], dict[str, Any]]:
    """The caches with their FC/SC matrices adjusted in the fold, and the record of the fit.

    Parameters
    ----------
    caches : mapping of str to Cache
        The stage's caches; those without a key of :data:`MATRIX_KEYS` are returned as given.
    samples : DataFrame
        The joined samples the stage's dataset serves (``BrainDataset.table``: ``subject`` and
        ``row_<modality>``, the cache row of each modality, -1 where absent).
    roles : mapping
        ``train``, ``val`` and ``test`` subjects of the fold. Only the cache rows the samples of
        these subjects use are adjusted; the fit reads those of the ``train`` subjects.
    adjustment : InputAdjustment
        What to fit.

    Returns
    -------
    caches : dict of str to Cache
        New caches (new arrays; the given ones are not modified).
    record : dict
        ``harmonise``, ``confounds``, ``fit_subjects`` (every subject any fit read, for
        :func:`brainfuse.provenance.check_provenance`) and its digest, and ``inputs``: the
        :func:`adjust_in_fold` record of each adjusted matrix key.
    """
    participants = (
        read_participants(adjustment.participants, adjustment.participant_column)
        if adjustment.participants
        else None
    )
    train = {str(s) for s in roles["train"]}
    in_fold = train | {str(s) for r in ("val", "test") for s in roles[r]}
    subjects = samples["subject"].astype(str)
    out = dict(caches)
    inputs: dict[str, Any] = {}
    for modality, key in MATRIX_KEYS.items():
        if modality not in caches or key not in caches[modality].arrays:
            continue
        cache = caches[modality]
        rows_of = samples[f"row_{modality}"].to_numpy()
        rows = np.unique(rows_of[subjects.isin(in_fold).to_numpy() & (rows_of >= 0)])
        table = cache.table.iloc[rows].reset_index(drop=True)
        fit = table["subject"].astype(str).isin(train).to_numpy()
        # a QC field of another modality (mean_fd for SC) is not a column of this cache
        absent_ok = {
            field
            for name, m in builtin_modalities().items()
            if name != modality
            for field in m.qc_fields
        }
        # FC recomputed from the series in training needs the per-sample map as well
        with_affine = key == "fc" and "timeseries" in cache.arrays
        matrices, affine, record = _adjust_stack(
            cache.arrays[key], rows, table, fit, adjustment, participants, absent_ok, with_affine
        )
        arrays = {**cache.arrays, key: matrices}
        if affine is not None:
            arrays[FC_AFFINE] = affine
        out[modality] = Cache(cache.table, arrays, cache.metadata)
        inputs[key] = record
    fit_subjects = sorted({s for r in inputs.values() for s in r["fit_subjects"]})
    record = {
        "harmonise": adjustment.harmonise["method"],
        "confounds": list(adjustment.confounds),
        "fit_subjects": fit_subjects,
        "fit_subjects_sha256": subjects_digest(fit_subjects),
        "inputs": inputs,
    }
    return out, record


def _adjust_stack(
    stack: np.ndarray,
    rows: np.ndarray,
    table: pd.DataFrame,
    fit: np.ndarray,
    adjustment: InputAdjustment,
    participants: pd.DataFrame | None,
    absent_ok: Collection[str],
    with_affine: bool,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """A copy of the (n, N, N) ``stack`` whose matrices ``rows`` have their upper triangle
    adjusted (fitted on ``fit``, a mask over ``rows``) and mirrored, the diagonal kept; with
    ``with_affine``, also the (n, 2, N, N) float32 slope and offset of each entry's adjustment
    (identity outside ``rows``, on the diagonal and for entries that are not finite)."""
    n_nodes = stack.shape[-1]
    upper = np.triu_indices(n_nodes, k=1)
    pick = (rows[:, None], upper[0], upper[1])  # (rows, edges) without copying whole matrices
    x = stack[pick].astype(np.float64)
    missing = ~np.isfinite(x)
    x = np.where(missing, 0.0, x)
    adjust, record = fit_in_fold(
        x, table, fit, adjustment.harmonise, adjustment.confounds, participants, absent_ok
    )
    adjusted = adjust(x)
    out = np.array(stack, copy=True)
    out[pick] = np.where(missing, np.nan, adjusted)
    out[rows[:, None], upper[1], upper[0]] = out[pick]
    if not with_affine:
        return out, None, record
    slope = np.where(missing, 1.0, adjust(x + 1.0) - adjusted)
    offset = np.where(missing, 0.0, adjusted - slope * x)
    affine = np.zeros((len(stack), 2, n_nodes, n_nodes), dtype=np.float32)
    affine[:, 0] = 1.0
    for part, values in enumerate((slope, offset)):
        affine[rows[:, None], part, upper[0], upper[1]] = values
        affine[rows[:, None], part, upper[1], upper[0]] = values
    return out, affine, record


def adjustment_summary(
    record: Mapping[str, Any], read: Iterable[str], modalities: Iterable[str]
) -> dict[str, Any]:
    """The ``adjustment`` of a stage's ``metrics.json``: the fit record, plus which of the
    batch keys the stage and its augmentations ``read`` were adjusted and which were served as
    cached (time series, EEG). Warns when some are not: the pseudo-FC augmentation, for one,
    recomputes the training views of ``fc`` from the unadjusted time series."""
    data_keys = {k for m in modalities for k in MODALITY_FIELDS[m]} - {
        "node_mask",
        "time_mask",
        "envelope_mask",
    }
    read = set(read) & data_keys
    adjusted, unadjusted = (
        sorted(read & set(record["inputs"])),
        sorted(read - set(record["inputs"])),
    )
    if unadjusted:
        log.warning(
            "harmonise/confounds adjust FC/SC matrices (and FC computed from the time series); "
            "this stage also reads %s unadjusted",
            ", ".join(unadjusted),
        )
    return {**record, "adjusted_inputs": adjusted, "unadjusted_inputs": unadjusted}
