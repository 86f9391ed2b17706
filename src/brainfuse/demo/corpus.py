"""The demo's unlabelled corpus: other subjects of the demo's population, for pre-training.

Self-supervised methods exist to learn from many unlabelled scans and transfer to a small
labelled study. The corpus is ``n_subjects`` further subjects drawn from the demo study's own
population model (:func:`brainfuse.demo.bold.population_model` with the study's seed: the same
network covariance, the planted patient edges in about half of them, the three sites' FC
components, the age and motion blocks), each with its own draws. Their fMRI is written the way
public corpora are often shared, as pre-parcellated ROI tables in XCP-D's layout (the parcel
signals plus measurement noise, already band-limited), with a participants table that has no
diagnosis column. The tables are read by the fMRI modality's own table step and cached by its
own cache step, unlabelled (``label.column: null``), into ``<outdir>/fmri.parquet``: the
brainfuse cache that ``methods.<m>.pretrain_on: demo_corpus`` pre-trains on.

Subjects are named ``c01``, ``c02``, ...: none is a study subject. Their groups and every other
draw are in ``<outdir>/corpus_truth.json``, which the pipeline never reads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfuse.core.atlas import Atlas
from brainfuse.core.atomic import write_json, write_tsv
from brainfuse.demo.bold import parcel_signals, population_model
from brainfuse.demo.common import SITES, TASK, seeded_rng, single_threaded_blas
from brainfuse.demo.participants import (
    choose_confound_parcels,
    choose_fmri_parcels,
    make_participants,
)

__all__ = ["CORPUS_SEED_OFFSET", "make_demo_corpus"]

log = logging.getLogger("brainfuse")

#: The corpus's participants and signals are drawn with ``seed + CORPUS_SEED_OFFSET``; the
#: population model keeps the study's ``seed``.
CORPUS_SEED_OFFSET = 1000
#: Parcel-level measurement noise (SD relative to the unit-variance neural signal): the
#: average of a parcel's voxel noise after denoising.
PARCEL_NOISE_SD = 0.25
_S_CORPUS_RUN = 41  # stream key of the corpus runs (the study's keys are in demo.common)


def make_demo_corpus(
    outdir: str | Path,
    atlas: Atlas,
    fmri_section: dict[str, Any],
    atlas_cfg: dict[str, Any],
    n_subjects: int = 40,
    seed: int = 0,
    n_volumes: int = 180,
    tr: float = 2.0,
) -> Path:
    """Write the corpus's ROI tables and participants, and cache them; return the cache path.

    Parameters
    ----------
    outdir : str or Path
        Where ``fmri.parquet``, ``participants.tsv``, ``corpus_truth.json`` and the tables
        (``sub-cXX/func/``) go.
    atlas : Atlas
        The study's parcellation (the tables' columns).
    fmri_section, atlas_cfg : dict
        The run's ``fmri`` and ``atlas`` config sections: the corpus is read and cached exactly
        as the study's tables would be.
    n_subjects : int
        Corpus subjects (at least 4).
    seed : int
        The study's seed.
    n_volumes, tr : int, float
        Length and repetition time of each run.
    """
    from brainfuse.modalities.fmri.modality import FMRI

    if n_subjects < 4:
        raise ValueError(f"n_subjects={n_subjects}: a corpus needs at least 4 subjects")
    outdir = Path(outdir)
    parcels = choose_fmri_parcels(atlas)
    confound_parcels = choose_confound_parcels(atlas, parcels)
    population = population_model(atlas, parcels, confound_parcels, seed)
    draw_seed = seed + CORPUS_SEED_OFFSET
    participants = make_participants(n_subjects, draw_seed)
    participants["participant_id"] = [f"sub-c{i + 1:02d}" for i in range(n_subjects)]
    modality = FMRI()
    outdir.mkdir(parents=True, exist_ok=True)
    # the per-run outputs are only the cache's inputs: a killed job leaves them in outdir only
    derivatives = Path(tempfile.mkdtemp(prefix="derivatives-", dir=outdir))
    sidecars, series, raw_fc = [], [], []
    truth: dict[str, Any] = {"seed": seed, "draw_seed": draw_seed, "subjects": {}}
    with single_threaded_blas():
        for s, row in enumerate(participants.itertuples()):
            sub = row.participant_id.removeprefix("sub-")
            chol = population.subject_cholesky(row)
            for run in row.runs:
                rng = seeded_rng(draw_seed, _S_CORPUS_RUN, s, run)
                signal = parcel_signals(chol, rng, n_volumes, tr)
                signal += PARCEL_NOISE_SD * rng.standard_normal(signal.shape)
                table = _write_table(outdir, sub, run, signal, atlas, tr)
                # the modality's own per-run outputs, but its QC figure
                outputs = {
                    name: str(derivatives / f"sub-{sub}_run-{run}_{name}_{entities['suffix']}")
                    for name, (_, entities) in modality.sample_outputs(atlas.name).items()
                    if name != "figure"
                }
                modality.run_sample(
                    inputs={"table": str(table)},
                    params={
                        "entities": {"subject": sub, "task": TASK, "run": str(run)},
                        "atlas": atlas_cfg,
                        "section": fmri_section,
                        "default_tr": tr,
                        "tr_missing": "",
                        "mean_fd": None,
                    },
                    outputs={**outputs, "figure": None},
                )
                sidecars.append(outputs["sidecar"])
                series.append(outputs["timeseries"])
                raw_fc.append(outputs["relmat_raw"])
            truth["subjects"][sub] = {"group": row.group, "site": row.site, "runs": list(row.runs)}
    # the participants table a corpus would come with: no diagnosis
    write_tsv(
        outdir / "participants.tsv",
        participants[["participant_id", "age", "sex", "site"]],
    )
    write_json(outdir / "corpus_truth.json", truth)
    cache = outdir / "fmri.parquet"
    modality.build_cache(
        inputs={
            "sidecars": sidecars,
            "data": series,
            "raw_fc": raw_fc,
            "participants": str(outdir / "participants.tsv"),
        },
        params={
            "label": {"column": None, "entity": None, "site_column": "site"},
            "atlas": atlas_cfg,
            "section": fmri_section,
        },
        outputs={"cache": str(cache), "qc": str(outdir / "qc.tsv")},
    )
    shutil.rmtree(derivatives)
    sites = participants["site"].value_counts().reindex(SITES, fill_value=0).to_dict()
    log.info("demo corpus: %d subjects (sites %s) cached in %s", n_subjects, sites, cache)
    return cache


def _write_table(
    outdir: Path, sub: str, run: int, signal: np.ndarray, atlas: Atlas, tr: float
) -> Path:
    """One run's XCP-D style table and its sidecar."""
    func = outdir / f"sub-{sub}" / "func"
    table = func / f"sub-{sub}_task-{TASK}_run-{run}_seg-{atlas.name}_stat-mean_timeseries.tsv"
    write_tsv(table, pd.DataFrame(signal.astype(np.float32), columns=list(atlas.labels)))
    write_json(table.with_suffix(".json"), {"RepetitionTime": float(tr)})
    return table
