"""The SC sample step: read, check and normalise one connectivity matrix."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.errors import InputError
from brainfuse.core.qc import exclude, qc_record

log = logging.getLogger("brainfuse")


def sc_run(
    sc_path: str,
    entities: dict,
    atlas_cfg: dict,
    params: dict,
    out_relmat: str,
    out_sidecar: str,
    modality: str = "sc",
) -> None:
    """Read, check and normalise one SC matrix; excluded matrices get a reason, not a crash.

    ``modality`` names the QC record's modality (a modality built on SC records its own).
    """
    from brainfuse.modalities.sc.matrix import check_sc, normalise_sc, read_sc

    atlas = atlas_from_config(atlas_cfg)
    qc = qc_record(entities, modality, sc_path)
    matrix = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    try:
        raw = read_sc(
            sc_path, list(atlas.labels), params.get("mat_key"), params["assume_atlas_order"]
        )
        qc.update(check_sc(raw, sc_path), status="included", reason="")
        matrix = normalise_sc(raw, params["normalise"], params["density"])
    except InputError as err:
        exclude(qc, err)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    atomic.write_tsv(out_relmat, pd.DataFrame(matrix, columns=list(atlas.labels)))
    atomic.write_json(out_sidecar, qc)
