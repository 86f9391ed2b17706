"""Demo participants, the raw dataset's top-level files and the parcels that carry the planted
effects (the ground truth).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import write_json, write_text, write_tsv
from brainfuse.demo.common import (
    BIDS_VERSION,
    GROUPS,
    S_PARTICIPANTS,
    SITE_SHARES,
    SITES,
    parcel_centroids,
    seeded_rng,
)

# Planted-effect sizes (ground truth). fMRI: 0.35 gave the linear FC baseline 0.72 balanced
# accuracy on 24 subjects once three sites of unequal noise joined the demo; 0.45 gives 0.84.
FMRI_DELTA_R = 0.45

EEG_ALPHA_RATIO = 1.8

SC_SCALE = 0.5

SC_PLANTED_PARCELS = 6

# Nuisance effects of known size on fMRI connectivity (ground truth of the confound checks).
# Age: correlations among the age parcels fall by AGE_DELTA_R per year above AGE_CENTRE.
AGE_CENTRE = 38.0
AGE_DELTA_R = -0.004
# Motion that denoising leaves behind: correlations among the motion parcels rise by
# MOTION_DELTA_R per unit of log motion level (mean FD is roughly proportional to the level).
MOTION_DELTA_R = 0.08
CONFOUND_PARCELS = 6


def site_sizes(n_subjects: int) -> list[int]:
    """Subjects per site: ``SITE_SHARES`` of ``n_subjects`` by largest remainder (each >= 1)."""
    quota = np.array(SITE_SHARES, dtype=float) * n_subjects / sum(SITE_SHARES)
    sizes = np.maximum(np.floor(quota).astype(int), 1)
    for i in np.argsort(-(quota - np.floor(quota)), kind="stable"):
        if sizes.sum() >= n_subjects:
            break
        sizes[i] += 1
    while sizes.sum() > n_subjects:  # only when the floor of 1 overshoots: trim the largest
        sizes[np.argmax(sizes)] -= 1
    return sizes.tolist()


def make_participants(n_subjects: int, seed: int) -> pd.DataFrame:
    """Draw the participants table.

    Sites have unequal sizes (:func:`site_sizes`, consecutive subject numbers); within each site
    the groups are balanced, and the odd subject of odd-sized sites is alternately a control and
    a patient, so the groups stay balanced overall and group is independent of site. About a
    quarter of the subjects have a second run. Age and motion level (log-normal) are independent
    of group and site, so that harmonisation can remove site without touching them.

    Returns
    -------
    pandas.DataFrame
        ``participant_id, age, sex, site, group`` plus the non-BIDS columns ``runs`` (tuple of
        run numbers) and ``motion_level``.
    """
    rng = seeded_rng(seed, S_PARTICIPANTS)
    ids = [f"sub-{i + 1:02d}" for i in range(n_subjects)]
    sites: list[str] = []
    groups: list[str] = []
    odd = 0
    for site, size in zip(SITES, site_sizes(n_subjects), strict=True):
        extra = GROUPS[odd % 2] if size % 2 else None
        odd += size % 2
        block = [GROUPS[0], GROUPS[1]] * (size // 2) + ([extra] if extra else [])
        sites += [site] * size
        groups += [block[i] for i in rng.permutation(size)]
    n_two = max(1, round(n_subjects / 4))
    two_runs = set(rng.choice(n_subjects, size=n_two, replace=False).tolist())
    return pd.DataFrame(
        {
            "participant_id": ids,
            "age": np.clip(np.round(rng.normal(38, 11, n_subjects)), 18, 75).astype(int),
            "sex": rng.choice(["F", "M"], size=n_subjects),
            "site": sites,
            "group": groups,
            "runs": [(1, 2) if i in two_runs else (1,) for i in range(n_subjects)],
            "motion_level": np.exp(rng.normal(0.0, 0.6, n_subjects)),
        }
    )


def write_raw_dataset_files(
    outdir: Path, participants: pd.DataFrame, seed: int, atlas: Atlas
) -> None:
    """Write the raw dataset's ``dataset_description.json``, ``participants.tsv``/``.json`` and
    ``README``."""
    write_json(
        outdir / "dataset_description.json",
        {
            "Name": "brainfuse synthetic demo dataset",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["brainfuse.demo (synthetic data generator)"],
            "GeneratedBy": [
                {
                    "Name": "brainfuse.demo",
                    "Description": f"Synthetic data, seed {seed}; not recorded from people.",
                }
            ],
        },
    )
    write_tsv(
        outdir / "participants.tsv", participants[["participant_id", "age", "sex", "site", "group"]]
    )
    write_json(
        outdir / "participants.json",
        {
            "age": {"Description": "Age at scan", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            "site": {"Description": "Acquisition site", "Levels": {s: s for s in SITES}},
            "group": {
                "Description": "Diagnostic group",
                "Levels": {"control": "healthy control", "patient": "patient"},
            },
        },
    )
    write_text(
        outdir / "README",
        "brainfuse synthetic demo dataset\n"
        "================================\n\n"
        "All data are simulated by brainfuse.demo.make_demo_dataset (seed "
        f"{seed}, atlas {atlas.name}); nothing was recorded from people.\n"
        "Raw BIDS EEG lives here; derivatives/fmriprep and derivatives/qsirecon mimic fMRIPrep\n"
        "and QSIRecon outputs. Group effects planted in each modality are listed in\n"
        "ground_truth.json (not part of BIDS).\n",
    )


def _pick_alternating(atlas: Atlas, network: str, k: int, taken: set[str]) -> list[str]:
    """Up to ``k`` parcels of ``network``, alternating hemispheres, in label order."""
    left = [
        lb
        for lb, n in zip(atlas.labels, atlas.networks, strict=True)
        if n == network and "_LH_" in lb and lb not in taken
    ]
    right = [
        lb
        for lb, n in zip(atlas.labels, atlas.networks, strict=True)
        if n == network and "_LH_" not in lb and lb not in taken
    ]
    out: list[str] = []
    while len(out) < k and (left or right):
        for side in (left, right):
            if side and len(out) < k:
                out.append(side.pop(0))
    return out


def choose_fmri_parcels(atlas: Atlas, n: int = 10) -> list[str]:
    """The parcels whose mutual connectivity is raised in patients.

    Four Default, three Control and three Salience/Ventral-attention parcels (alternating
    hemispheres); atlases without Yeo-7 networks fall back to evenly spaced parcels.
    """
    plan = (("Default", 4), ("Cont", 3), ("SalVentAttn", 3))
    chosen: list[str] = []
    for network, k in plan:
        chosen += _pick_alternating(atlas, network, k, set(chosen))
    if len(chosen) < n:
        spaced = [atlas.labels[i] for i in np.linspace(0, atlas.n_nodes - 1, 3 * n).astype(int)]
        chosen += [lb for lb in spaced if lb not in chosen][: n - len(chosen)]
    return chosen[:n]


def choose_eeg_parcels(atlas: Atlas, n: int = 6) -> list[str]:
    """The parcels whose alpha amplitude is raised in patients.

    The parcels nearest to six posterior-parietal targets (MNI mm: bilateral inferior parietal,
    precuneus and superior parietal cortex), which carry part of the posterior alpha rhythm.
    """
    targets = np.array(
        [[-45, -65, 35], [45, -65, 35], [-8, -60, 40], [8, -60, 40], [-25, -65, 55], [25, -65, 55]],
        dtype=float,
    )
    centroids = parcel_centroids(atlas)
    chosen: list[int] = []
    for target in targets[:n]:
        dist = np.linalg.norm(centroids - target, axis=1)
        dist[np.isnan(dist)] = np.inf
        dist[chosen] = np.inf
        chosen.append(int(np.argmin(dist)))
    return [atlas.labels[i] for i in chosen]


def choose_confound_parcels(atlas: Atlas, taken: list[str]) -> dict[str, list[str]]:
    """The parcels whose mutual connectivity follows age (visual) and motion (somatomotor).

    Parcels in ``taken`` (the planted diagnosis parcels) are never chosen, so the nuisance
    effects do not overlap the diagnosis effect; atlases without Yeo-7 networks fall back to
    evenly spaced parcels.
    """
    out: dict[str, list[str]] = {}
    used = set(taken)
    for name, network in (("age", "Vis"), ("motion", "SomMot")):
        chosen = _pick_alternating(atlas, network, CONFOUND_PARCELS, used)
        if len(chosen) < CONFOUND_PARCELS:
            spaced = np.linspace(0, atlas.n_nodes - 1, 4 * CONFOUND_PARCELS).astype(int)
            chosen += [
                lb for lb in (atlas.labels[i] for i in spaced) if lb not in used | set(chosen)
            ][: CONFOUND_PARCELS - len(chosen)]
        out[name] = chosen
        used |= set(chosen)
    return out
