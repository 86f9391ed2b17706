"""Small synthetic caches with a planted group effect, for tests and benchmarks.

fMRI: each parcel's signal is white noise plus a weak global factor; in patients the ``planted``
parcels also share a common factor with loading ``effect`` (their mutual correlation rises by
about ``effect``). Runs differ in length (NaN padding) and one run has a masked parcel. EEG and SC
caches cover the same subjects except the ones listed in ``drop_eeg``. SC is symmetric noise; with
``sc_effect > 0`` the edges among the planted parcels of patients are stronger by ``sc_effect``
(a planted structural effect for the SC+FC fusion methods).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.cache import pad_time, write_cache
from brainfuse.folds import make_folds


def _fc(series: np.ndarray) -> np.ndarray:
    """Pearson r of a (N, T) array; NaN rows/columns for NaN parcels."""
    valid = np.isfinite(series).all(axis=1)
    fc = np.full((series.shape[0],) * 2, np.nan, dtype=np.float32)
    fc[np.ix_(valid, valid)] = np.corrcoef(series[valid])
    return fc


def write_synthetic_caches(
    outdir: str | Path,
    n_subjects: int = 24,
    runs: int = 1,
    n_nodes: int = 100,
    n_timepoints: tuple[int, int] = (90, 130),
    effect: float = 0.5,
    n_planted: int = 10,
    drop_eeg: tuple[int, ...] = (),
    n_folds: int = 3,
    seed: int = 0,
    sc_effect: float = 0.0,
) -> dict[str, str]:
    """Write ``fmri.parquet``, ``eeg.parquet``, ``sc.parquet`` and ``folds.tsv`` to ``outdir``.

    Parameters
    ----------
    outdir : str or Path
        Destination folder (created).
    n_subjects : int
        Subjects, alternately ``control`` and ``patient`` (label column ``label``).
    runs : int
        fMRI runs per subject (samples per subject).
    n_nodes : int
        Parcels N.
    n_timepoints : (int, int)
        Range of run lengths (inclusive).
    effect : float
        Variance share of the common factor of the planted parcels in patients.
    n_planted : int
        Planted parcels (spread over the atlas).
    drop_eeg : tuple of int
        Subject numbers (0-based) without EEG.
    n_folds : int
        Outer folds of ``folds.tsv``.
    seed : int
        Seed of every draw.
    sc_effect : float
        Added to the SC edges among the planted parcels of patients (0: no SC effect). No
        random draw depends on it, so the other caches do not change with it.

    Returns
    -------
    dict of str to str
        Paths under keys ``fmri``, ``eeg``, ``sc``, ``folds``.
    """
    out = Path(outdir)
    rng = np.random.default_rng(seed)
    planted = np.linspace(0, n_nodes - 1, n_planted).astype(int)
    subjects = [f"{i:02d}" for i in range(n_subjects)]
    labels = ["patient" if i % 2 else "control" for i in range(n_subjects)]
    sites = ["siteA" if (i // 2) % 2 == 0 else "siteB" for i in range(n_subjects)]

    rows, series = [], []
    for s, (sub, label, site) in enumerate(zip(subjects, labels, sites, strict=True)):
        for run in range(1, runs + 1):
            t = int(rng.integers(n_timepoints[0], n_timepoints[1] + 1))
            x = rng.standard_normal((n_nodes, t)) + 0.3 * rng.standard_normal(t)
            if label == "patient":
                loading = np.sqrt(effect / (1 - effect))
                x[planted] += loading * rng.standard_normal(t)
            if s == 1 and run == 1:
                x[n_nodes - 1] = np.nan  # a parcel outside the brain mask
            series.append(x.astype(np.float32))
            rows.append(
                {
                    "sample_id": f"sub-{sub}_task-rest_run-{run}",
                    "subject": sub,
                    "task": "rest",
                    "run": str(run),
                    "site": site,
                    "label": label,
                    "n_timepoints": t,
                    "tr": 2.0,
                }
            )
    table = pd.DataFrame(rows)
    padded, _ = pad_time(series)
    fc = np.stack([_fc(x) for x in series])
    mask = np.stack([np.isfinite(x).all(axis=1) for x in series]).astype(np.uint8)
    paths = {m: str(out / f"{m}.parquet") for m in ("fmri", "eeg", "sc")}
    meta = {"modality": "fmri", "atlas": "synthetic", "planted": planted.tolist()}
    write_cache(paths["fmri"], table, {"timeseries": padded, "fc": fc, "node_mask": mask}, meta)

    eeg_subjects = [i for i in range(n_subjects) if i not in set(drop_eeg)]
    n_bands, n_eeg, t_eeg = 2, 16, 60
    envelopes = np.abs(rng.standard_normal((len(eeg_subjects), n_bands, n_eeg, t_eeg)))
    envelopes = envelopes.astype(np.float32)
    envelopes[0, :, :, t_eeg - 5 :] = np.nan  # a shorter recording
    aec = np.stack([[np.corrcoef(e[b]) for b in range(n_bands)] for e in envelopes[:, :, :, :55]])
    eeg_table = pd.DataFrame(
        {
            "sample_id": [f"sub-{subjects[i]}_task-rest_eeg" for i in eeg_subjects],
            "subject": [subjects[i] for i in eeg_subjects],
            "task": "rest",
            "site": [sites[i] for i in eeg_subjects],
            "label": [labels[i] for i in eeg_subjects],
            "n_timepoints": [t_eeg - 5 if k == 0 else t_eeg for k in range(len(eeg_subjects))],
        }
    )
    write_cache(
        paths["eeg"],
        eeg_table,
        {
            "envelopes": envelopes,
            "aec": aec.astype(np.float32),
            "band_power": np.nanmean(envelopes, axis=-1).astype(np.float32),
        },
        {
            "modality": "eeg",
            "bands": ["alpha", "beta"],
            "node_names": [f"E{i}" for i in range(n_eeg)],
            "sampling_rate_hz": 2.0,
        },
    )

    sc = np.abs(rng.standard_normal((n_subjects, n_nodes, n_nodes))).astype(np.float32)
    sc = (sc + sc.transpose(0, 2, 1)) / 2
    if sc_effect:
        block = np.ix_(planted, planted)
        for s, label in enumerate(labels):
            if label == "patient":
                sc[s][block] += np.float32(sc_effect)
    sc_table = pd.DataFrame(
        {
            "sample_id": [f"sub-{s}_dwi" for s in subjects],
            "subject": subjects,
            "site": sites,
            "label": labels,
        }
    )
    write_cache(paths["sc"], sc_table, {"sc": sc}, {"modality": "sc"})

    folds = make_folds(
        table[["subject", "label", "site"]].drop_duplicates("subject"),
        n_folds=n_folds,
        val_fraction=0.25,
        seed=seed,
    )
    paths["folds"] = str(out / "folds.tsv")
    atomic.write_tsv(paths["folds"], folds)
    return paths
