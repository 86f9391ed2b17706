"""Dataset-level Parquet caches: one row per sample, arrays as fixed-shape tensor columns.

A cache is readable with plain pyarrow/pandas: identifier columns (subject, session, task, run,
site, label, ...) are ordinary columns, each array is a ``fixed_shape_tensor`` extension column,
and the file's schema metadata key ``brainfuse`` holds a JSON document (atlas, node names, sampling
rates, bands, version, provenance hash, how missing values are encoded).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainfuse import __version__
from brainfuse.core.atomic import atomic_path

if TYPE_CHECKING:
    from brainfuse.core.atlas import Atlas

METADATA_KEY = b"brainfuse"
ID_COLUMNS = ("sample_id", "subject", "session", "task", "run", "site", "label")


@dataclass
class Cache:
    """A cache in memory: identifier table, arrays (first axis = rows) and file metadata."""

    table: pd.DataFrame
    arrays: dict[str, np.ndarray]
    metadata: dict

    def __len__(self) -> int:
        return len(self.table)


def tensor_column(values: np.ndarray) -> pa.ExtensionArray:
    """A fixed-shape tensor column from an array whose first axis indexes rows."""
    values = np.ascontiguousarray(values)
    return pa.FixedShapeTensorArray.from_numpy_ndarray(values)


def write_cache(
    path: str | Path, table: pd.DataFrame, arrays: dict[str, np.ndarray], metadata: dict
) -> None:
    """Write identifiers, arrays and metadata to ``path`` atomically.

    Parameters
    ----------
    table : DataFrame
        One row per sample; its columns are written as they are.
    arrays : dict of str to ndarray
        Each array has ``len(table)`` rows; the remaining axes are the tensor shape.
    metadata : dict
        JSON-serialisable; ``brainfuse_version`` is added.
    """
    # a text column may hold NaN where a sample lacks the field (a BOLD run has no table
    # column_order): written as null, not as a float among strings
    columns = {
        c: pa.array(table[c].tolist(), from_pandas=not pd.api.types.is_numeric_dtype(table[c]))
        for c in table.columns
    }
    for name, values in arrays.items():
        if len(values) != len(table):
            raise ValueError(f"array {name!r} has {len(values)} rows, table has {len(table)}")
        if len(values):
            columns[name] = tensor_column(values)
    meta = {**metadata, "brainfuse_version": __version__}
    meta["array_shapes"] = {k: list(v.shape[1:]) for k, v in arrays.items()}
    schema_meta = {METADATA_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
    arrow = pa.table(columns).replace_schema_metadata(schema_meta)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")


def read_metadata(path: str | Path) -> dict:
    """The ``brainfuse`` metadata of a cache without reading its data."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_cache(path: str | Path, columns: list[str] | None = None) -> Cache:
    """Read a cache; tensor columns become numpy arrays without per-row Python copies."""
    arrow = pq.read_table(path, columns=columns)
    meta = json.loads((arrow.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    ids, arrays = {}, {}
    for name in arrow.column_names:
        column = arrow.column(name)
        if isinstance(column.type, pa.FixedShapeTensorType):
            arrays[name] = column.combine_chunks().to_numpy_ndarray()
        else:
            ids[name] = column.to_pylist()
    if arrow.num_rows == 0:  # empty caches store no tensor columns, only their shapes
        for name, shape in meta.get("array_shapes", {}).items():
            arrays[name] = np.zeros((0, *shape), dtype=np.float32)
    return Cache(table=pd.DataFrame(ids), arrays=arrays, metadata=meta)


def pad_time(arrays: list[np.ndarray], axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Stack arrays of different lengths along ``axis``, NaN-padded; returns (stack, lengths)."""
    lengths = np.array([a.shape[axis] for a in arrays])
    longest = int(lengths.max()) if len(arrays) else 0
    out = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, longest - a.shape[axis])
        out.append(np.pad(a.astype(np.float32), pad, constant_values=np.nan))
    return np.stack(out) if out else np.zeros((0,)), lengths


def files_hash(paths: list[str | Path], extra: object = None) -> str:
    """SHA-256 over file contents (in the given order) and a JSON-serialisable ``extra``."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(str(Path(p).name).encode())
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cache_metadata(atlas: Atlas, modality: str, config_section: dict, inputs: list[str]) -> dict:
    """The metadata every modality's cache starts from: atlas, config and a hash of the inputs."""
    return {
        "modality": modality,
        "atlas": atlas.name,
        "atlas_space": atlas.space,
        "roi_names": list(atlas.labels),
        "roi_networks": list(atlas.networks),
        "config": config_section,
        "input_hash": files_hash(sorted(inputs), config_section),
    }
