"""Demo structural connectivity in QSIRecon's output layout.

Distance-dependent, sparse, log-normally weighted streamline matrices with strong homotopic
edges; in patients every edge of 6 planted parcels is weaker (a disconnection of those parcels,
spread over ~150 tracts, as white-matter lesions or hub damage would give).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import write_json, write_tsv
from brainfuse.demo.common import (
    BIDS_VERSION,
    S_SC_GROUP,
    S_SC_SUB,
    S_SITE,
    SITES,
    hemispheres,
    parcel_centroids,
    seeded_rng,
)
from brainfuse.demo.participants import SC_PLANTED_PARCELS, SC_SCALE

# Site effects on streamline weights: a global scale and, per site, a fixed log-normal factor
# per edge of sd ``edge_sd`` (tractography settings favour some tracts over others).
SITE_SC = {
    "siteA": {"scale": 1.0, "edge_sd": 0.2},
    "siteB": {"scale": 0.85, "edge_sd": 0.2},
    "siteC": {"scale": 1.1, "edge_sd": 0.2},
}


def site_edge_factors(n: int, seed: int) -> dict[str, np.ndarray]:
    """Per site, the symmetric (n, n) multiplicative factor of each edge (scale included)."""
    out = {}
    for k, site in enumerate(SITES):
        noise = np.triu(
            seeded_rng(seed, S_SITE, k, 2).normal(0.0, SITE_SC[site]["edge_sd"], (n, n)), 1
        )
        out[site] = SITE_SC[site]["scale"] * np.exp(noise + noise.T)
    return out


def _homotopic(atlas: Atlas, hemi: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Boolean matrix of homotopic pairs: same label with LH<->RH, else the mirrored centroid."""
    n = atlas.n_nodes
    homo = np.zeros((n, n), dtype=bool)
    index = {lb: i for i, lb in enumerate(atlas.labels)}
    for i, lb in enumerate(atlas.labels):
        if hemi[i] != "L":
            continue
        j = index.get(lb.replace("_LH_", "_RH_"))
        if j is None or j == i:
            right = np.flatnonzero(hemi == "R")
            if right.size == 0:
                continue
            mirrored = cent[i] * np.array([-1.0, 1.0, 1.0])
            j = int(right[np.argmin(np.linalg.norm(cent[right] - mirrored, axis=1))])
        homo[i, j] = homo[j, i] = True
    return homo


def sc_template(
    atlas: Atlas, rng: np.random.Generator, density: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Group-level edge set and mean log-weights.

    Edge probability is logistic in Euclidean centroid distance (length scale 20 mm), lower
    between hemispheres except for homotopic pairs, with the intercept chosen by bisection so
    the expected density is ``density``. Log-weights fall with distance (25 mm) plus a
    Gaussian edge effect; homotopic edges are strong.

    Returns
    -------
    present : ndarray of bool (n, n)
        Symmetric template edge set.
    mu : ndarray (n, n)
        Mean log streamline weight per edge.
    """
    cent = parcel_centroids(atlas)
    hemi = hemispheres(atlas)
    dist = np.linalg.norm(cent[:, None] - cent[None, :], axis=-1)
    homo = _homotopic(atlas, hemi, cent)
    cross = hemi[:, None] != hemi[None, :]
    logit_rest = -dist / 20.0 - 2.5 * cross + 6.0 * homo
    iu = np.triu_indices(atlas.n_nodes, 1)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + logit_rest[iu])))) < density:
            lo = mid
        else:
            hi = mid
    prob = 1 / (1 + np.exp(-(lo + logit_rest)))
    upper = np.triu(rng.random(prob.shape) < prob, 1)
    present = upper | upper.T
    noise = np.triu(rng.normal(0.0, 0.8, prob.shape), 1)
    mu = np.log(500.0) - dist / 25.0 + 1.5 * homo + noise + noise.T
    return present, mu


def _choose_sc_parcels(
    present: np.ndarray, rng: np.random.Generator, k: int = SC_PLANTED_PARCELS
) -> tuple[list[int], list[tuple[int, int]]]:
    """``k`` parcels of above-median template degree and every template edge touching them."""
    degree = present.sum(axis=1)
    candidates = np.flatnonzero(degree > np.median(degree))
    parcels = sorted(int(i) for i in rng.choice(candidates, k, replace=False))
    touched = np.zeros(len(present), dtype=bool)
    touched[parcels] = True
    iu = np.triu_indices(len(present), 1)
    edges = [
        (int(i), int(j))
        for i, j in zip(*iu, strict=True)
        if present[i, j] and (touched[i] or touched[j])
    ]
    return parcels, edges


def simulate_sc_matrix(
    rng: np.random.Generator,
    present: np.ndarray,
    mu: np.ndarray,
    planted: list[tuple[int, int]],
    patient: bool,
    site_factor: np.ndarray,
) -> np.ndarray:
    """One subject's SIFT2-weighted streamline matrix.

    Template edges are kept with probability 0.92 (planted ones always), weights are
    ``exp(mu + N(0, 0.4))``; 1 % of other pairs get weak spurious streamlines. Patients' planted
    edges are scaled by ``SC_SCALE``; every edge is then multiplied by the site's factor
    (:func:`site_edge_factors`).
    """
    n = len(mu)
    keep = present & (rng.random((n, n)) < 0.92)
    spurious = ~present & (rng.random((n, n)) < 0.01)
    w = np.exp(mu + rng.normal(0.0, 0.4, (n, n)))
    w = np.where(keep, w, 0.0) + np.where(spurious, np.exp(rng.normal(0.0, 1.0, (n, n))), 0.0)
    for i, j in planted:
        w[i, j] = np.exp(mu[i, j] + rng.normal(0.0, 0.4)) * (SC_SCALE if patient else 1.0)
    w = np.triu(w, 1) * site_factor
    return np.round(w + w.T, 4)


def simulate_sc(root: Path, atlas: Atlas, participants: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Write QSIRecon-like connectivity TSVs; return the planted parcels and edges (names) and
    the density."""
    write_json(
        root / "dataset_description.json",
        {
            "Name": "brainfuse synthetic demo - QSIRecon-like connectivity",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "QSIRecon",
                    "Version": "synthetic",
                    "Description": "SYNTHETIC: written by brainfuse.demo in QSIRecon's output "
                    "format; not produced by QSIRecon.",
                },
                {"Name": "brainfuse.demo"},
            ],
            "SourceDatasets": [{"URL": "../../"}],
        },
    )
    rng = seeded_rng(seed, S_SC_GROUP)
    present, mu = sc_template(atlas, rng)
    parcels, planted = _choose_sc_parcels(present, rng)
    factors = site_edge_factors(len(mu), seed)
    densities = []
    for s, row in enumerate(participants.itertuples()):
        sub = row.participant_id
        w = simulate_sc_matrix(
            seeded_rng(seed, S_SC_SUB, s),
            present,
            mu,
            planted,
            row.group == "patient",
            factors[row.site],
        )
        densities.append(np.mean(w[np.triu_indices(len(w), 1)] > 0))
        write_tsv(
            root / sub / "dwi" / f"{sub}_space-T1w_seg-{atlas.name}_desc-sift2_relmat.tsv",
            pd.DataFrame(w, columns=list(atlas.labels)),
        )
    return {
        "parcels": [atlas.labels[i] for i in parcels],
        "edges": [[atlas.labels[i], atlas.labels[j]] for i, j in planted],
        "density": round(float(np.mean(densities)), 4),
    }
