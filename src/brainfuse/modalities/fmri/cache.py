"""The fMRI cache: included runs joined into ``fmri.parquet``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.cache import cache_metadata, pad_time, write_cache
from brainfuse.core.qc import id_columns, read_qc


def build_fmri_cache(
    sidecars: list[str],
    data: list[str],
    raw_fc: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    qc_fields: tuple[str, ...],
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included runs into ``fmri.parquet``.

    Arrays: ``timeseries`` (N x T, NaN-padded after ``n_timepoints``), ``fc`` (Pearson r),
    ``fc_raw`` (before denoising, for QC-FC), ``fc_partial`` and ``fc_lw`` (Ledoit-Wolf),
    ``sequence`` (N x L) and ``spectrum`` (N x L/2+1) for the temporal and frequency domains,
    ``dfc`` (sliding-window FC upper triangles, NaN-padded windows) and ``node_mask``.
    ``raw_fc`` holds each run's raw-FC relmat, in the order of ``data``; the ``qc_fields`` of
    each run's QC record become columns of the table.
    """
    from brainfuse.core import connectivity as conn

    atlas = atlas_from_config(atlas_cfg)
    qc, keep = read_qc(sidecars, participants, label_cfg)
    series = [pd.read_csv(data[i], sep="\t").to_numpy(np.float32) for i in keep]
    table = qc.iloc[keep][id_columns(qc)].reset_index(drop=True)
    for column in qc_fields:
        # a Series keeps a text field's object dtype: from an array, pandas 3 infers its string
        # dtype and turns a BOLD run's missing column_order (None) into NaN, which Arrow rejects
        table[column] = _qc_column(qc, column).iloc[keep].reset_index(drop=True)
    n, length = atlas.n_nodes, config_section["sequence_length"]
    window, step = config_section["dfc_window"], config_section["dfc_step"]
    arrays: dict[str, np.ndarray] = {"timeseries": np.zeros((0, n, 1))}
    if series:
        arrays["timeseries"], table["n_timepoints"] = pad_time([s.T for s in series])
        sequences = [conn.fixed_length(s, length) for s in series]
        table["sequence_valid"] = [v for _, v in sequences]
        dfc, table["n_windows"] = pad_time(
            [conn.sliding_window_fc(s, window, step).T for s in series]
        )
        arrays["dfc"] = dfc.transpose(0, 2, 1)
        arrays["sequence"] = np.stack([q for q, _ in sequences])
        arrays["spectrum"] = np.stack([conn.amplitude_spectrum(q) for q, _ in sequences])

    def stack(measure, items) -> np.ndarray:
        return np.stack([measure(x) for x in items]) if items else np.zeros((0, n, n), np.float32)

    raw = [pd.read_csv(raw_fc[i], sep="\t").to_numpy(np.float32) for i in keep]
    arrays["fc"] = stack(conn.pearson, series)
    arrays["fc_raw"] = stack(np.asarray, raw)
    arrays["fc_partial"] = stack(conn.partial_correlation, series)
    arrays["fc_lw"] = stack(conn.ledoit_wolf_correlation, series)
    arrays["node_mask"] = (
        np.stack([np.all(np.isfinite(s), axis=0) for s in series]).astype(np.uint8)
        if series
        else np.zeros((0, n), np.uint8)
    )
    meta = cache_metadata(atlas, "fmri", config_section, [*sidecars, *data, *raw_fc])
    meta.update(
        sequence_length=length,
        sequence_rule="centre crop when longer, zero-pad at the end when shorter (sequence_valid)",
        spectrum="|rFFT| of the z-scored sequence along time",
        dfc_window=window,
        dfc_step=step,
        nan_handling=(
            "Parcels with too little coverage are NaN in timeseries and every FC array and 0 in "
            "sequence/spectrum; node_mask is 1 for valid nodes and models see it. Baselines "
            "impute 0 (Fisher z) for masked FC entries."
        ),
    )
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)


def _qc_column(qc: pd.DataFrame, column: str) -> pd.Series:
    """A QC field as floats, or as text for a text field (``column_order``); missing where a
    run's record lacks it (BOLD runs have no ``column_order``)."""
    if column not in qc.columns:
        return pd.Series(np.nan, index=qc.index)
    values = qc[column]
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum():
        return numeric.astype(float)
    return values.astype(object).where(values.notna(), None)
