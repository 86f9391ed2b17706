"""Turn some demo subjects' fMRIPrep runs into XCP-D outputs, the pre-parcellated entry point.

XCP-D writes denoised parcel time series (``*_seg-<atlas>_stat-mean_timeseries.tsv`` with a JSON
sidecar) and a motion table; the BOLD of these subjects is then removed, so the demo exercises a
dataset where some subjects exist only as XCP-D derivatives.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import Atlas

XCPD_PARAMS = {
    "strategy": "36P",
    "detrend": True,
    "high_pass": 0.01,
    "low_pass": 0.1,
    "fd_threshold": None,
    "min_clean_seconds": 0,
    "dummy_scans": "auto",
    "custom_columns": [],
}


def convert_to_xcpd(root: str | Path, subjects: list[str], atlas: Atlas) -> list[Path]:
    """Write XCP-D style outputs for ``subjects`` (labels without ``sub-``); return the tables."""
    from brainfuse.modalities.fmri.denoise import denoise, read_confounds, repetition_time
    from brainfuse.modalities.fmri.modality import bold_companions
    from brainfuse.modalities.fmri.parcellate import parcellate

    root = Path(root)
    fmriprep, xcpd = root / "derivatives" / "fmriprep", root / "derivatives" / "xcpd"
    atomic.write_json(
        xcpd / "dataset_description.json",
        {
            "Name": "brainfuse demo: XCP-D style outputs",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "brainfuse.demo.xcpd (XCP-D conventions, synthetic)"}],
        },
    )
    written = []
    for sub in subjects:
        for bold in sorted((fmriprep / f"sub-{sub}" / "func").glob("*_desc-preproc_bold.nii.gz")):
            companions = bold_companions(str(bold))
            parcels = parcellate(bold, atlas, mask_path=companions["mask"])
            confounds = read_confounds(companions["confounds"], len(parcels.timeseries))
            # the demo writes the same TR in sidecar and header; the sidecar wins, as before
            tr = repetition_time(
                companions["sidecar"], parcels.tr, bold=bold, tr_source="sidecar", tolerance=0.01
            ).seconds
            cleaned = denoise(parcels.timeseries, confounds, tr, XCPD_PARAMS).timeseries
            stem = re.sub(r"_desc-preproc_bold\.nii\.gz$", "", bold.name)
            base = xcpd / f"sub-{sub}" / "func"
            table = base / f"{stem}_seg-{atlas.name}_stat-mean_timeseries.tsv"
            atomic.write_tsv(table, pd.DataFrame(cleaned, columns=list(atlas.labels)))
            atomic.write_json(
                table.with_suffix(".json"),
                {"RepetitionTime": tr, "Sources": [bold.name], "Denoising": "36P, 0.01-0.1 Hz"},
            )
            run_stem = stem.split("_space-")[0]
            motion = confounds[["framewise_displacement"]]
            atomic.write_tsv(base / f"{run_stem}_desc-motion_timeseries.tsv", motion)
            written.append(table)
        shutil.rmtree(fmriprep / f"sub-{sub}", ignore_errors=True)
    return written
