"""Structural connectivity as a pipeline modality: one parcel x parcel matrix per subject."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from brainfuse.core.bids import snakebids_table
from brainfuse.input_scan import FilterScan, scan_roots
from brainfuse.modalities.base import OutputName, section_values


class SC:
    """Diffusion connectomes (QSIRecon/MRtrix style): checked, normalised; ``sc.parquet``."""

    name = "sc"
    datatype = "dwi"
    config_section = "sc"
    run_keys = ("normalise", "density", "assume_atlas_order")
    cache_keys = ()
    filters = ("sc",)
    qc_fields = ()
    cache_columns = ("sc",)
    cache_inputs = {"sidecars": "sidecar", "data": "relmat"}

    def input_roots(self, config: dict) -> dict[str, Path]:
        root = config["input"]["sc_dir"]
        return {"sc": Path(root)} if root else {}

    def input_scans(self, config: dict) -> list[FilterScan]:
        return scan_roots(self.input_roots(config), config)

    def discover(self, config: dict) -> pd.DataFrame:
        roots = self.input_roots(config)
        if not roots:
            return pd.DataFrame(columns=["subject", "path"])
        return snakebids_table(roots["sc"], "sc", config, derivatives=True)

    def demo_table(self, root: Path, runs: Mapping[str, list[int]], config: dict) -> pd.DataFrame:
        name = "sub-{}_space-T1w_seg-Schaefer100_desc-sift2_relmat.tsv"
        folder = root / "derivatives" / "qsirecon"
        rows = [
            {"subject": sub, "path": str(folder / f"sub-{sub}" / "dwi" / name.format(sub))}
            for sub in runs
        ]
        return pd.DataFrame(rows)

    def demo_files(self, table: pd.DataFrame) -> list[str]:
        return table["path"].tolist()

    def sample_inputs(self, row: pd.Series, config: dict) -> dict[str, str | list[str]]:
        return {"sc": row["path"]}

    def sample_outputs(self, atlas: str) -> dict[str, OutputName]:
        return {
            "relmat": ("dwi", {"seg": atlas, "desc": "normalized", "suffix": "relmat.tsv"}),
            "sidecar": ("dwi", {"seg": atlas, "desc": "normalized", "suffix": "relmat.json"}),
        }

    def run_params(self, config: dict) -> dict[str, Any]:
        return section_values(config, self, self.run_keys)

    def sample_params(self, row: pd.Series, config: dict) -> dict[str, Any]:
        return {}

    def run_sample(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.sc.run import sc_run

        sc_run(
            sc_path=inputs["sc"],
            entities=params["entities"],
            atlas_cfg=params["atlas"],
            params=params["section"],
            out_relmat=outputs["relmat"],
            out_sidecar=outputs["sidecar"],
            modality=self.name,
        )

    def build_cache(
        self, inputs: Mapping[str, Any], params: Mapping[str, Any], outputs: Mapping[str, str]
    ) -> None:
        from brainfuse.modalities.sc.cache import build_sc_cache

        build_sc_cache(
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
