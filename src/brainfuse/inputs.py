"""Input discovery: a table per modality (BIDS entities + path), from snakebids or the demo layout.

Rules are wired from these tables, so real data and the demo take the same code paths downstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# Entities that can name a sample, in BIDS file-name order; others are fixed by the filters.
SAMPLE_ENTITIES = ("subject", "session", "task", "acquisition", "run")
BIDS_KEYS = {"subject": "sub", "session": "ses", "task": "task", "acquisition": "acq", "run": "run"}
MODALITIES = ("bold", "timeseries", "eeg", "sc")
DEMO_SPACE = "MNI152NLin6Asym"


@dataclass(frozen=True)
class Inputs:
    """Discovered inputs: for each modality a table with entity columns and a ``path`` column.

    ``fmri`` joins preprocessed BOLD runs (``source`` = ``bold``) and pre-parcellated time series
    (``source`` = ``timeseries``) into one set of samples.
    """

    tables: dict[str, pd.DataFrame]
    participants: Path
    roots: dict[str, Path]

    def entities(self, modality: str) -> list[str]:
        """Entities that vary between this modality's samples (the rule wildcards)."""
        table = self.tables[modality]
        return [e for e in SAMPLE_ENTITIES if e in table.columns]

    def row(self, modality: str, wildcards) -> pd.Series:
        """The table row of the sample named by ``wildcards``."""
        return self.tables[modality].iloc[self._position(modality, wildcards)]

    def lookup(self, modality: str, wildcards) -> str:
        """Input path of the sample named by ``wildcards``."""
        return self._index(modality)[1][self._position(modality, wildcards)]

    def _position(self, modality: str, wildcards) -> int:
        """Row position of the sample named by ``wildcards`` in its table."""
        index, _ = self._index(modality)
        key = tuple(str(getattr(wildcards, e)) for e in self.entities(modality))
        positions = index.get(key, [])
        if len(positions) != 1:
            raise LookupError(f"{modality}: {len(positions)} files match {dict(wildcards.items())}")
        return positions[0]

    def _index(self, modality: str) -> tuple[dict[tuple[str, ...], list[int]], list[str]]:
        """Row positions by entity values (as strings), and the paths as strings, per table.

        Built once per table and kept on the instance: rule input functions look samples up once
        or more per job, and a scan of the table per call made building the DAG O(N^2).
        """
        table = self.tables[modality]
        cache = self.__dict__.setdefault("_row_indexes", {})  # frozen dataclass: no setattr
        cached = cache.get(modality)
        if cached is None or cached[0] is not table or cached[1] != len(table):
            index: dict[tuple[str, ...], list[int]] = {}
            columns = [table[e].astype(str).tolist() for e in self.entities(modality)]
            keys = zip(*columns, strict=True) if columns else [()] * len(table)
            for position, key in enumerate(keys):
                index.setdefault(key, []).append(position)
            paths = table["path"].astype(str).tolist() if "path" in table else []
            cached = cache[modality] = (table, len(table), index, paths)
        return cached[2], cached[3]


def demo_runs(n_subjects: int, seed: int) -> dict[str, list[int]]:
    """Subjects of the demo dataset and their fMRI runs, as the generator draws them."""
    from brainfuse.demo.dataset import make_participants

    table = make_participants(n_subjects, seed)
    return {
        pid.removeprefix("sub-"): list(runs)
        for pid, runs in zip(table["participant_id"], table["runs"], strict=True)
    }


def _demo_tables(root: Path, n_subjects: int, seed: int, n_xcpd: int) -> dict[str, pd.DataFrame]:
    """Demo inputs: the last ``n_xcpd`` subjects' fMRI comes as XCP-D time series, not BOLD."""
    bold, timeseries, eeg, sc = [], [], [], []
    derivatives = root / "derivatives"
    runs = demo_runs(n_subjects, seed)
    xcpd_subjects = set(list(runs)[len(runs) - n_xcpd :]) if n_xcpd else set()
    for sub, sub_runs in runs.items():
        for run in sub_runs:
            stem = f"sub-{sub}_task-rest_run-{run}_space-{DEMO_SPACE}"
            row = {"subject": sub, "task": "rest", "run": str(run)}
            if sub in xcpd_subjects:
                name = f"{stem}_seg-Schaefer100_stat-mean_timeseries.tsv"
                timeseries.append(
                    {**row, "path": str(derivatives / "xcpd" / f"sub-{sub}" / "func" / name)}
                )
            else:
                name = f"{stem}_desc-preproc_bold.nii.gz"
                bold.append(
                    {**row, "path": str(derivatives / "fmriprep" / f"sub-{sub}" / "func" / name)}
                )
        eeg_path = root / f"sub-{sub}" / "eeg" / f"sub-{sub}_task-rest_eeg.edf"
        eeg.append({"subject": sub, "task": "rest", "path": str(eeg_path)})
        sc_name = f"sub-{sub}_space-T1w_seg-Schaefer100_desc-sift2_relmat.tsv"
        sc.append(
            {"subject": sub, "path": str(derivatives / "qsirecon" / f"sub-{sub}" / "dwi" / sc_name)}
        )
    columns = ["subject", "task", "run", "path"]
    return {
        "bold": pd.DataFrame(bold, columns=columns),
        "timeseries": pd.DataFrame(timeseries, columns=columns),
        "eeg": pd.DataFrame(eeg),
        "sc": pd.DataFrame(sc),
    }


def discover(config: dict) -> Inputs:
    """Build the input tables from the config: the demo layout, or snakebids on each input root."""
    inp = config["input"]
    if inp["demo"]:
        root = Path(config["results_dir"]) / "demo_bids"
        tables = _demo_tables(
            root, inp.get("demo_subjects", 24), config["seed"], inp.get("demo_xcpd_subjects", 0)
        )
        roots = {
            "bold": root / "derivatives" / "fmriprep",
            "timeseries": root / "derivatives" / "xcpd",
            "eeg": root,
            "sc": root / "derivatives" / "qsirecon",
        }
        return Inputs(
            tables=_merge_fmri(tables), participants=root / "participants.tsv", roots=roots
        )

    roots = {
        m: Path(inp[key])
        for m, key in (
            ("bold", "fmriprep_dir"),
            ("timeseries", "xcpd_dir"),
            ("eeg", "eeg_dir"),
            ("sc", "sc_dir"),
        )
        if inp.get(key)
    }
    if not roots:
        raise ValueError(
            "input: demo is false but none of fmriprep_dir, xcpd_dir, eeg_dir, sc_dir is set"
        )
    tables = {}
    for modality, root in roots.items():
        tables[modality] = _snakebids_table(root, modality, config)
    for modality in MODALITIES:
        tables.setdefault(modality, pd.DataFrame(columns=["subject", "path"]))
    overlap = _shared_samples(tables["bold"], tables["timeseries"])
    if overlap:
        raise ValueError(
            f"runs found both as BOLD and as pre-parcellated time series: {overlap[:4]}"
        )
    participants = inp.get("participants")
    if participants is None:
        candidates = [r / "participants.tsv" for r in roots.values()]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise FileNotFoundError(
                "input.participants is not set and no participants.tsv in "
                f"{[str(r) for r in roots.values()]}"
            )
        participants = found[0]
    return Inputs(tables=_merge_fmri(tables), participants=Path(participants), roots=roots)


def _merge_fmri(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    parts = [t.assign(source=name) for name in ("bold", "timeseries") if len(t := tables[name])]
    fmri = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["subject", "path"])
    )
    keys = [e for e in SAMPLE_ENTITIES if e in fmri.columns]
    if fmri[keys].isna().any().any():
        raise ValueError(
            "BOLD runs and pre-parcellated time series are named with different entities"
        )
    return {"fmri": fmri, "eeg": tables["eeg"], "sc": tables["sc"]}


def _shared_samples(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    keys = [e for e in SAMPLE_ENTITIES if e in a.columns and e in b.columns]
    if a.empty or b.empty or not keys:
        return []
    merged = a[keys].merge(b[keys])
    return ["_".join(map(str, row)) for row in merged.to_numpy()]


def _snakebids_table(root: Path, modality: str, config: dict) -> pd.DataFrame:
    from snakebids import generate_inputs

    inp = config["input"]
    filters = dict(config["filters"].get(modality, {}))
    wildcards = list(SAMPLE_ENTITIES)
    if isinstance(filters.get("extension"), list):
        wildcards.append("extension")  # several formats: the file's own extension picks the reader
    db_dir = inp.get("pybids_db_dir")
    dataset = generate_inputs(
        bids_dir=root,
        pybids_inputs={modality: {"filters": filters, "wildcards": wildcards}},
        pybidsdb_dir=str(Path(db_dir) / modality) if db_dir else None,
        derivatives=modality != "eeg",
        participant_label=inp.get("participant_label") or None,
        exclude_participant_label=inp.get("exclude_participant_label") or None,
        validate=False,
    )
    component = dataset[modality]
    table = pd.DataFrame(component.zip_lists)
    if table.empty:
        raise FileNotFoundError(f"no {modality} files under {root} match filters {filters}")
    table["path"] = [component.path.format(**row) for row in table.to_dict(orient="records")]
    table = table.drop(columns=[c for c in table.columns if c == "extension"])
    keys = [e for e in SAMPLE_ENTITIES if e in table.columns]
    duplicated = table.duplicated(subset=keys, keep=False)
    if duplicated.any():
        raise ValueError(
            f"{modality}: several files share entities {keys}; narrow filters.{modality}: "
            f"{table.loc[duplicated, 'path'].tolist()[:4]}"
        )
    return table.sort_values(keys).reset_index(drop=True)


def _strip_entities(path: str, drop: tuple[str, ...]) -> str:
    name = Path(path).name
    stem = name.split("_")
    kept = [p for p in stem[:-1] if p.split("-")[0] not in drop]
    return str(Path(path).parent / "_".join(kept))


def bold_companions(bold_path: str) -> dict[str, str]:
    """fMRIPrep files that belong to a preprocessed BOLD run: sidecar, confounds, brain mask."""
    base = re.sub(r"_desc-preproc_bold\.nii(\.gz)?$", "", bold_path)
    return {
        "sidecar": re.sub(r"\.nii(\.gz)?$", ".json", bold_path),
        "confounds": _strip_entities(bold_path, ("space", "res", "den", "desc"))
        + "_desc-confounds_timeseries.tsv",
        "mask": base + "_desc-brain_mask.nii.gz",
    }


def eeg_companions(eeg_path: str) -> dict[str, str]:
    """BIDS files that belong to an EEG recording: channels, electrodes and the JSON sidecar."""
    stem = re.sub(r"_eeg\.[A-Za-z]+$", "", eeg_path)
    return {
        "channels": stem + "_channels.tsv",
        "sidecar": stem + "_eeg.json",
        "electrodes": _strip_entities(eeg_path, ("task", "acq", "run")) + "_electrodes.tsv",
    }
