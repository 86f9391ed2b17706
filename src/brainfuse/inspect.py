"""``brainfuse inspect``: schema, shapes, metadata and a summary of any brainfuse artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def describe(path: str | Path) -> str:
    """Describe a Parquet cache, TSV table, JSON file, NIfTI or model file for a human."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    name = path.name
    if name.endswith(".parquet"):
        return _describe_parquet(path)
    if name.endswith((".tsv", ".csv")):
        return _describe_table(path)
    if name.endswith(".json"):
        return json.dumps(json.loads(path.read_text()), indent=2)[:4000]
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(path)
        zooms = img.header.get_zooms()
        return f"{path}\nNIfTI shape {img.shape}, dtype {img.get_data_dtype()}, zooms {zooms}"
    if name.endswith((".bin", ".ckpt", ".joblib")):
        return f"{path}\nmodel file, {path.stat().st_size} bytes; see metrics.json beside it"
    return f"{path}\n{path.stat().st_size} bytes (no inspector for this type)"


def _describe_parquet(path: Path) -> str:
    import pyarrow.parquet as pq

    from brainfuse.core.cache import read_cache

    schema = pq.read_schema(path)
    cache = read_cache(path)
    lines = [f"{path}", f"rows: {len(cache)}", "schema:"]
    lines += [f"  {field.name}: {field.type}" for field in schema]
    lines.append("arrays:")
    for name, values in cache.arrays.items():
        finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
        stats = (
            f"min {np.nanmin(values):.4g} max {np.nanmax(values):.4g} mean {np.nanmean(values):.4g}"
            if finite.any()
            else "empty"
        )
        lines.append(
            f"  {name}: shape {values.shape} dtype {values.dtype} "
            f"NaN {int((~finite).sum())} {stats}"
        )
    meta = dict(cache.metadata)
    for key in ("roi_names", "roi_networks", "node_names"):
        if key in meta and isinstance(meta[key], list):
            meta[key] = f"[{len(meta[key])} names: {', '.join(map(str, meta[key][:3]))}, ...]"
    lines.append("metadata:")
    lines += [f"  {k}: {json.dumps(v, default=str)[:300]}" for k, v in sorted(meta.items())]
    if len(cache.table):
        lines.append("samples:")
        for column in ("label", "site", "task"):
            if column in cache.table.columns:
                counts = cache.table[column].value_counts().to_dict()
                lines.append(f"  {column}: {counts}")
        lines.append(f"  subjects: {cache.table['subject'].nunique()}")
    return "\n".join(lines)


def _describe_table(path: Path) -> str:
    table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    lines = [f"{path}", f"rows: {len(table)} columns: {len(table.columns)}"]
    lines += [f"  {c}: {table[c].dtype}" for c in table.columns[:30]]
    if len(table.columns) > 30:
        lines.append(f"  ... {len(table.columns) - 30} more columns")
    lines.append(table.head(8).to_string(max_cols=10))
    return "\n".join(lines)
