"""Pre-parcellated fMRI input: XCP-D ``*_stat-mean_timeseries.tsv`` files and plain ROI tables.

These enter the same caches as runs parcellated here. They are taken as already denoised.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.errors import InputError
from brainfuse.modalities.fmri.denoise import RepetitionTime

#: how many constant parcels the QC record names (the count is always complete)
CONSTANT_PARCELS_NAMED = 10


@dataclass(frozen=True)
class RoiTable:
    """A pre-parcellated run in atlas node order.

    Attributes
    ----------
    timeseries : numpy.ndarray
        (T, N) float32 in atlas node order; NaN columns for parcels without signal.
    column_order : str
        ``"header"`` when columns were matched by name, ``"assumed"`` for a headerless table taken
        in atlas order.
    constant_parcels : list of str
        Atlas labels of the columns that were all zero or constant (now NaN), in atlas order.
    """

    timeseries: np.ndarray
    column_order: str
    constant_parcels: list[str]


def read_timeseries_table(
    path: str | Path, node_names: list[str], node_values: list[int] | None = None
) -> RoiTable:
    """Read an XCP-D TSV or a plain ROI table (.tsv, .csv, AFNI-style .1D) in atlas node order.

    With a header (XCP-D's first row, or AFNI's leading ``#`` comment line), columns are matched
    to the atlas by label name or, failing that, by the atlas' integer label value (``#2001``
    names the parcel whose image value is 2001) and reordered; a parcel missing from the file
    or a column that is no parcel of the atlas is an error naming them. A table without a header
    is taken in atlas order only when it has exactly one column per atlas node. All-zero or
    constant columns carry no signal: they become NaN, so the node mask marks them missing.

    Parameters
    ----------
    path : str or Path
        The table.
    node_names : list of str
        Atlas labels in node order.
    node_values : list of int, optional
        Atlas image values in node order, for headers that give parcels by number.

    Returns
    -------
    RoiTable
        The series, how its columns were ordered, and the constant parcels.

    Raises
    ------
    InputError
        When the file cannot be read, its header does not match the atlas, or a headerless
        table's width differs from the atlas size.
    """
    path = Path(path)
    header, body = _read_cells(path)
    n = len(node_names)
    if header is None:
        if body.shape[1] != n:
            raise InputError(
                path,
                f"table without a header has {body.shape[1]} columns but the atlas has {n} "
                "parcels (a header of parcel names or numbers is needed otherwise)",
            )
        out, order = body, "assumed"
    else:
        out, order = body[:, _column_positions(path, header, node_names, node_values)], "header"
    finite = np.isfinite(out)
    has_values = finite.any(axis=0)
    high = np.where(finite, out, -np.inf).max(axis=0, initial=-np.inf)
    low = np.where(finite, out, np.inf).min(axis=0, initial=np.inf)
    constant = has_values & (high == low)
    out = out.copy()
    out[:, constant] = np.nan
    return RoiTable(
        timeseries=out.astype(np.float32),
        column_order=order,
        constant_parcels=[name for name, c in zip(node_names, constant, strict=True) if c],
    )


def _read_cells(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """Header names (None without one) and the float body of a table.

    The delimiter is sniffed from the first line, as pandas' python engine does for
    ``sep=None``; the body is then parsed by pandas' C parser, about ten times faster (it is
    most of a pre-parcellated run's step).
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot be read as a table ({err})") from err
    lines = text.splitlines()
    if path.suffix.lower() == ".1d" or (lines and lines[0].startswith("#")):
        return _read_afni(path, lines)
    if not lines:
        raise InputError(path, "is empty")
    try:
        delimiter = csv.Sniffer().sniff(lines[0]).delimiter
        first = pd.read_csv(
            io.StringIO(lines[0]), sep=delimiter, header=None, dtype=str, na_values=["n/a"]
        ).iloc[0]
        header = None if all(_is_number(v) for v in first) else [str(v) for v in first]
        body = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            skiprows=0 if header is None else 1,
            dtype=float,
            na_values=["n/a"],
            engine="c",
        )
    except Exception as err:
        raise InputError(path, f"cannot be read as a table ({err})") from err
    return header, body.to_numpy()


def _read_afni(path: Path, lines: list[str]) -> tuple[list[str] | None, np.ndarray]:
    """AFNI .1D: whitespace-separated rows; the last leading ``#`` line, if any, names columns."""
    comments = []
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        if lines[0].strip():
            comments.append(lines[0])
        lines = lines[1:]
    try:
        body = np.array([[float(v) for v in line.split()] for line in lines if line.strip()])
    except ValueError as err:
        raise InputError(path, f"cannot be read as a table ({err})") from err
    if body.ndim != 2 or body.size == 0:
        raise InputError(path, "has no rows of equal length")
    if not comments:
        return None, body
    header = [token.lstrip("#") for token in comments[-1].split()]
    header = [token for token in header if token]
    if len(header) != body.shape[1]:
        raise InputError(
            path, f"header names {len(header)} columns but the rows have {body.shape[1]} values"
        )
    return header, body


def _column_positions(
    path: Path, header: list[str], node_names: list[str], node_values: list[int] | None
) -> list[int]:
    """Index of each atlas node's column in ``header``, matched by label name or label value."""
    keys = list(node_names)
    if not set(header) <= set(node_names) and node_values is not None:
        numeric = [_as_int(h) for h in header]
        if all(v is not None for v in numeric):
            # a numeric header names image values, as AFNI's 3dROIstats writes them
            header, keys = [str(v) for v in numeric], [str(v) for v in node_values]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    extra = [h for h in header if h not in keys]
    missing = [name for name, key in zip(node_names, keys, strict=True) if key not in header]
    if duplicated or extra or missing:
        problems = [
            f"{what} {names[:5]}{' ...' if len(names) > 5 else ''} ({len(names)})"
            for what, names in (
                ("columns that are not parcels of the atlas:", extra),
                ("atlas parcels without a column:", missing),
                ("repeated columns:", duplicated),
            )
            if names
        ]
        raise InputError(path, "header does not match the atlas: " + "; ".join(problems))
    return [header.index(key) for key in keys]


def _as_int(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return value is None or (isinstance(value, float) and np.isnan(value))
    return True


def table_sidecar(path: str | Path) -> str:
    """The JSON sidecar of a time-series table (same name, ``.json``)."""
    return str(path).rsplit(".", 1)[0] + ".json"


def repetition_time_of_table(
    path: str | Path,
    configured: float | None,
    *,
    tr_source: str,
    tolerance: float,
    missing: str = "",
) -> RepetitionTime:
    """TR of a table from its JSON sidecar (RepetitionTime, or SamplingFrequency in Hz) and the
    configured TR (``input.timeseries_tr``: a number, or this table's row of a TR table).

    Parameters
    ----------
    path : str or Path
        The table; its sidecar has the same name with ``.json``.
    configured : float or None
        The configured TR in seconds, None when there is none for this table.
    tr_source : {"exclude", "sidecar", "header"}
        ``fmri.tr_source`` when both give a TR and they differ by more than ``tolerance``:
        refuse the run naming both values, or use the sidecar's, or (``header``: what stands in
        for the NIfTI header of a table) the configured one, with a warning.
    tolerance : float
        Largest difference in seconds that still counts as agreement.
    missing : str
        Why the configuration gives no TR for this table (e.g. its site is not in the TR table),
        for the reason when the sidecar gives none either.

    Raises
    ------
    InputError
        Neither gives a TR, or the two disagree under ``tr_source="exclude"``.
    """
    sidecar = Path(table_sidecar(path))
    side = None
    if sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if "RepetitionTime" in meta:
            side = float(meta["RepetitionTime"])
        elif isinstance(meta.get("SamplingFrequency"), int | float):
            side = 1.0 / float(meta["SamplingFrequency"])
    if side is None and not configured:
        why = missing or "add a JSON sidecar with RepetitionTime or set input.timeseries_tr"
        raise InputError(path, f"no TR: {why}")
    if side is None:
        return RepetitionTime(float(configured), "config")
    if not configured or abs(side - configured) <= tolerance:
        return RepetitionTime(side, "sidecar")
    disagreement = (
        f"RepetitionTime {side:g} s in {sidecar.name} disagrees with the configured TR "
        f"{configured:g} s (input.timeseries_tr; fmri.tr_tolerance {tolerance:g} s)"
    )
    if tr_source == "exclude":
        raise InputError(
            sidecar, f"{disagreement}; set fmri.tr_source to sidecar or header (configured)"
        )
    used, source = (side, "sidecar") if tr_source == "sidecar" else (float(configured), "config")
    return RepetitionTime(used, source, f"{disagreement}; used the {source} ({used:g} s)")


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
