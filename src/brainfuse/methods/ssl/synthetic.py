"""Synthetic fMRI + source-level EEG caches on the same atlas, for tests and benchmarks.

:func:`brainfuse.methods.torch.synthetic.write_synthetic_caches` writes the fMRI cache (planted FC
effect), the SC cache and the folds; its EEG cache has 16 sensor-like nodes. MCSP shares its
encoders between fMRI and EEG, so here the EEG cache is replaced by one on the fMRI's N parcels
(source level), with a planted effect of its own: in patients, the ``alpha`` envelopes of the
planted parcels share a common factor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.cache import read_cache, write_cache
from brainfuse.methods.torch.synthetic import write_synthetic_caches

__all__ = ["write_multimodal_caches"]


def write_multimodal_caches(
    outdir: str | Path,
    n_subjects: int = 24,
    n_nodes: int = 100,
    effect: float = 0.5,
    eeg_effect: float = 0.5,
    eeg_timepoints: tuple[int, int] = (150, 220),
    drop_eeg: tuple[int, ...] = (),
    n_folds: int = 3,
    seed: int = 0,
) -> dict[str, str]:
    """Write ``fmri.parquet``, ``eeg.parquet`` (N parcels), ``sc.parquet`` and ``folds.tsv``.

    Parameters
    ----------
    outdir : str or Path
        Destination folder.
    n_subjects, n_nodes, effect, n_folds, seed
        As :func:`~brainfuse.methods.torch.synthetic.write_synthetic_caches` (fMRI).
    eeg_effect : float
        Variance share of the common factor of the planted parcels' alpha envelopes in
        patients.
    eeg_timepoints : (int, int)
        Range of envelope lengths (samples at 2 Hz).
    drop_eeg : tuple of int
        Subject numbers (0-based) without EEG.

    Returns
    -------
    dict of str to str
        Paths under ``fmri``, ``eeg``, ``sc``, ``folds``.
    """
    paths = write_synthetic_caches(
        outdir, n_subjects=n_subjects, n_nodes=n_nodes, effect=effect, n_folds=n_folds, seed=seed
    )
    fmri = read_cache(paths["fmri"])
    planted = np.asarray(fmri.metadata["planted"], dtype=int)
    rng = np.random.default_rng(seed + 1)
    subjects = fmri.table.drop_duplicates("subject")[["subject", "site", "label"]]
    subjects = subjects[~np.isin(np.arange(len(subjects)), list(drop_eeg))]
    bands, t_max = ["alpha", "beta"], int(eeg_timepoints[1])
    envelopes = np.full((len(subjects), len(bands), n_nodes, t_max), np.nan, dtype=np.float32)
    lengths = []
    for i, label in enumerate(subjects["label"]):
        t = int(rng.integers(eeg_timepoints[0], eeg_timepoints[1] + 1))
        x = rng.standard_normal((len(bands), n_nodes, t)) + 0.3 * rng.standard_normal(t)
        if label == "patient":
            x[0, planted] += np.sqrt(eeg_effect / (1 - eeg_effect)) * rng.standard_normal(t)
        envelopes[i, :, :, :t] = np.exp(0.3 * x)  # positive, log-normal amplitudes
        lengths.append(t)
    aec = np.stack(
        [
            [np.corrcoef(envelopes[i, b, :, :t]) for b in range(len(bands))]
            for i, t in enumerate(lengths)
        ]
    ).astype(np.float32)
    table = pd.DataFrame(
        {
            "sample_id": [f"sub-{s}_task-rest_eeg" for s in subjects["subject"]],
            "subject": subjects["subject"].to_numpy(),
            "task": "rest",
            "site": subjects["site"].to_numpy(),
            "label": subjects["label"].to_numpy(),
            "n_timepoints": lengths,
        }
    )
    write_cache(
        paths["eeg"],
        table,
        {
            "envelopes": envelopes,
            "aec": aec,
            # log10 mean power, as the EEG branch writes it
            "band_power": np.log10(np.nanmean(envelopes**2, axis=-1)).astype(np.float32),
        },
        {
            "modality": "eeg",
            "level": "source",
            "bands": bands,
            "node_names": fmri.metadata.get("node_names", [f"P{i}" for i in range(n_nodes)]),
            "sampling_rate_hz": 2.0,
            "planted": planted.tolist(),
        },
    )
    return paths
