"""fMRI as a pipeline modality: fMRIPrep BOLD runs or pre-parcellated XCP-D tables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from brainfuse.core.bids import SAMPLE_ENTITIES, snakebids_table, strip_entities
from brainfuse.core.errors import ConfigError
from brainfuse.input_scan import FilterScan, scan_roots
from brainfuse.modalities.base import OutputName, section_values
from brainfuse.modalities.fmri.tables import table_sidecar

DEMO_SPACE = "MNI152NLin6Asym"
#: Input kinds, in the order their samples are joined (the ``source`` column).
SOURCES = ("bold", "timeseries")
#: Run-level QC fields the cache table carries for every included run.
QC_FIELDS = (
    "tr",
    "mean_fd",
    "censored_fraction",
    "tsnr_mean",
    "column_order",
    "n_constant_parcels",
)


def bold_companions(bold_path: str) -> dict[str, str]:
    """fMRIPrep files that belong to a preprocessed BOLD run: sidecar, confounds, brain mask."""
    base = re.sub(r"_desc-preproc_bold\.nii(\.gz)?$", "", bold_path)
    return {
        "sidecar": re.sub(r"\.nii(\.gz)?$", ".json", bold_path),
        "confounds": strip_entities(bold_path, ("space", "res", "den", "desc"))
        + "_desc-confounds_timeseries.tsv",
        "mask": base + "_desc-brain_mask.nii.gz",
    }


def merge_sources(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """BOLD runs and pre-parcellated tables as one set of samples with a ``source`` column."""
    parts = [t.assign(source=name) for name in SOURCES if len(t := tables[name])]
    fmri = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["subject", "path"])
    )
    keys = [e for e in SAMPLE_ENTITIES if e in fmri.columns]
    if fmri[keys].isna().any().any():
        raise ValueError(
            "BOLD runs and pre-parcellated time series are named with different entities"
        )
    return fmri


def _shared_samples(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    keys = [e for e in SAMPLE_ENTITIES if e in a.columns and e in b.columns]
    if a.empty or b.empty or not keys:
        return []
    merged = a[keys].merge(b[keys])
    return ["_".join(map(str, row)) for row in merged.to_numpy()]


def _number(value: Any) -> float | None:
    """A float, or None for a missing value (job parameters hold no NaN)."""
    return None if value is None or pd.isna(value) else float(value)


class FMRI:
    """fMRI runs: parcellated, denoised, FC and run-level QC; cached as ``fmri.parquet``."""

    name = "fmri"
    datatype = "func"
    config_section = "fmri"
    run_keys = (
        "strategy",
        "custom_columns",
        "detrend",
        "high_pass",
        "low_pass",
        "fd_threshold",
        "min_clean_seconds",
        "dummy_scans",
        "tr_source",
        "tr_tolerance",
    )
    cache_keys = ("sequence_length", "dfc_window", "dfc_step")
    filters = SOURCES
    qc_fields = QC_FIELDS
    cache_columns = (
        "timeseries",
        "fc",
        "fc_raw",
        "fc_partial",
        "fc_lw",
        "node_mask",
        "sequence",
        "spectrum",
        "dfc",
    )
    cache_inputs = {"sidecars": "sidecar", "data": "timeseries", "raw_fc": "relmat_raw"}

    def input_roots(self, config: dict) -> dict[str, Path]:
        """fMRIPrep's root for BOLD; XCP-D's, or the ``input.roi_tables`` folder, for tables."""
        inp = config["input"]
        if inp["xcpd_dir"] and inp["roi_tables"]:
            raise ConfigError(
                "input: set xcpd_dir or roi_tables, not both (both give pre-parcellated tables)"
            )
        roots = {"bold": inp["fmriprep_dir"], "timeseries": inp["xcpd_dir"]}
        if inp["roi_tables"]:
            roots["timeseries"] = inp["roi_tables"]["dir"]
        return {kind: Path(root) for kind, root in roots.items() if root}

    def input_scans(self, config: dict) -> list[FilterScan]:
        """BIDS roots against their filters; an ``input.roi_tables`` folder against the
        participants rows its pattern names."""
        roots = self.input_roots(config)
        roi_tables = config["input"]["roi_tables"]
        if not roi_tables:
            return scan_roots(roots, config)
        from brainfuse.modalities.fmri.roi_folder import roi_folder_scan

        bids_roots = {kind: root for kind, root in roots.items() if kind != "timeseries"}
        return [*scan_roots(bids_roots, config), roi_folder_scan(config)]

    def discover(self, config: dict) -> pd.DataFrame:
        """BOLD runs and tables; a table's configured TR and mean FD ride along as columns."""
        from brainfuse.modalities.fmri.roi_folder import discover_roi_tables, table_run_values

        empty = pd.DataFrame(columns=["subject", "path"])
        roots = self.input_roots(config)
        tables = {
            kind: snakebids_table(roots[kind], kind, config, derivatives=True)
            if kind in roots
            else empty
            for kind in SOURCES
            if not (kind == "timeseries" and config["input"]["roi_tables"])
        }
        if config["input"]["roi_tables"]:
            tables["timeseries"] = discover_roi_tables(config)
        tables["timeseries"] = table_run_values(tables["timeseries"], config)
        overlap = _shared_samples(tables["bold"], tables["timeseries"])
        if overlap:
            raise ValueError(
                f"runs found both as BOLD and as pre-parcellated time series: {overlap[:4]}"
            )
        return merge_sources(tables)

    def demo_table(self, root: Path, runs: Mapping[str, list[int]], config: dict) -> pd.DataFrame:
        """The last ``input.demo_xcpd_subjects`` subjects come as XCP-D time series, not BOLD."""
        n_xcpd = config["input"]["demo_xcpd_subjects"]
        xcpd_subjects = set(list(runs)[len(runs) - n_xcpd :]) if n_xcpd else set()
        derivatives = root / "derivatives"
        bold, timeseries = [], []
        for sub, sub_runs in runs.items():
            for run in sub_runs:
                stem = f"sub-{sub}_task-rest_run-{run}_space-{DEMO_SPACE}"
                row = {"subject": sub, "task": "rest", "run": str(run)}
                if sub in xcpd_subjects:
                    name = f"{stem}_seg-Schaefer100_stat-mean_timeseries.tsv"
                    folder = derivatives / "xcpd" / f"sub-{sub}" / "func"
                    timeseries.append({**row, "path": str(folder / name)})
                else:
                    name = f"{stem}_desc-preproc_bold.nii.gz"
                    folder = derivatives / "fmriprep" / f"sub-{sub}" / "func"
                    bold.append({**row, "path": str(folder / name)})
        columns = ["subject", "task", "run", "path"]
        return merge_sources(
            {
                "bold": pd.DataFrame(bold, columns=columns),
                "timeseries": pd.DataFrame(timeseries, columns=columns),
            }
        )

    def demo_files(self, table: pd.DataFrame) -> list[str]:
        bold = table.loc[table["source"] == "bold", "path"].tolist()
        tables = table.loc[table["source"] == "timeseries", "path"].tolist()
        return [
            *bold,
            *[p for b in bold for p in bold_companions(b).values()],
            *tables,
            *[table_sidecar(p) for p in tables],
        ]

    def sample_inputs(self, row: pd.Series, config: dict) -> dict[str, str | list[str]]:
        """A BOLD run with its fMRIPrep companions, or a pre-parcellated time-series table.

        Companions (confounds, brain mask, JSON sidecar) are declared only where they exist, so
        a missing one becomes that run's recorded exclusion (or, for a sidecar, a TR from the
        NIfTI header or ``input.timeseries_tr``) instead of stopping the workflow. The demo
        writes every companion, so there they are planned files.
        """

        def optional(path: str) -> str | list[str]:
            return path if config["input"]["demo"] or os.path.exists(path) else []

        if row["source"] == "bold":
            companions = bold_companions(row["path"])
            return {
                "bold": row["path"],
                "confounds": optional(companions["confounds"]),
                "mask": optional(companions["mask"]),
                "sidecar": optional(companions["sidecar"]),
            }
        return {"table": row["path"], "sidecar": optional(table_sidecar(row["path"]))}

    def sample_outputs(self, atlas: str) -> dict[str, OutputName]:
        return {
            "timeseries": ("func", {"seg": atlas, "stat": "mean", "suffix": "timeseries.tsv"}),
            "sidecar": ("func", {"seg": atlas, "stat": "mean", "suffix": "timeseries.json"}),
            "relmat": (
                "func",
                {"seg": atlas, "stat": "pearsoncorrelation", "suffix": "relmat.tsv"},
            ),
            "relmat_raw": (
                "func",
                {"seg": atlas, "desc": "raw", "stat": "pearsoncorrelation", "suffix": "relmat.tsv"},
            ),
            "coverage": ("func", {"seg": atlas, "stat": "coverage", "suffix": "bold.tsv"}),
            "figure": ("figures", {"seg": atlas, "desc": "qc", "suffix": "bold.png"}),
        }

    def run_params(self, config: dict) -> dict[str, Any]:
        return section_values(config, self, self.run_keys)

    def sample_params(self, row: pd.Series, config: dict) -> dict[str, Any]:
        """A table's configured TR (or why it has none) and its participants-column mean FD."""
        configured = config["input"]["timeseries_tr"]
        return {
            "default_tr": _number(row.get("tr")) if isinstance(configured, str) else configured,
            "tr_missing": missing if isinstance(missing := row.get("tr_missing"), str) else "",
            "mean_fd": _number(row.get("mean_fd")),
        }

    def run_sample(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.fmri.run import fmri_run, timeseries_run

        common = dict(
            entities=params["entities"],
            atlas_cfg=params["atlas"],
            params=params["section"],
            **{f"out_{name}": path for name, path in outputs.items()},
        )
        if "bold" in inputs:
            # an undeclared (missing) companion is passed by its expected path, so the run's
            # exclusion reason, or its TR warning for a sidecar, names the file
            expected = bold_companions(inputs["bold"])
            fmri_run(
                bold=inputs["bold"],
                **{name: inputs[name] or expected[name] for name in expected},
                **common,
            )
        else:
            timeseries_run(
                table=inputs["table"],
                default_tr=params["default_tr"],
                tr_missing=params["tr_missing"],
                mean_fd=params["mean_fd"],
                **common,
            )

    def build_cache(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.fmri.cache import build_fmri_cache

        build_fmri_cache(
            sidecars=list(inputs["sidecars"]),
            data=list(inputs["data"]),
            raw_fc=list(inputs["raw_fc"]),
            participants=inputs["participants"],
            label_cfg=params["label"],
            atlas_cfg=params["atlas"],
            config_section=params["section"],
            qc_fields=self.qc_fields,
            out_cache=outputs["cache"],
            out_qc=outputs["qc"],
        )

    def report_section(self, cache_path: str) -> str:
        from brainfuse.modalities.fmri.report import qc_section

        return qc_section(cache_path)
