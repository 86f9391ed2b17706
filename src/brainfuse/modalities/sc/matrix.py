"""Structural connectivity: read matrices as diffusion pipelines write them, check, normalise."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from brainfuse.core.errors import InputError

NO_HEADER = (
    "no header row naming the parcels; set sc.assume_atlas_order: true to read the columns in "
    "atlas order"
)
MISSING = frozenset({"", "NA", "N/A", "n/a", "null"})


def read_sc(
    path: str | Path,
    node_names: list[str],
    mat_key: str | None = None,
    assume_atlas_order: bool = False,
) -> np.ndarray:
    """Read an SC matrix on the atlas's nodes, in the atlas's node order.

    Parameters
    ----------
    path : str or Path
        A table (``.tsv``, ``.csv``, ``.txt``; tab-, comma- or whitespace-separated, ``#`` comment
        lines skipped), a MATLAB ``.mat`` or a ``.npy`` file.
    node_names : list of str
        The atlas's parcel names, in atlas order.
    mat_key : str, optional
        The matrix's key in a ``.mat`` file; by default its single square matrix.
    assume_atlas_order : bool
        Whether a table without a header row is read as already N x N in atlas order. Without it
        such a table is refused, since nothing in the file says which row is which parcel.

    Returns
    -------
    numpy.ndarray
        The N x N matrix, rows and columns in atlas order. A table with a header of parcel names
        is reordered by name; ``.mat`` and ``.npy`` files carry no names and are read as stored.

    Raises
    ------
    InputError
        When the file cannot be read, has no header (unless ``assume_atlas_order``), names another
        parcel set, or its size differs from the atlas's.
    """
    path = Path(path)
    n = len(node_names)
    try:
        if path.suffix in (".tsv", ".csv", ".txt"):
            matrix = _read_table(path, node_names, assume_atlas_order)
        elif path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        elif path.suffix == ".mat":
            matrix = _read_mat(path, mat_key)
        else:
            raise InputError(
                path, f"unsupported SC format {path.suffix!r} (tsv, csv, txt, mat, npy)"
            )
    except InputError:
        raise
    except Exception as err:
        raise InputError(path, f"cannot be read ({type(err).__name__}: {err})") from err
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (n, n):
        raise InputError(path, f"matrix is {matrix.shape}, expected ({n}, {n}) for the atlas")
    return matrix


def _read_table(path: Path, node_names: list[str], assume_atlas_order: bool) -> np.ndarray:
    rows = _table_rows(path)
    if not rows:
        raise InputError(path, "the table is empty")
    first = rows[0]
    # A numeric first row is data, unless the table has one row more than columns: then it is a
    # header of numeric parcel labels.
    has_header = not all(_is_number(cell) for cell in first) or len(rows) == len(first) + 1
    if not has_header:
        if not assume_atlas_order:
            raise InputError(path, NO_HEADER)
        return _numeric(path, rows)
    names = [cell.strip() for cell in first]
    body = _numeric(path, rows[1:])
    if set(names) != set(node_names):
        extra = sorted(set(names) - set(node_names))[:3]
        missing = sorted(set(node_names) - set(names))[:3]
        raise InputError(
            path, f"parcel set differs from the atlas (extra {extra}, missing {missing})"
        )
    if len(names) != len(set(names)):
        raise InputError(path, "the header names a parcel more than once")
    order = [names.index(name) for name in node_names]
    return body[np.ix_(order, order)]


def _table_rows(path: Path) -> list[list[str]]:
    """The cells of each non-empty, non-comment line; the separator (tab, comma, or runs of
    spaces) is taken from the first such line, as MRtrix, QSIRecon and numpy write tables."""
    # Lines keep their edge tabs and commas: an empty last cell is a missing value, not no cell.
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return []
    if "\t" in lines[0]:
        return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter="\t")]
    if "," in lines[0]:
        return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=",")]
    return [line.split() for line in lines]


def _numeric(path: Path, rows: list[list[str]]) -> np.ndarray:
    widths = sorted({len(row) for row in rows})
    if len(widths) > 1:
        raise InputError(path, f"rows have different numbers of values ({widths})")
    # Empty and NA cells (as pandas writes NaN) become NaN, so check_sc names them non-finite.
    cells = [["nan" if cell in MISSING else cell for cell in row] for row in rows]
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError as err:
        raise InputError(path, f"non-numeric value in the matrix ({err})") from err


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
