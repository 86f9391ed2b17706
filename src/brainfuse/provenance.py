"""The provenance manifest of a trained stage, and the check that no test subject reached it.

Every stage of every method on every outer fold writes ``provenance.json`` beside its
``metrics.json`` (the rules declare it, so a killed job leaves none): the method, stage, fold,
seed, a hash of the stage's parameters, the SHA-256 of each file the stage read, and the subjects
each role of the stage actually read. The subject lists come from the datasets the stage's data
loaders and fits were given (the torch runner's training, validation and test datasets, the
baselines' row masks and the rows ComBat and the confound regression were fitted on), not from
``folds.tsv``: a stage that read a subject it should not have shows it here.

Roles (:data:`ROLES`):

``fit``
    Subjects whose labelled data fitted parameters: the training loader of a supervised stage,
    the linear probe of a self-supervised one, the estimator of a baseline.
``validation``
    Subjects that chose the model: early stopping, model selection, the probe's or the
    baseline's ``C``.
``test``
    Subjects scored once by the selected model.
``unlabelled_pretraining``
    Subjects whose data (never their labels) a self-supervised stage's loss read, or that the
    run-once pre-training the stage started from read (``methods.<m>.pretrain_on``, ``init``).

The evaluate step runs :func:`check_manifests` on every stage of every fold before it reads a
prediction: :func:`check_provenance` raises :class:`LeakageError` when a test subject of a fold
appears in any other role of a stage of that fold, or among the subjects its harmonisation or
confound regression was fitted on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.provenance import config_hash
from brainfuse.folds import read_folds, subjects_of

__all__ = [
    "FORMAT",
    "ROLES",
    "LeakageError",
    "check_manifests",
    "check_provenance",
    "file_record",
    "stage_manifest",
    "subjects_in",
    "write_manifest",
]

#: Format tag of ``provenance.json``.
FORMAT = "brainfuse-provenance/1"

#: The subject roles of a manifest, in the order it lists them.
ROLES = ("fit", "validation", "test", "unlabelled_pretraining")

#: Roles that must hold no test subject of the stage's fold.
_NON_TEST = ("fit", "validation", "unlabelled_pretraining")


class LeakageError(RuntimeError):
    """A test subject of a fold reached a stage of that fold other than through its test
    role."""


def subjects_in(table: pd.DataFrame | None) -> list[str]:
    """Sorted distinct subjects of a sample table (``subject`` column); none for ``None``."""
    if table is None or len(table) == 0:
        return []
    return sorted(set(table["subject"].astype(str)))


def file_record(path: str | os.PathLike) -> dict[str, str]:
    """``{"path", "sha256"}`` of a file (its whole content)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}


def stage_manifest(
    *,
    method: str,
    stage: str,
    fold: int,
    seed: int,
    params: Mapping[str, Any],
    cache_paths: Mapping[str, str],
    folds_path: str,
    previous: str | None,
    subjects: Mapping[str, Iterable[str]],
    extra_inputs: Mapping[str, str] | None = None,
    adjustment: Mapping[str, Any] | None = None,
    pretrained: str | None = None,
) -> dict[str, Any]:
    """The provenance manifest of one stage on one fold.

    Parameters
    ----------
    method, stage, fold, seed
        What was trained.
    params : mapping
        The stage's resolved parameters that change what is fitted (not thread counts);
        ``config_hash`` is their hash (with the seed).
    cache_paths : mapping of str to str
        The cache of each modality the stage read.
    folds_path : str
        ``folds.tsv``.
    previous : str, optional
        The previous stage's ``model.bin`` the stage was initialised from.
    subjects : mapping
        Subjects of each role of :data:`ROLES` (missing roles are empty), taken from what the
        stage read.
    extra_inputs : mapping of str to str, optional
        Other files the stage read, by name (e.g. the participants table of the harmonisation).
    adjustment : mapping, optional
        The harmonisation and confound-regression record (its ``fit_subjects`` included); None
        when the stage fits neither.
    pretrained : str, optional
        The ``manifest.json`` of the run-once pre-training whose encoder ``previous`` is
        (``methods.<m>.pretrain_on`` or ``init``): recorded with its content under
        ``inputs["init"]``, and the subjects it was trained on added to
        ``unlabelled_pretraining`` (so that :func:`check_provenance` refuses a corpus holding a
        test subject of the fold).

    Returns
    -------
    dict
        JSON-ready manifest.
    """
    unknown = sorted(set(subjects) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown provenance roles {unknown}; expected {list(ROLES)}")
    inputs: dict[str, Any] = {
        "caches": {m: file_record(p) for m, p in sorted(cache_paths.items())},
        "folds": file_record(folds_path),
        "previous": file_record(previous) if previous else None,
        **{name: file_record(p) for name, p in sorted((extra_inputs or {}).items())},
    }
    roles = {role: {str(s) for s in subjects.get(role, ())} for role in ROLES}
    if pretrained:
        init = json.loads(Path(pretrained).read_text())
        inputs["init"] = {**file_record(pretrained), "manifest": init}
        roles["unlabelled_pretraining"] |= set(init["subjects"]["unlabelled_pretraining"])
    return {
        "format": FORMAT,
        "method": method,
        "stage": stage,
        "fold": int(fold),
        "seed": int(seed),
        "config_hash": config_hash({"params": dict(params), "seed": int(seed)}),
        "inputs": inputs,
        "subjects": {role: sorted(roles[role]) for role in ROLES},
        "adjustment": None if adjustment is None else dict(adjustment),
    }


def write_manifest(path: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` to ``path`` atomically."""
    atomic.write_json(path, manifest)


def check_provenance(manifest: Mapping[str, Any], folds: pd.DataFrame) -> None:
    """Raise if a test subject of the manifest's fold reached the stage other than as a test
    subject.

    Parameters
    ----------
    manifest : mapping
        A stage's ``provenance.json``.
    folds : DataFrame
        ``folds.tsv`` (:func:`brainfuse.folds.read_folds`).

    Raises
    ------
    LeakageError
        A test subject of fold ``manifest["fold"]`` is listed under ``fit``, ``validation`` or
        ``unlabelled_pretraining``, or among the harmonisation / confound fit subjects; or a
        subject the stage scored as a test subject is not a test subject of that fold.
    """
    fold = int(manifest["fold"])
    test = subjects_of(folds, fold, "test")
    where = f"{manifest['method']}/{manifest['stage']} fold {fold}"
    if not test:
        raise LeakageError(f"{where}: fold {fold} has no test subjects in folds.tsv")
    reached = {role: manifest["subjects"][role] for role in _NON_TEST}
    adjustment = manifest.get("adjustment") or {}
    reached["harmonisation/confound fit"] = adjustment.get("fit_subjects", [])
    leaks = {role: sorted(test & set(s)) for role, s in reached.items() if test & set(s)}
    if leaks:
        detail = "; ".join(f"{role}: {_first(s)}" for role, s in leaks.items())
        raise LeakageError(f"{where}: test subjects of the fold reached the stage: {detail}")
    scored = set(manifest["subjects"]["test"]) - test
    if scored:
        raise LeakageError(
            f"{where}: scored subjects that are not test subjects of fold {fold} in folds.tsv: "
            f"{_first(sorted(scored))} (a stale model or another folds.tsv?)"
        )


def check_manifests(paths: Sequence[str | os.PathLike], folds_path: str | os.PathLike) -> int:
    """:func:`check_provenance` on every manifest of ``paths``; the number checked.

    Raises
    ------
    LeakageError
        From the first manifest that fails, naming its file.
    """
    folds = read_folds(str(folds_path))
    for path in paths:
        manifest = json.loads(Path(path).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} manifest")
        try:
            check_provenance(manifest, folds)
        except LeakageError as err:
            raise LeakageError(f"{path}: {err}") from err
    return len(paths)


def _first(subjects: Sequence[str], n: int = 5) -> str:
    more = f" and {len(subjects) - n} more" if len(subjects) > n else ""
    return ", ".join(subjects[:n]) + more
