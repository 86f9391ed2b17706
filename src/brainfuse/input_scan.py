"""What an input folder holds against what its filter keeps: the files turned away, and why.

A filter that keeps nothing (BOLD only in ``space-T1w`` while ``filters.bold.space`` asks for
``MNI152NLin6Asym``) otherwise reads as "no files found". The scan parses file names itself:
pybids' parser costs milliseconds per file, too slow for a derivatives tree of 10^5 files, and
only names that already end in the filter's suffix and extension are parsed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: File-name keys whose pybids entity name differs (the rest are named by their key).
ENTITY_OF_KEY = {
    "sub": "subject",
    "ses": "session",
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "dir": "direction",
    "mod": "modality",
    "nuc": "nucleus",
    "voi": "volume",
    "stain": "staining",
    "trc": "tracer",
    "seg": "segmentation",
}
DATATYPES = {
    "anat", "beh", "dwi", "eeg", "fmap", "func", "ieeg", "meg", "micr", "motion", "nirs", "perf",
    "pet",
}  # fmt: skip


@dataclass(frozen=True)
class FilterScan:
    """Files of one input kind under one root, against the kind's filter.

    Attributes
    ----------
    kind : str
        The filter's name (``bold``, ``timeseries``, ``eeg``, ``sc``...).
    root : Path
        The folder scanned.
    matched : int
        Files the filter keeps.
    turned_away : dict
        ``"<key>-<value>"`` descriptions of why files with the filter's suffix and extension were
        not kept -> number of files. Near misses are files with the filter's suffix and
        extension; each description names the first other key that failed.
    """

    kind: str
    root: Path
    matched: int
    turned_away: dict[str, int]

    def lines(self) -> list[str]:
        """One readable line per reason, e.g. ``30 files have space-T1w (filters.bold.space is
        MNI152NLin6Asym)``."""
        return [f"{n} files {why}" for why, n in self.turned_away.items()]


def file_entities(path: str) -> dict[str, str]:
    """Entities of a BIDS file name: its ``key-value`` parts, suffix, extension and datatype."""
    name = os.path.basename(path)
    stem, dot, rest = name.partition(".")
    parts = stem.split("_")
    entities = {"suffix": parts[-1], "extension": dot + rest}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if sep:
            entities[ENTITY_OF_KEY.get(key, key)] = value
    parent = os.path.basename(os.path.dirname(path))
    if parent in DATATYPES:
        entities["datatype"] = parent
    return entities


def _value_matches(wanted: Any, found: str | None, key: str) -> bool:
    if wanted is True:
        return found is not None
    if wanted is False:
        return found is None
    if found is None:
        return False
    options = wanted if isinstance(wanted, list) else [wanted]
    for option in map(str, options):
        if key == "extension":
            option = option if option.startswith(".") else "." + option
        if option == found or (option.isdigit() and found.isdigit() and int(option) == int(found)):
            return True
    return False


def _describe(entity: str, wanted: Any, found: str | None, kind: str, filter_key: str) -> str:
    shown = {True: "present", False: "absent"}[wanted] if isinstance(wanted, bool) else wanted
    if found is None:
        have = f"have no {filter_key}"
    elif entity == "datatype":
        have = f"are in {found}/"
    else:
        have = f"have {filter_key}-{found}"
    return f"{have} (filters.{kind}.{filter_key} is {shown})"


def scan_filter(root: Path, kind: str, filters: Mapping[str, Any]) -> FilterScan:
    """Count the files under ``root`` that ``filters`` keeps, and why the near misses were not.

    Near misses are files with the filter's suffix and extension (the kind's identity) that
    fail another key. Hidden folders (a pybids index) are skipped.
    """
    identity = {k: v for k, v in filters.items() if k in ("suffix", "extension")}
    others = {ENTITY_OF_KEY.get(k, k): (k, v) for k, v in filters.items() if k not in identity}
    endings = _endings(filters.get("suffix"), filters.get("extension"))
    matched, away = 0, Counter()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if endings and not name.endswith(endings):
                continue
            entities = file_entities(os.path.join(folder, name))
            if not all(_value_matches(v, entities.get(k), k) for k, v in identity.items()):
                continue  # another kind of file: not a near miss
            failed = next(
                (
                    (entity, filter_key, wanted)
                    for entity, (filter_key, wanted) in others.items()
                    if not _value_matches(wanted, entities.get(entity), entity)
                ),
                None,
            )
            if failed is None:
                matched += 1
            else:
                entity, filter_key, wanted = failed
                away[_describe(entity, wanted, entities.get(entity), kind, filter_key)] += 1
    return FilterScan(kind=kind, root=Path(root), matched=matched, turned_away=dict(away))


def scan_roots(roots: Mapping[str, Path], config: Mapping[str, Any]) -> list[FilterScan]:
    """:func:`scan_filter` of each BIDS root (input kind -> folder) with its configured filter."""
    filters = config["filters"]
    return [scan_filter(root, kind, filters.get(kind, {})) for kind, root in roots.items()]


def _endings(suffix: Any, extensions: Any) -> tuple[str, ...]:
    """File-name endings worth parsing: ``_<suffix><extension>`` for the filter's values."""
    suffixes = suffix if isinstance(suffix, list) else [suffix] if isinstance(suffix, str) else []
    exts = (
        extensions if isinstance(extensions, list) else [extensions]
        if isinstance(extensions, str) else []
    )  # fmt: skip
    exts = [e if e.startswith(".") else "." + e for e in exts]
    if suffixes and exts:
        return tuple(f"_{s}{e}" for s in suffixes for e in exts)
    return tuple(exts) if exts and not suffixes else ()  # else parse every name
