"""The EEG cache: included recordings joined into ``eeg.parquet``."""

from __future__ import annotations

import numpy as np

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.cache import cache_metadata, pad_time, write_cache
from brainfuse.core.qc import id_columns, read_qc


def build_eeg_cache(
    sidecars: list[str],
    data: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included recordings into ``eeg.parquet``: envelopes (bands x nodes x T), AEC, power."""
    from brainfuse.core.cache import read_cache

    qc, keep = read_qc(sidecars, participants, label_cfg)
    parts = [read_cache(data[i]) for i in keep]
    nodes = {tuple(p.metadata["qc"]["node_names"]) for p in parts}
    if len(nodes) > 1:
        raise ValueError(
            "EEG recordings have different node sets; use eeg.level: source or one montage"
        )
    table = qc.iloc[keep][id_columns(qc)].reset_index(drop=True)
    if parts:
        envelopes, lengths = pad_time([p.arrays["envelopes"][0] for p in parts])
        arrays = {
            "envelopes": envelopes,
            "aec": np.concatenate([p.arrays["aec"] for p in parts]),
            "band_power": np.concatenate([p.arrays["band_power"] for p in parts]),
        }
        table["n_timepoints"] = lengths
        first = parts[0].metadata["qc"]
        node_names, bands = first["node_names"], first["bands"]
        sfreq, level = first["envelope_sfreq"], first["level"]
    else:
        arrays, node_names, bands, sfreq, level = {}, [], [], None, None
    atlas = atlas_from_config(atlas_cfg)
    meta = cache_metadata(atlas, "eeg", config_section, [*sidecars, *data])
    meta.update(
        node_names=node_names,
        bands=bands,
        sampling_rate_hz=sfreq,
        level=level,
        nan_handling="envelopes are NaN-padded after n_timepoints",
    )
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)
