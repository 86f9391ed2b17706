"""QC-FC: how much functional connectivity tracks head motion across runs (Ciric et al. 2017)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def qc_fc(fc: np.ndarray, mean_fd: np.ndarray) -> dict[str, float]:
    """Correlate each edge's FC with mean framewise displacement across samples.

    Parameters
    ----------
    fc : ndarray (B, N, N)
        Pearson FC per sample (NaN for masked parcels).
    mean_fd : ndarray (B,)
        Mean FD of each sample.

    Returns
    -------
    dict with ``median_abs_r`` (median |r| over edges), ``fraction_significant`` (share of edges
    with uncorrected p < 0.05) and ``n_samples``.
    """
    iu = np.triu_indices(fc.shape[-1], k=1)
    edges = np.arctanh(np.clip(fc[:, iu[0], iu[1]].astype(np.float64), -0.999999, 0.999999))
    usable = np.all(np.isfinite(edges), axis=0)
    edges = edges[:, usable]
    fd = np.asarray(mean_fd, dtype=np.float64)
    if len(fd) < 4 or edges.shape[1] == 0:
        return {"median_abs_r": np.nan, "fraction_significant": np.nan, "n_samples": len(fd)}
    e = (edges - edges.mean(axis=0)) / edges.std(axis=0).clip(min=1e-12)
    f = (fd - fd.mean()) / max(fd.std(), 1e-12)
    r = (e * f[:, None]).mean(axis=0)
    t = r * np.sqrt((len(fd) - 2) / np.clip(1 - r**2, 1e-12, None))
    p = 2 * stats.t.sf(np.abs(t), len(fd) - 2)
    return {
        "median_abs_r": float(np.median(np.abs(r))),
        "fraction_significant": float((p < 0.05).mean()),
        "n_samples": int(len(fd)),
    }
