"""The fMRI section of the dataset report: motion summary and QC-FC before and after denoising."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfuse.core.html import html_table


def qc_section(fmri_cache: str) -> str:
    """Motion summary and QC-FC before and after denoising (included runs)."""
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.fmri.qcfc import qc_fc

    cache = read_cache(
        fmri_cache,
        columns=["fc", "fc_raw", "mean_fd", "censored_fraction", "tsnr_mean", "sample_id"],
    )
    table = cache.table
    if len(table) == 0:
        return "<h3>fMRI motion and QC-FC</h3><p>No included fMRI runs.</p>"
    fd = pd.to_numeric(table["mean_fd"], errors="coerce").to_numpy(dtype=float)
    rows = []
    for label, key in (("before denoising", "fc_raw"), ("after denoising", "fc")):
        # tables have no raw FC: they count after denoising only
        usable = np.isfinite(cache.arrays[key]).any(axis=(1, 2)) & np.isfinite(fd)
        result = qc_fc(cache.arrays[key][usable], fd[usable])
        rows.append(
            {
                "FC": label,
                "median |r(FC, FD)|": result["median_abs_r"],
                "edges with p < 0.05": result["fraction_significant"],
                "runs": result["n_samples"],
            }
        )

    def column(name):
        return pd.to_numeric(table[name], errors="coerce")

    motion = pd.DataFrame(
        {
            "measure": ["mean FD (mm)", "censored share", "parcel tSNR"],
            "median": [
                np.nanmedian(fd),
                column("censored_fraction").median(),
                column("tsnr_mean").median(),
            ],
            "max": [np.nanmax(fd), column("censored_fraction").max(), column("tsnr_mean").max()],
        }
    )
    return (
        "<h3>fMRI motion and QC-FC</h3>"
        + html_table(motion)
        + "<p>QC-FC: correlation across runs between each edge's FC and mean framewise "
        "displacement. Near 0 and about 5% of edges at p &lt; 0.05 means motion no longer "
        "drives FC. Runs given as pre-parcellated tables (taken as denoised) have no raw FC: they "
        "count after denoising only, when their mean FD is known.</p>"
        + html_table(pd.DataFrame(rows))
    )
