"""Pre-parcellated fMRI input: XCP-D ``*_stat-mean_timeseries.tsv`` files and plain ROI tables.

These enter the same caches as runs parcellated here. They are taken as already denoised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.errors import InputError


def read_timeseries_table(path: str | Path, node_names: list[str]) -> np.ndarray:
    """A (T, N) array in atlas node order from an XCP-D TSV or a plain ROI table.

    With a header of node names (XCP-D), columns are reordered to the atlas order; atlas nodes the
    file lacks become NaN columns (XCP-D writes NaN for parcels with too little coverage too). A
    file without a header must be time x N or N x time with N the atlas size.
    """
    path = Path(path)
    n = len(node_names)
    try:
        raw = pd.read_csv(
            path, sep=None, engine="python", header=None, dtype=str, na_values=["n/a"]
        )
    except Exception as err:
        raise InputError(path, f"cannot be read as a table ({err})") from err
    first = raw.iloc[0].tolist()
    has_header = not all(_is_number(v) for v in first)
    if has_header:
        names = [str(v) for v in first]
        body = raw.iloc[1:].astype(float).to_numpy()
        unknown = sorted(set(names) - set(node_names))
        if unknown:
            raise InputError(path, f"columns are not parcels of the atlas: {unknown[:5]}")
        out = np.full((len(body), n), np.nan)
        for j, name in enumerate(names):
            out[:, node_names.index(name)] = body[:, j]
        return out.astype(np.float32)
    body = raw.astype(float).to_numpy()
    if body.shape[1] == n:
        return body.astype(np.float32)
    if body.shape[0] == n:
        return body.T.astype(np.float32)
    raise InputError(
        path, f"table is {body.shape}, neither dimension matches the atlas's {n} nodes"
    )


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return value is None or (isinstance(value, float) and np.isnan(value))
    return True


def table_sidecar(path: str | Path) -> str:
    """The JSON sidecar of a time-series table (same name, ``.json``)."""
    return str(path).rsplit(".", 1)[0] + ".json"


def repetition_time_of_table(path: str | Path, default_tr: float | None) -> float:
    """TR from the JSON sidecar (RepetitionTime, or SamplingFrequency in Hz), else the config."""
    sidecar = Path(table_sidecar(path))
    if sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if "RepetitionTime" in meta:
            return float(meta["RepetitionTime"])
        if isinstance(meta.get("SamplingFrequency"), int | float):
            return 1.0 / float(meta["SamplingFrequency"])
    if default_tr:
        return float(default_tr)
    raise InputError(
        path, "no TR: add a JSON sidecar with RepetitionTime or set input.timeseries_tr"
    )


def motion_of_table(path: str | Path) -> np.ndarray | None:
    """Framewise displacement from XCP-D's ``*_desc-motion_timeseries.tsv`` beside the table."""
    name = Path(path).name
    stem = "_".join(
        p
        for p in name.split("_")[:-1]
        if p.split("-")[0] not in ("space", "seg", "atlas", "stat", "den", "res")
    )
    candidate = Path(path).parent / f"{stem}_desc-motion_timeseries.tsv"
    if not candidate.exists():
        return None
    table = pd.read_csv(candidate, sep="\t", na_values=["n/a"])
    if "framewise_displacement" not in table.columns:
        return None
    return table["framewise_displacement"].fillna(0).to_numpy(dtype=float)
