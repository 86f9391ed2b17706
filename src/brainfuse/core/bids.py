"""BIDS names: the entities that name a sample, and snakebids queries for one input kind."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from brainfuse.core import atomic

log = logging.getLogger("brainfuse")

# Entities that can name a sample, in BIDS file-name order; others are fixed by the filters.
SAMPLE_ENTITIES = ("subject", "session", "task", "acquisition", "run")


def snakebids_table(root: Path, name: str, config: dict, derivatives: bool) -> pd.DataFrame:
    """Files under ``root`` matching ``config["filters"][name]``: entity columns and ``path``.

    Sorted by the sample entities; two files naming the same sample are an error. The pybids
    index is kept under ``input.pybids_db_dir`` (see `pybids_db_path`) and reused by later calls,
    and so is the table read from it (`cached_table`): reading 30,000 files' entities back
    from the index took longer than planning the whole workflow. pybids' repeated warnings are
    summarised in one log line each.
    """
    inp = config["input"]
    # a kind the schema does not list (an outside modality's) may have no filters
    filters = dict(config["filters"].get(name, {}))
    wildcards = list(SAMPLE_ENTITIES)
    if isinstance(filters.get("extension"), list):
        wildcards.append("extension")  # several formats: the file's own extension picks the reader
    db_dir = inp["pybids_db_dir"]
    query = {
        "filters": filters,
        "wildcards": wildcards,
        "derivatives": derivatives,
        "participant_label": inp["participant_label"],
        "exclude_participant_label": inp["exclude_participant_label"],
    }
    cached = cached_table(pybids_db_path(db_dir, name, root), query) if db_dir else None
    if cached is not None and cached.exists():
        return pd.read_csv(cached, sep="\t", dtype=str, keep_default_na=False)
    table = _query_table(root, name, filters, wildcards, db_dir, derivatives, inp)
    if cached is not None:
        atomic.write_tsv(cached, table)
    return table


def cached_table(db_path: Path, query: dict) -> Path:
    """Where the table of one query of a pybids index is kept: inside the index's folder, so
    that deleting the folder to re-index (``input.pybids_db_dir``) drops it too."""
    key = hashlib.sha1(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return db_path / f"brainfuse-table-{key}.tsv"


def _query_table(
    root: Path,
    name: str,
    filters: dict,
    wildcards: list[str],
    db_dir: str | None,
    derivatives: bool,
    inp: dict,
) -> pd.DataFrame:
    from snakebids import generate_inputs

    # pybids re-warns per derivative dataset and per planning; "always" lets all be counted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = generate_inputs(
            bids_dir=root,
            pybids_inputs={name: {"filters": filters, "wildcards": wildcards}},
            pybidsdb_dir=str(pybids_db_path(db_dir, name, root)) if db_dir else None,
            derivatives=derivatives,
            participant_label=inp["participant_label"] or None,
            exclude_participant_label=inp["exclude_participant_label"] or None,
            validate=False,
        )
    _log_warnings(name, caught)
    component = dataset[name]
    table = pd.DataFrame(component.zip_lists)
    if table.empty:
        raise FileNotFoundError(f"no {name} files under {root} match filters {filters}")
    table["path"] = [component.path.format(**row) for row in table.to_dict(orient="records")]
    table = table.drop(columns=[c for c in table.columns if c == "extension"])
    keys = [e for e in SAMPLE_ENTITIES if e in table.columns]
    duplicated = table.duplicated(subset=keys, keep=False)
    if duplicated.any():
        raise ValueError(
            f"{name}: several files share entities {keys}; narrow filters.{name}: "
            f"{table.loc[duplicated, 'path'].tolist()[:4]}"
        )
    return table.sort_values(keys).reset_index(drop=True)


def pybids_db_path(db_dir: str, name: str, root: Path) -> Path:
    """Absolute folder of the pybids index of input kind ``name`` under ``root``.

    snakebids ignores a relative database path (it re-indexes on every call), so ``db_dir`` is
    resolved against the working directory. A reused index keeps the root it was built for, so
    each root gets its own folder: pointing an input at another dataset never reads a stale one.
    """
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(db_dir).resolve() / name / digest


#: pybids looks for a ``derivatives/`` folder inside every root indexed with derivatives; the
#: roots here are derivative datasets themselves, so its absence says nothing.
NO_NESTED_DERIVATIVES = "Derivative indexing was requested, but no valid datasets were found"


def _log_warnings(name: str, caught: list[warnings.WarningMessage]) -> None:
    """Log each distinct warning once, by its first line, with how often it was raised."""
    counts = Counter(str(w.message).splitlines()[0] for w in caught if str(w.message))
    for message, count in counts.items():
        level = logging.DEBUG if message.startswith(NO_NESTED_DERIVATIVES) else logging.WARNING
        log.log(level, "pybids (%s), %d time(s): %s", name, count, message)


def strip_entities(path: str, drop: tuple[str, ...]) -> str:
    """``path`` without its suffix and the entities in ``drop`` (a companion file's stem)."""
    name = Path(path).name
    stem = name.split("_")
    kept = [p for p in stem[:-1] if p.split("-")[0] not in drop]
    return str(Path(path).parent / "_".join(kept))
