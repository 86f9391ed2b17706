"""Sample identities and labels: BIDS entities of each run joined with participants.tsv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def read_participants(path: str | Path) -> pd.DataFrame:
    """participants.tsv indexed by subject label without the ``sub-`` prefix."""
    table = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    if "participant_id" not in table.columns:
        raise ValueError(f"{path}: no participant_id column")
    table["subject"] = table["participant_id"].str.removeprefix("sub-")
    return table.set_index("subject")


def attach_labels(samples: pd.DataFrame, participants: pd.DataFrame, label: dict) -> pd.DataFrame:
    """Add ``label`` and ``site`` columns; the label comes from a participants column or an entity.

    Samples whose label is missing get ``label = None`` and are excluded by the caller with the
    reason recorded in QC.
    """
    out = samples.copy()
    entity = label.get("entity")
    if entity:
        out["label"] = out[entity] if entity in out.columns else None
    else:
        column = label["column"]
        if column not in participants.columns:
            raise ValueError(f"label.column {column!r} is not a column of participants.tsv")
        out["label"] = out["subject"].map(participants[column])
    site = participants["site"] if "site" in participants.columns else None
    out["site"] = out["subject"].map(site) if site is not None else "n/a"
    out["site"] = out["site"].fillna("n/a")
    out["label"] = out["label"].where(out["label"].notna(), None)
    return out
