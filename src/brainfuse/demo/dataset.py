"""Synthetic, seed-deterministic demo dataset written in the file formats of real inputs.

The demo exercises the same readers as real data: fMRIPrep derivatives (BOLD in MNI space,
brain mask, confounds), a raw BIDS EEG dataset (EDF + sidecars) and QSIRecon-style structural
connectivity matrices. Every subject belongs to a site and a group; known group effects are
planted in each modality and recorded in ``ground_truth.json`` so that the pipeline's findings
can be checked against them.

Layout written under ``outdir``::

    dataset_description.json, participants.tsv/.json, README, ground_truth.json
    sub-XX/eeg/sub-XX_task-rest_{eeg.edf,eeg.json,channels.tsv}
    sub-XX/eeg/sub-XX_{electrodes.tsv,coordsystem.json}
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_space-MNI152NLin6Asym_desc-brain_mask.nii.gz
    derivatives/fmriprep/sub-XX/func/sub-XX_task-rest_run-N_desc-confounds_timeseries.{tsv,json}
    derivatives/qsirecon/sub-XX/dwi/sub-XX_space-T1w_seg-<atlas>_desc-sift2_relmat.tsv

Generative models, in brief (details in :mod:`~brainfuse.demo.bold`, :mod:`~brainfuse.demo.eeg`
and :mod:`~brainfuse.demo.sc`):

* **fMRI** - parcel signals are Gaussian noise band-limited to 0.01-0.1 Hz with a Yeo-7 network
  covariance (patients: correlations among 10 planted parcels raised by ``delta_r``), spread to
  voxels with per-voxel loadings plus AR(1) voxel noise, a global signal, CSF/WM signals, drift,
  a motion artefact that is linear in the 24 motion regressors, spikes at high-FD volumes and a
  non-steady-state first volume. Confound columns are the signals used to build the artefacts or
  are computed from the written data (global signal, DVARS, aCompCor).
* **EEG** - 100 parcel sources carry band-limited oscillations whose amplitude envelopes are slow
  and network-correlated, projected to 32 10-20 electrodes by an MNE three-shell sphere-model
  forward solution; patients have more alpha in 6 parietal parcels.
* **SC** - distance-dependent, sparse, log-normally weighted streamline matrices with strong
  homotopic edges; in patients every edge of 6 planted parcels is weaker (a disconnection of
  those parcels, spread over ~150 tracts, as white-matter lesions or hub damage would give).
* **Sites and confounds** - three sites of unequal sizes (5:4:3), group balanced within each.
  Each site shifts the data as a scanner would: BOLD gain, noise and global-signal levels and an
  additive FC pattern (a site component with fixed parcel loadings), EEG noise and line noise,
  and a global and per-edge scale of SC weights. Age lowers the correlations among 6 visual
  parcels and residual motion raises those among 6 somatomotor parcels (disjoint from the
  planted ones); age and motion are independent of group and site. Sizes are in
  ``ground_truth.json`` (``fmri.site_effects``, ``fmri.confounds``, ``sc.site_effects``).
"""

from __future__ import annotations

import logging
import time
from itertools import combinations
from pathlib import Path

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import write_json
from brainfuse.demo.bold import SITE_FMRI, simulate_fmri
from brainfuse.demo.common import GROUPS, SITES, SPACE, single_threaded_blas
from brainfuse.demo.eeg import BANDS, SITE_EEG, simulate_eeg
from brainfuse.demo.participants import (
    AGE_CENTRE,
    AGE_DELTA_R,
    EEG_ALPHA_RATIO,
    FMRI_DELTA_R,
    MOTION_DELTA_R,
    SC_SCALE,
    choose_confound_parcels,
    choose_eeg_parcels,
    choose_fmri_parcels,
    make_participants,
    write_raw_dataset_files,
)
from brainfuse.demo.sc import SITE_SC, simulate_sc

logger = logging.getLogger(__name__)


def make_demo_dataset(
    outdir: str | Path,
    atlas: Atlas,
    n_subjects: int = 24,
    seed: int = 0,
    n_volumes: int = 180,
    tr: float = 2.0,
    voxel_size: float = 4.0,
    eeg_seconds: float = 120.0,
    eeg_sfreq: float = 250.0,
    n_eeg_channels: int = 32,
    n_jobs: int = 1,
) -> dict:
    """Write the synthetic demo dataset and return its ground truth.

    Parameters
    ----------
    outdir : str or Path
        Root of the raw BIDS dataset; derivatives go to ``outdir/derivatives``. Existing files
        with the same names are replaced.
    atlas : Atlas
        Parcellation that defines the parcels (fMRI signals, EEG sources, SC nodes).
    n_subjects : int
        Number of subjects (at least 4: both groups in two sites).
    seed : int
        Seed of every random draw; the same seed gives byte-identical files.
    n_volumes : int
        BOLD volumes per run (the first is a non-steady-state volume).
    tr : float
        Repetition time in seconds.
    voxel_size : float
        Isotropic BOLD voxel size in mm; the grid is the atlas's field of view resampled to it.
    eeg_seconds, eeg_sfreq : float
        EEG duration (s) and sampling frequency (Hz).
    n_eeg_channels : int
        EEG electrodes (8..64); 32 gives the classic 10-20 cap.
    n_jobs : int
        Processes that write subjects side by side (the files do not depend on it).

    Returns
    -------
    dict
        The ground truth, also written to ``outdir/ground_truth.json``.
    """
    if n_subjects < 4:
        raise ValueError(f"n_subjects={n_subjects}: need at least 4 (both groups in two sites)")
    if n_volumes < 20:
        raise ValueError(f"n_volumes={n_volumes}: need at least 20")
    if eeg_seconds < 10 or eeg_sfreq < 100:
        raise ValueError("need at least 10 s of EEG sampled at >= 100 Hz")
    t_start = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    # The matrices here are small: BLAS threads only contend (10-50x slower eigh on a busy box).
    with single_threaded_blas():
        participants = make_participants(n_subjects, seed)
        fmri_parcels = choose_fmri_parcels(atlas)
        confound_parcels = choose_confound_parcels(atlas, fmri_parcels)
        eeg_parcels = choose_eeg_parcels(atlas)

        write_raw_dataset_files(outdir, participants, seed, atlas)
        fmri_info = simulate_fmri(
            outdir / "derivatives" / "fmriprep",
            atlas,
            participants,
            fmri_parcels,
            confound_parcels,
            seed,
            n_volumes=n_volumes,
            tr=tr,
            voxel_size=voxel_size,
            n_jobs=n_jobs,
        )
        t_fmri = time.perf_counter()
        eeg_info = simulate_eeg(
            outdir,
            atlas,
            participants,
            eeg_parcels,
            seed,
            seconds=eeg_seconds,
            sfreq=eeg_sfreq,
            n_channels=n_eeg_channels,
            n_jobs=n_jobs,
        )
        t_eeg = time.perf_counter()
        sc_info = simulate_sc(outdir / "derivatives" / "qsirecon", atlas, participants, seed)

    subjects = {}
    for row in participants.itertuples():
        sub = row.participant_id
        subjects[sub] = {
            "group": row.group,
            "site": row.site,
            "age": int(row.age),
            "sex": row.sex,
            "runs": list(row.runs),
            "motion_level": round(float(row.motion_level), 4),
            "mean_fd": fmri_info["mean_fd"][sub],
            "eeg_iaf_hz": round(eeg_info["iaf"][sub], 3),
        }
    truth = {
        "seed": int(seed),
        "label_column": "group",
        "groups": list(GROUPS),
        "sites": list(SITES),
        "site_sizes": {s: int((participants["site"] == s).sum()) for s in SITES},
        "atlas": atlas.name,
        "fmri": {
            "parcels": fmri_parcels,
            "edges": [list(e) for e in combinations(fmri_parcels, 2)],
            "delta_r": FMRI_DELTA_R,
            "delta_r_model": fmri_info["delta_r_model"],
            "space": SPACE,
            "voxel_size_mm": float(voxel_size),
            "grid_shape": fmri_info["grid_shape"],
            "tr": float(tr),
            "n_volumes": int(n_volumes),
            "non_steady_state_volumes": 1,
            "site_effects": SITE_FMRI,
            "site_delta_r_model": fmri_info["site_delta_r_model"],
            "site_loadings": fmri_info["site_loadings"],
            "confounds": {
                "age": {
                    "parcels": confound_parcels["age"],
                    "delta_r_per_year": AGE_DELTA_R,
                    "centre_years": AGE_CENTRE,
                },
                "motion": {
                    "parcels": confound_parcels["motion"],
                    "delta_r_per_log_motion_level": MOTION_DELTA_R,
                },
            },
        },
        "eeg": {
            "band": "alpha",
            "band_hz": list(BANDS["alpha"]),
            "parcels": eeg_parcels,
            "amplitude_ratio": EEG_ALPHA_RATIO,
            "channels": eeg_info["channels"],
            "sfreq": float(eeg_sfreq),
            "seconds": float(eeg_seconds),
            "forward_model": eeg_info["forward_model"],
            "site_effects": SITE_EEG,
        },
        "sc": {
            "parcels": sc_info["parcels"],
            "edges": sc_info["edges"],
            "scale": SC_SCALE,
            "density": sc_info["density"],
            "site_effects": SITE_SC,
        },
        "subjects": subjects,
    }
    write_json(outdir / "ground_truth.json", truth)
    logger.info(
        "demo dataset (%d subjects) in %.1f s (fMRI %.1f s, EEG %.1f s)",
        n_subjects,
        time.perf_counter() - t_start,
        t_fmri - t_start,
        t_eeg - t_fmri,
    )
    return truth
