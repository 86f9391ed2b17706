"""Per-sample QC records and the exclusions they carry, shared by every modality.

A bad input raises :class:`~brainfuse.core.errors.InputError` inside the domain code; a sample
step turns it into a recorded exclusion (status and reason in the QC sidecar), so one bad subject
never stops the others. Cache builders read the records back and attach the labels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.errors import InputError
from brainfuse.core.samples import attach_labels, read_participants, sample_id

log = logging.getLogger("brainfuse")


def qc_record(entities: dict, modality: str, path: str) -> dict:
    """The QC record a sample step starts from: its identity, modality and input path."""
    return {"sample_id": sample_id(entities), "modality": modality, "path": path, **entities}


def exclude(qc: dict, err: InputError) -> None:
    """Mark ``qc`` excluded with the file and reason of ``err``."""
    log.warning("excluded %s: %s", err.path, err.reason)
    qc.update(status="excluded", reason=f"{Path(err.path).name}: {err.reason}")


def id_columns(qc: pd.DataFrame) -> list[str]:
    """The identifier columns of a QC table, in cache order."""
    cols = ["sample_id", "subject", "session", "task", "acquisition", "run", "site", "label"]
    return [c for c in cols if c in qc.columns]


def read_qc(
    sidecars: list[str], participants: str, label_cfg: dict
) -> tuple[pd.DataFrame, np.ndarray]:
    """QC records of every sample with labels attached, and the row indices of included ones."""
    records = [json.loads(Path(p).read_text()) for p in sidecars]
    qc = label_qc(pd.DataFrame(records), participants, label_cfg)
    return qc, np.flatnonzero(qc["status"] == "included")


def label_qc(qc: pd.DataFrame, participants: str, label_cfg: dict) -> pd.DataFrame:
    """Attach labels and sites; samples without a label are excluded with that reason.

    ``label_cfg`` is the ``label`` section; its ``participant_column`` (the workflow adds
    ``input.participant_column``) names the subject column of the participants table. With
    ``column`` None and no ``entity`` the samples are an unlabelled corpus (pre-training data)
    and keep their status.
    """
    id_column = label_cfg.get("participant_column", "participant_id")
    labelled = attach_labels(qc, read_participants(participants, id_column), label_cfg)
    if label_cfg.get("column") is None and not label_cfg.get("entity"):
        return labelled
    missing = labelled["label"].isna() & (labelled["status"] == "included")
    labelled.loc[missing, "status"] = "excluded"
    labelled.loc[missing, "reason"] = "no label in participants.tsv for this subject"
    return labelled


def merge_qc(parts: list[str], out_qc: str) -> None:
    """The dataset QC table: every sample of every modality with its status and reason."""
    tables = [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in parts]
    merged = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    front = ["modality", "sample_id", "status", "reason"]
    merged = merged[front + [c for c in merged.columns if c not in front]]
    atomic.write_tsv(out_qc, merged)
