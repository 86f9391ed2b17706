"""The SC cache: included subjects' matrices joined into ``sc.parquet``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.cache import cache_metadata, write_cache
from brainfuse.core.qc import id_columns, read_qc


def build_sc_cache(
    sidecars: list[str],
    data: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included subjects' SC into ``sc.parquet``."""
    atlas = atlas_from_config(atlas_cfg)
    qc, keep = read_qc(sidecars, participants, label_cfg)
    table = qc.iloc[keep][id_columns(qc)].reset_index(drop=True)
    mats = [pd.read_csv(data[i], sep="\t").to_numpy(np.float32) for i in keep]
    n = atlas.n_nodes
    arrays = {"sc": np.stack(mats) if mats else np.zeros((0, n, n), np.float32)}
    meta = cache_metadata(atlas, "sc", config_section, [*sidecars, *data])
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)
