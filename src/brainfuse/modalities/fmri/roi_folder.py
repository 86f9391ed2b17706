"""Pre-parcellated fMRI outside BIDS: a folder of ROI tables named from participants columns, and
the per-subject TR and motion that such tables lack.

``input.roi_tables: {dir: rois_cc200, pattern: "{FILE_ID}_rois_cc200.1D"}`` gives each
participants row the file named by filling the pattern's placeholders from that row; the
subject is the row's ``input.participant_column``. ``input.timeseries_tr`` may name a TSV/CSV
with a ``tr`` column keyed by a participants column (``site`` stands for ``label.site_column``),
and ``input.mean_fd_column`` a participants column of mean framewise displacement. Everything
here runs once at planning, so each job receives plain values.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pandas as pd

from brainfuse.core.errors import ConfigError
from brainfuse.core.samples import read_participants
from brainfuse.input_scan import FilterScan


def participants_table(config: dict) -> pd.DataFrame:
    """The participants table (``input.participants``, else ``participants.tsv`` in xcpd_dir)."""
    inp = config["input"]
    path = inp["participants"]
    if path is None and inp["xcpd_dir"]:
        path = Path(inp["xcpd_dir"]) / "participants.tsv"
    if path is None or not Path(path).exists():
        raise ConfigError(
            "input.participants: a participants table is needed for input.roi_tables, a TR "
            f"table in input.timeseries_tr or input.mean_fd_column (not found: {path})"
        )
    return read_participants(path, inp["participant_column"])


def _pattern_fields(pattern: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(pattern) if field]


def expected_tables(config: dict, participants: pd.DataFrame) -> pd.Series:
    """Each participants row's ROI table path (subject index); NaN where a placeholder is empty.

    Raises
    ------
    ConfigError
        A placeholder of ``input.roi_tables.pattern`` is not a participants column.
    """
    roi = config["input"]["roi_tables"]
    fields = _pattern_fields(roi["pattern"])
    unknown = [f for f in fields if f not in participants.columns]
    if unknown:
        raise ConfigError(
            f"input.roi_tables.pattern {roi['pattern']!r}: {unknown} are not participants "
            f"columns; columns: {list(participants.columns)}"
        )
    complete = participants[fields].notna().all(axis=1)
    names = [
        roi["pattern"].format(**row) if ok else None
        for row, ok in zip(participants[fields].to_dict("records"), complete, strict=True)
    ]
    paths = [str(Path(roi["dir"]) / name) if name else None for name in names]
    return pd.Series(paths, index=participants.index, dtype=object)


def unmatched_roi_tables(config: dict) -> tuple[list[str], list[str]]:
    """Participants rows without a table, and tables in the folder without a participants row.

    Returns
    -------
    rows_without_file : list of str
        Subjects whose table (named by the pattern) does not exist.
    files_without_row : list of str
        Names in ``input.roi_tables.dir`` that have the pattern's form but name no participant.
    """
    participants = participants_table(config)
    expected = expected_tables(config, participants)
    rows_without_file = [
        subject for subject, path in expected.items() if path is None or not Path(path).is_file()
    ]
    roi = config["input"]["roi_tables"]
    form = re.compile(
        "".join(
            re.escape(text) + ("(.+)" if field else "")
            for text, field, _, _ in string.Formatter().parse(roi["pattern"])
        )
    )
    wanted = {Path(p).name for p in expected if p is not None}
    found = sorted(p.name for p in Path(roi["dir"]).iterdir() if form.fullmatch(p.name))
    return rows_without_file, [name for name in found if name not in wanted]


def roi_folder_scan(config: dict) -> FilterScan:
    """The planning check's view of the folder: tables that name a participant, and those that
    do not (rows without a table are listed by the check as participants without inputs)."""
    rows_without_file, files_without_row = unmatched_roi_tables(config)
    roi = config["input"]["roi_tables"]
    n_rows = len(expected_tables(config, participants_table(config)))
    away = {}
    if files_without_row:
        away[f"name no participants row ({_listed(files_without_row)})"] = len(files_without_row)
    return FilterScan(
        kind="roi_tables",
        root=Path(roi["dir"]),
        matched=n_rows - len(rows_without_file),
        turned_away=away,
    )


def _listed(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def discover_roi_tables(config: dict) -> pd.DataFrame:
    """The ROI tables that exist, one row per subject (``subject``, ``path``), sorted.

    A participants row whose table is missing is not a sample (:func:`unmatched_roi_tables`
    lists it); ``input.participant_label`` and ``exclude_participant_label`` apply as in BIDS.
    """
    inp = config["input"]
    participants = participants_table(config)
    expected = expected_tables(config, participants)
    keep = [
        subject
        for subject, path in expected.items()
        if path is not None
        and Path(path).is_file()
        and (not inp["participant_label"] or subject in inp["participant_label"])
        and subject not in inp["exclude_participant_label"]
    ]
    if not keep:
        raise FileNotFoundError(
            f"input.roi_tables: no file named {inp['roi_tables']['pattern']!r} in "
            f"{inp['roi_tables']['dir']} for any participants row"
        )
    table = pd.DataFrame({"subject": keep, "path": [expected[s] for s in keep]})
    return table.sort_values("subject").reset_index(drop=True)


def table_run_values(tables: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Add each table's configured TR (``tr``, or why there is none in ``tr_missing``) and the
    participants column's mean FD (``mean_fd``) to the pre-parcellated samples.

    Only what ``input.timeseries_tr`` as a TR table and ``input.mean_fd_column`` ask for reads
    the participants table; with neither the samples are returned unchanged.
    """
    inp = config["input"]
    by_table = isinstance(inp["timeseries_tr"], str)
    if tables.empty or not (by_table or inp["mean_fd_column"]):
        return tables
    participants = participants_table(config)
    out = tables.copy()
    if by_table:
        out["tr"], out["tr_missing"] = _trs_from_table(
            out["subject"], participants, inp["timeseries_tr"], config["label"]["site_column"]
        )
    column = inp["mean_fd_column"]
    if column:
        if column not in participants.columns:
            raise ConfigError(
                f"input.mean_fd_column {column!r} is not a participants column; "
                f"columns: {list(participants.columns)}"
            )
        fd = pd.to_numeric(participants[column], errors="coerce")
        out["mean_fd"] = out["subject"].map(fd)
    return out


def _trs_from_table(
    subjects: pd.Series, participants: pd.DataFrame, path: str, site_column: str
) -> tuple[list[float | None], list[str]]:
    """Each subject's TR from a table keyed by a participants column, and why where none."""
    sep = "," if Path(path).suffix.lower() == ".csv" else "\t"
    try:
        trs = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=["n/a"])
    except OSError as err:
        raise ConfigError(f"input.timeseries_tr: cannot read {path} ({err})") from err
    keys = [c for c in trs.columns if c != "tr"]
    if "tr" not in trs.columns or len(keys) != 1:
        raise ConfigError(
            f"input.timeseries_tr {path}: needs a 'tr' column and one key column "
            f"(a participants column, or site); columns: {list(trs.columns)}"
        )
    key = keys[0]
    column = key if key in participants.columns else site_column if key == "site" else None
    if column is None or column not in participants.columns:
        raise ConfigError(
            f"input.timeseries_tr {path}: key column {key!r} is not a participants column "
            f"(site stands for label.site_column {site_column!r})"
        )
    seconds = pd.to_numeric(trs.set_index(key)["tr"], errors="coerce")
    name = Path(path).name
    values, missing = [], []
    for value in subjects.map(participants[column]):
        tr = seconds.get(value) if isinstance(value, str) else None
        ok = tr is not None and pd.notna(tr) and tr > 0
        values.append(float(tr) if ok else None)
        missing.append("" if ok else f"no TR for {column} {value!r} in {name}")
    return values, missing
