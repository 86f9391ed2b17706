"""The EEG sample step: one recording into band envelopes, AEC and band power."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.cache import write_cache
from brainfuse.core.errors import InputError
from brainfuse.core.qc import exclude, qc_record

log = logging.getLogger("brainfuse")


def eeg_run(
    eeg: str,
    channels: str | None,
    electrodes: str | None,
    entities: dict,
    atlas_cfg: dict,
    params: dict,
    out_features: str,
    out_sidecar: str,
) -> None:
    """Band power envelopes of one EEG recording into a one-row Parquet file."""
    from brainfuse.modalities.eeg.process import process_eeg

    qc = qc_record(entities, "eeg", eeg)
    atlas = atlas_from_config(atlas_cfg) if params["level"] == "source" else None
    arrays: dict[str, np.ndarray] = {}
    try:
        result = process_eeg(
            eeg,
            atlas,
            params,
            channels_tsv=channels if channels and Path(channels).exists() else None,
            electrodes_tsv=electrodes if electrodes and Path(electrodes).exists() else None,
        )
        arrays = {
            "envelopes": result.envelopes[None].astype(np.float32),
            "aec": result.aec[None].astype(np.float32),
            "band_power": result.band_power[None].astype(np.float32),
        }
        qc.update(
            result.qc,
            status="included",
            reason="",
            level=result.level,
            node_names=list(result.node_names),
            bands=list(result.bands),
            envelope_sfreq=result.envelope_sfreq,
        )
    except InputError as err:
        exclude(qc, err)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    table = pd.DataFrame([{k: str(v) for k, v in entities.items()}])
    table.insert(0, "sample_id", qc["sample_id"])
    write_cache(out_features, table if arrays else table.iloc[:0], arrays, {"qc": qc})
    atomic.write_json(out_sidecar, qc)
