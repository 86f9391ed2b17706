"""Structural connectivity: read matrices as diffusion pipelines write them, check, normalise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.errors import InputError


def read_sc(path: str | Path, node_names: list[str], mat_key: str | None = None) -> np.ndarray:
    """Read an SC matrix on the atlas's nodes, in the atlas's node order.

    Supported: TSV/CSV (QSIRecon/MRtrix style; with a header of node names the rows are reordered
    to the atlas order, otherwise the file must already be N x N in that order), MATLAB ``.mat``
    (``mat_key``, or the single square matrix in the file), and ``.npy``.
    """
    path = Path(path)
    n = len(node_names)
    try:
        if path.suffix in (".tsv", ".csv", ".txt"):
            matrix = _read_table(path, node_names)
        elif path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        elif path.suffix == ".mat":
            matrix = _read_mat(path, mat_key)
        else:
            raise InputError(path, f"unsupported SC format {path.suffix!r} (tsv, csv, mat, npy)")
    except InputError:
        raise
    except Exception as err:
        raise InputError(path, f"cannot be read ({type(err).__name__}: {err})") from err
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (n, n):
        raise InputError(path, f"matrix is {matrix.shape}, expected ({n}, {n}) for the atlas")
    return matrix


def _read_table(path: Path, node_names: list[str]) -> np.ndarray:
    sep = "," if path.suffix == ".csv" else None
    raw = pd.read_csv(path, sep=sep, header=None, engine="python", dtype=str)
    first = raw.iloc[0].tolist()
    if not _is_number(first[0]) or not _is_number(first[-1]):
        names = [str(x) for x in first]
        body = raw.iloc[1:].astype(float).to_numpy()
        if set(names) != set(node_names):
            extra = sorted(set(names) - set(node_names))[:3]
            missing = sorted(set(node_names) - set(names))[:3]
            raise InputError(
                path, f"parcel set differs from the atlas (extra {extra}, missing {missing})"
            )
        order = [names.index(name) for name in node_names]
        return body[np.ix_(order, order)]
    return raw.astype(float).to_numpy()


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    from scipy.io import loadmat

    content = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    if key is not None:
        if key not in content:
            raise InputError(path, f"no key {key!r} (keys: {sorted(content)[:8]})")
        return content[key]
    square = [
        k for k, v in content.items() if getattr(v, "ndim", 0) == 2 and v.shape[0] == v.shape[1]
    ]
    if len(square) != 1:
        raise InputError(path, f"name the matrix key; square matrices found: {square}")
    return content[square[0]]


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def check_sc(matrix: np.ndarray, path: str | Path, tolerance: float = 1e-6) -> dict:
    """Refuse matrices that are not usable SC; return QC facts about a usable one."""
    if not np.all(np.isfinite(matrix)):
        raise InputError(path, f"{int((~np.isfinite(matrix)).sum())} non-finite values")
    if np.any(matrix < 0):
        raise InputError(path, "negative connection weights")
    scale = max(float(np.abs(matrix).max()), 1.0)
    asym = float(np.abs(matrix - matrix.T).max()) / scale
    if asym > tolerance:
        raise InputError(path, f"matrix is not symmetric (max relative asymmetry {asym:.3g})")
    off = ~np.eye(len(matrix), dtype=bool)
    density = float((matrix[off] > 0).mean())
    if density == 0:
        raise InputError(path, "matrix has no connections")
    isolated = int((matrix.sum(axis=0) - np.diag(matrix) == 0).sum())
    return {"density": density, "isolated_nodes": isolated, "max_weight": float(matrix.max())}


def normalise_sc(
    matrix: np.ndarray, method: str = "log1p", density: float | None = None
) -> np.ndarray:
    """Zero the diagonal, scale weights, optionally keep the strongest edges up to ``density``."""
    out = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(out, 0.0)
    if method in ("log1p", "log1p_max"):
        out = np.log1p(out)
    if method in ("max", "log1p_max") and out.max() > 0:
        out = out / out.max()
    if density is not None:
        iu = np.triu_indices(len(out), k=1)
        weights = out[iu]
        n_keep = int(round(density * len(weights)))
        cutoff = np.sort(weights)[::-1][n_keep - 1] if n_keep > 0 else np.inf
        out[out < cutoff] = 0.0
    return ((out + out.T) / 2).astype(np.float32)
