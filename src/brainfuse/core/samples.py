"""Sample identities and labels: BIDS entities of each run joined with participants.tsv."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from brainfuse.core.errors import ConfigError

#: a BIDS label: the subject names every output file, so nothing but letters and digits
_BIDS_LABEL = re.compile(r"^[A-Za-z0-9]+$")

ENTITY_KEYS = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "run": "run",
}


def sample_id(entities: dict) -> str:
    """BIDS-style identifier of a sample, e.g. ``sub-01_task-rest_run-1``."""
    parts = [
        f"{key}-{entities[e]}"
        for e, key in ENTITY_KEYS.items()
        if entities.get(e) not in (None, "")
    ]
    return "_".join(parts)


def read_participants(path: str | Path, id_column: str = "participant_id") -> pd.DataFrame:
    """A participants table indexed by subject label (``sub-`` prefix stripped when present).

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file (comma-separated) or a TSV (any other extension). Every value is read as
        a string, so labels compare as written (``DX_GROUP`` ``1``, not ``1.0``).
    id_column : str
        The column naming each subject (``input.participant_column``).

    Returns
    -------
    pandas.DataFrame
        The table with a ``subject`` index.

    Raises
    ------
    ConfigError
        The id column is missing, empty in a row, repeated, or holds a label that is not
        alphanumeric (subjects name every output file, as BIDS ``sub-<label>``).
    """
    sep = "," if Path(path).suffix.lower() == ".csv" else "\t"
    table = pd.read_csv(path, sep=sep, dtype=str, na_values=["n/a"], keep_default_na=False)
    if id_column not in table.columns:
        raise ConfigError(
            f"{path}: no {id_column!r} column (input.participant_column); "
            f"columns: {list(table.columns)}"
        )
    subjects = table[id_column].fillna("").str.strip().str.removeprefix("sub-")
    unsafe = sorted({s for s in subjects if not _BIDS_LABEL.match(s)})
    if unsafe:
        raise ConfigError(
            f"{path}: column {id_column!r} (input.participant_column) holds subject labels that "
            f"are not alphanumeric: {unsafe[:5]}; choose a column of letters and digits only"
        )
    repeated = sorted(set(subjects[subjects.duplicated()]))
    if repeated:
        raise ConfigError(f"{path}: column {id_column!r} repeats subjects {repeated[:5]}")
    table["subject"] = subjects
    return table.set_index("subject")


def attach_labels(samples: pd.DataFrame, participants: pd.DataFrame, label: dict) -> pd.DataFrame:
    """Add ``label`` and ``site`` columns; the label comes from a participants column or an entity.

    The site comes from ``label["site_column"]`` (default ``site``), ``"n/a"`` without one.
    Samples whose label is missing get ``label = None`` and are excluded by the caller with the
    reason recorded in QC. ``label["column"]`` None (and no entity) is an unlabelled corpus:
    every label is None.
    """
    out = samples.copy()
    entity = label.get("entity")
    if entity:
        out["label"] = out[entity] if entity in out.columns else None
    elif label["column"] is None:
        out["label"] = None
    else:
        column = label["column"]
        if column not in participants.columns:
            raise ValueError(f"label.column {column!r} is not a column of the participants table")
        out["label"] = out["subject"].map(participants[column])
    site_column = label.get("site_column", "site")
    site = participants[site_column] if site_column in participants.columns else None
    out["site"] = out["subject"].map(site) if site is not None else "n/a"
    out["site"] = out["site"].fillna("n/a")
    out["label"] = out["label"].where(out["label"].notna(), None)
    return out
