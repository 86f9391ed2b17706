"""Atomic file writes: a killed job never leaves a half-written file that a later step trusts."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so that the final ``os.replace`` is atomic
    on POSIX file systems. ``suffix`` defaults to the target's own suffixes, since writers such as
    nibabel and pyarrow choose the format from the file name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates owner-only files; outputs should get the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN and infinite floats become ``null``.

    JSON has no NaN: Python would write a bare ``NaN`` that jq, browsers and strict parsers
    reject, so every value goes through :func:`json_safe` first and ``allow_nan=False`` makes
    any value that slipped through an error here rather than in a reader.
    """
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    write_text(path, text + "\n")


def write_tsv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as a BIDS-style TSV (``n/a`` for missing values) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays, paths and sets converted, NaN and
    infinite floats (nested in dicts, lists and tuples too) replaced by ``None``."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {_json_key(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(json_safe(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"Cannot serialise {type(obj).__name__} to JSON")


def _json_key(key: Any) -> str:
    """A mapping key as JSON writes it (a string), so that sorting mixed keys works."""
    import numpy as np

    return key if isinstance(key, str) else str(key.item() if isinstance(key, np.generic) else key)
