"""EEG as a pipeline modality: BIDS EEG recordings into band-limited amplitude envelopes."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from brainfuse.core.bids import snakebids_table, strip_entities
from brainfuse.input_scan import FilterScan, scan_roots
from brainfuse.modalities.base import OutputName, section_values


def eeg_companions(eeg_path: str) -> dict[str, str]:
    """BIDS files that belong to an EEG recording: channels, electrodes and the JSON sidecar."""
    stem = re.sub(r"_eeg\.[A-Za-z]+$", "", eeg_path)
    return {
        "channels": stem + "_channels.tsv",
        "sidecar": stem + "_eeg.json",
        "electrodes": strip_entities(eeg_path, ("task", "acq", "run")) + "_electrodes.tsv",
    }


class EEG:
    """EEG recordings: sensor- or source-level envelopes, AEC and band power; ``eeg.parquet``."""

    name = "eeg"
    datatype = "eeg"
    config_section = "eeg"
    run_keys = (
        "level",
        "montage",
        "min_match_rate",
        "l_freq",
        "h_freq",
        "notch",
        "resample_hz",
        "bands",
        "envelope_sfreq",
        "window_length",
        "inverse",
        "snr",
        "parcel_mode",
        "orthogonalise",
        "forward",
        "source_spacing_mm",
        "min_channels",
    )
    cache_keys = ()
    filters = ("eeg",)
    qc_fields = ()
    cache_columns = ("envelopes", "aec", "band_power")
    cache_inputs = {"sidecars": "sidecar", "data": "features"}

    def input_roots(self, config: dict) -> dict[str, Path]:
        root = config["input"]["eeg_dir"]
        return {"eeg": Path(root)} if root else {}

    def input_scans(self, config: dict) -> list[FilterScan]:
        return scan_roots(self.input_roots(config), config)

    def discover(self, config: dict) -> pd.DataFrame:
        roots = self.input_roots(config)
        if not roots:
            return pd.DataFrame(columns=["subject", "path"])
        # raw BIDS, not a derivative dataset
        return snakebids_table(roots["eeg"], "eeg", config, derivatives=False)

    def demo_table(self, root: Path, runs: Mapping[str, list[int]], config: dict) -> pd.DataFrame:
        rows = [
            {
                "subject": sub,
                "task": "rest",
                "path": str(root / f"sub-{sub}" / "eeg" / f"sub-{sub}_task-rest_eeg.edf"),
            }
            for sub in runs
        ]
        return pd.DataFrame(rows)

    def demo_files(self, table: pd.DataFrame) -> list[str]:
        paths = table["path"].tolist()
        return [*paths, *[p for e in paths for p in eeg_companions(e).values()]]

    def sample_inputs(self, row: pd.Series, config: dict) -> dict[str, str | list[str]]:
        """The recording and its channels/electrodes files where present."""
        companions = eeg_companions(row["path"])

        def optional(kind: str) -> str | list[str]:
            path = companions[kind]
            # channels/electrodes files are optional in BIDS; a missing one falls back to the
            # montage (the demo writes them, so they are planned files there)
            return path if config["input"]["demo"] or os.path.exists(path) else []

        return {
            "eeg": row["path"],
            "channels": optional("channels"),
            "electrodes": optional("electrodes"),
        }

    def sample_outputs(self, atlas: str) -> dict[str, OutputName]:
        return {
            "features": ("eeg", {"seg": atlas, "desc": "envelopes", "suffix": "eeg.parquet"}),
            "sidecar": ("eeg", {"seg": atlas, "desc": "envelopes", "suffix": "eeg.json"}),
        }

    def run_params(self, config: dict) -> dict[str, Any]:
        # content-addressed memo of template forward models and inverse kernels, shared by jobs
        cache_dir = f"{config['results_dir']}/cache/eeg_head_model"
        return {**section_values(config, self, self.run_keys), "cache_dir": cache_dir}

    def sample_params(self, row: pd.Series, config: dict) -> dict[str, Any]:
        return {}

    def run_sample(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.eeg.run import eeg_run

        eeg_run(
            eeg=inputs["eeg"],
            channels=inputs["channels"] or None,
            electrodes=inputs["electrodes"] or None,
            entities=params["entities"],
            atlas_cfg=params["atlas"],
            params=params["section"],
            out_features=outputs["features"],
            out_sidecar=outputs["sidecar"],
        )

    def build_cache(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.eeg.cache import build_eeg_cache

        build_eeg_cache(
            sidecars=list(inputs["sidecars"]),
            data=list(inputs["data"]),
            participants=inputs["participants"],
            label_cfg=params["label"],
            atlas_cfg=params["atlas"],
            config_section=params["section"],
            out_cache=outputs["cache"],
            out_qc=outputs["qc"],
        )

    def report_section(self, cache_path: str) -> str:
        return ""
