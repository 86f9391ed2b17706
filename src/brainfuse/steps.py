"""Entry points of the Snakemake rules: read inputs, call domain modules, write outputs atomically.

Each function is one rule's job. A bad input raises :class:`~brainfuse.core.errors.InputError`
inside the
domain code; here it becomes a recorded exclusion (status and reason in the QC sidecar), so one bad
subject never stops the others.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import Atlas, load_atlas
from brainfuse.core.cache import files_hash, pad_time, write_cache
from brainfuse.core.errors import InputError
from brainfuse.core.samples import attach_labels, read_participants, sample_id

log = logging.getLogger("brainfuse")


@lru_cache(maxsize=4)
def _atlas(name: str, path: str | None, labels: str | None, data_dir: str | None) -> Atlas:
    return load_atlas(name=name, path=path, labels_path=labels, data_dir=data_dir)


def atlas_from_config(cfg: dict) -> Atlas:
    """The atlas named by the config's ``atlas`` section (loaded once per process)."""
    return _atlas(cfg["name"], cfg.get("path"), cfg.get("labels"), cfg.get("data_dir"))


def _qc_record(entities: dict, modality: str, path: str) -> dict:
    return {"sample_id": sample_id(entities), "modality": modality, "path": path, **entities}


# --------------------------------------------------------------------------- fMRI


def fmri_run(
    bold: str,
    confounds: str,
    mask: str,
    sidecar: str,
    entities: dict,
    atlas_cfg: dict,
    params: dict,
    out_timeseries: str,
    out_sidecar: str,
    out_relmat: str,
    out_relmat_raw: str,
    out_coverage: str,
    out_figure: str,
) -> None:
    """Parcellate and denoise one BOLD run; write XCP-D style time series, FC, coverage and QC.

    ``out_relmat_raw`` holds the FC of the parcel signals before denoising (dummy volumes and
    censored volumes removed), so that QC-FC can compare before and after.
    """
    from brainfuse.core.connectivity import pearson
    from brainfuse.modalities.fmri.denoise import denoise, read_confounds, repetition_time
    from brainfuse.modalities.fmri.parcellate import parcellate
    from brainfuse.modalities.fmri.qc_figure import run_figure

    atlas = atlas_from_config(atlas_cfg)
    min_coverage = atlas_cfg.get("min_coverage", 0.5)
    qc = _qc_record(entities, "fmri", bold)
    names = list(atlas.labels)
    timeseries = raw = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    coverage = np.full(atlas.n_nodes, np.nan)
    fd = np.zeros(0)
    try:
        parcels = parcellate(
            bold, atlas, mask_path=mask if Path(mask).exists() else None, min_coverage=min_coverage
        )
        coverage = parcels.coverage
        tr = repetition_time(sidecar, parcels.tr)
        table = read_confounds(confounds, parcels.timeseries.shape[0])
        result = denoise(parcels.timeseries, table, tr, params, confounds_path=confounds)
        timeseries, raw = result.timeseries, parcels.timeseries[result.kept]
        fd = table.get("framewise_displacement", pd.Series(dtype=float)).fillna(0).to_numpy()
        nan_nodes = [n for n, c in zip(names, coverage, strict=True) if not c >= min_coverage]
        qc.update(
            result.qc,
            status="included",
            reason="",
            tr=tr,
            warnings=parcels.warnings,
            nan_parcels=nan_nodes,
            n_nan_parcels=len(nan_nodes),
        )
    except InputError as err:
        _exclude(qc, err)
    fc = pearson(timeseries) if len(timeseries) > 2 else np.full((len(names),) * 2, np.nan)
    fc_raw = pearson(raw) if len(raw) > 2 else np.full((len(names),) * 2, np.nan)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    atomic.write_tsv(out_timeseries, pd.DataFrame(timeseries, columns=names))
    atomic.write_json(out_sidecar, {**qc, "atlas": atlas.name, "strategy": params.get("strategy")})
    atomic.write_tsv(out_relmat, pd.DataFrame(fc, columns=names))
    atomic.write_tsv(out_relmat_raw, pd.DataFrame(fc_raw, columns=names))
    atomic.write_tsv(out_coverage, pd.DataFrame({"node": names, "coverage": coverage}))
    run_figure(timeseries, fc, fd, list(atlas.networks), qc, out_figure)


def timeseries_run(
    table: str,
    entities: dict,
    atlas_cfg: dict,
    params: dict,
    default_tr: float | None,
    out_timeseries: str,
    out_sidecar: str,
    out_relmat: str,
    out_relmat_raw: str,
    out_coverage: str,
    out_figure: str,
) -> None:
    """A pre-parcellated (XCP-D) run into the same outputs as :func:`fmri_run`.

    The series is taken as already denoised, so the raw-FC output is all NaN (QC-FC skips it);
    the minimum-clean-time rule still applies.
    """
    from brainfuse.core.connectivity import pearson
    from brainfuse.modalities.fmri.qc_figure import run_figure
    from brainfuse.modalities.fmri.tables import (
        motion_of_table,
        read_timeseries_table,
        repetition_time_of_table,
    )

    atlas = atlas_from_config(atlas_cfg)
    names = list(atlas.labels)
    qc = _qc_record(entities, "fmri", table)
    timeseries = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    coverage = np.full(atlas.n_nodes, np.nan)
    fd = np.zeros(0)
    try:
        timeseries = read_timeseries_table(table, names)
        tr = repetition_time_of_table(table, default_tr)
        coverage = np.isfinite(timeseries).all(axis=0).astype(float)
        seconds = len(timeseries) * tr
        if seconds < params.get("min_clean_seconds", 0):
            raise InputError(
                table, f"only {seconds:.0f} s of data (minimum {params['min_clean_seconds']} s)"
            )
        fd = motion_of_table(table)
        nan_nodes = [n for n, c in zip(names, coverage, strict=True) if c == 0]
        qc.update(
            status="included",
            reason="",
            source="pre-parcellated",
            tr=tr,
            n_volumes=len(timeseries),
            n_kept=len(timeseries),
            clean_seconds=seconds,
            mean_fd=float(fd.mean()) if fd is not None else float("nan"),
            censored_fraction=0.0,
            tsnr_mean=float("nan"),
            nan_parcels=nan_nodes,
            n_nan_parcels=len(nan_nodes),
        )
    except InputError as err:
        _exclude(qc, err)
        timeseries = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    fc = pearson(timeseries) if len(timeseries) > 2 else np.full((len(names),) * 2, np.nan)
    atomic.write_tsv(out_timeseries, pd.DataFrame(timeseries, columns=names))
    atomic.write_json(out_sidecar, {**qc, "atlas": atlas.name})
    atomic.write_tsv(out_relmat, pd.DataFrame(fc, columns=names))
    atomic.write_tsv(out_relmat_raw, pd.DataFrame(np.full_like(fc, np.nan), columns=names))
    atomic.write_tsv(out_coverage, pd.DataFrame({"node": names, "coverage": coverage}))
    run_figure(
        timeseries, fc, fd if fd is not None else np.zeros(0), list(atlas.networks), qc, out_figure
    )


def build_fmri_cache(
    sidecars: list[str],
    data: list[str],
    raw_fc: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included runs into ``fmri.parquet``.

    Arrays: ``timeseries`` (N x T, NaN-padded after ``n_timepoints``), ``fc`` (Pearson r),
    ``fc_raw`` (before denoising, for QC-FC), ``fc_partial`` and ``fc_lw`` (Ledoit-Wolf),
    ``sequence`` (N x L) and ``spectrum`` (N x L/2+1) for the temporal and frequency domains,
    ``dfc`` (sliding-window FC upper triangles, NaN-padded windows) and ``node_mask``.
    ``raw_fc`` holds each run's raw-FC relmat, in the order of ``data``.
    """
    from brainfuse.core import connectivity as conn

    atlas = atlas_from_config(atlas_cfg)
    qc, keep = _read_qc(sidecars, participants, label_cfg)
    series = [pd.read_csv(data[i], sep="\t").to_numpy(np.float32) for i in keep]
    table = qc.iloc[keep][_id_columns(qc)].reset_index(drop=True)
    for column in ("tr", "mean_fd", "censored_fraction", "tsnr_mean"):
        table[column] = qc.iloc[keep][column].astype(float).to_numpy()
    n, length = atlas.n_nodes, config_section.get("sequence_length", 200)
    window, step = config_section.get("dfc_window", 30), config_section.get("dfc_step", 5)
    arrays: dict[str, np.ndarray] = {"timeseries": np.zeros((0, n, 1))}
    if series:
        arrays["timeseries"], table["n_timepoints"] = pad_time([s.T for s in series])
        sequences = [conn.fixed_length(s, length) for s in series]
        table["sequence_valid"] = [v for _, v in sequences]
        dfc, table["n_windows"] = pad_time(
            [conn.sliding_window_fc(s, window, step).T for s in series]
        )
        arrays["dfc"] = dfc.transpose(0, 2, 1)
        arrays["sequence"] = np.stack([q for q, _ in sequences])
        arrays["spectrum"] = np.stack([conn.amplitude_spectrum(q) for q, _ in sequences])

    def stack(measure, items) -> np.ndarray:
        return np.stack([measure(x) for x in items]) if items else np.zeros((0, n, n), np.float32)

    raw = [pd.read_csv(raw_fc[i], sep="\t").to_numpy(np.float32) for i in keep]
    arrays["fc"] = stack(conn.pearson, series)
    arrays["fc_raw"] = stack(np.asarray, raw)
    arrays["fc_partial"] = stack(conn.partial_correlation, series)
    arrays["fc_lw"] = stack(conn.ledoit_wolf_correlation, series)
    arrays["node_mask"] = (
        np.stack([np.all(np.isfinite(s), axis=0) for s in series]).astype(np.uint8)
        if series
        else np.zeros((0, n), np.uint8)
    )
    meta = _cache_metadata(atlas, "fmri", config_section, [*sidecars, *data, *raw_fc])
    meta.update(
        sequence_length=length,
        sequence_rule="centre crop when longer, zero-pad at the end when shorter (sequence_valid)",
        spectrum="|rFFT| of the z-scored sequence along time",
        dfc_window=window,
        dfc_step=step,
        nan_handling=(
            "Parcels with too little coverage are NaN in timeseries and every FC array and 0 in "
            "sequence/spectrum; node_mask is 1 for valid nodes and models see it. Baselines "
            "impute 0 (Fisher z) for masked FC entries."
        ),
    )
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)


# --------------------------------------------------------------------------- EEG


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

    qc = _qc_record(entities, "eeg", eeg)
    atlas = atlas_from_config(atlas_cfg) if params.get("level") == "source" else None
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
        _exclude(qc, err)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    table = pd.DataFrame([{k: str(v) for k, v in entities.items()}])
    table.insert(0, "sample_id", qc["sample_id"])
    write_cache(out_features, table if arrays else table.iloc[:0], arrays, {"qc": qc})
    atomic.write_json(out_sidecar, qc)


def build_eeg_cache(
    sidecars: list[str],
    data: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included recordings into ``eeg.parquet``: envelopes (bands x nodes x T), AEC, power."""
    from brainfuse.core.cache import read_cache

    qc, keep = _read_qc(sidecars, participants, label_cfg)
    parts = [read_cache(data[i]) for i in keep]
    nodes = {tuple(p.metadata["qc"]["node_names"]) for p in parts}
    if len(nodes) > 1:
        raise ValueError(
            "EEG recordings have different node sets; use eeg.level: source or one montage"
        )
    table = qc.iloc[keep][_id_columns(qc)].reset_index(drop=True)
    if parts:
        envelopes, lengths = pad_time([p.arrays["envelopes"][0] for p in parts])
        arrays = {
            "envelopes": envelopes,
            "aec": np.concatenate([p.arrays["aec"] for p in parts]),
            "band_power": np.concatenate([p.arrays["band_power"] for p in parts]),
        }
        table["n_timepoints"] = lengths
        first = parts[0].metadata["qc"]
        node_names, bands = first["node_names"], first["bands"]
        sfreq, level = first["envelope_sfreq"], first["level"]
    else:
        arrays, node_names, bands, sfreq, level = {}, [], [], None, None
    atlas = atlas_from_config(atlas_cfg)
    meta = _cache_metadata(atlas, "eeg", config_section, [*sidecars, *data])
    meta.update(
        node_names=node_names,
        bands=bands,
        sampling_rate_hz=sfreq,
        level=level,
        nan_handling="envelopes are NaN-padded after n_timepoints",
    )
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)


# --------------------------------------------------------------------------- SC


def sc_run(
    sc_path: str, entities: dict, atlas_cfg: dict, params: dict, out_relmat: str, out_sidecar: str
) -> None:
    """Read, check and normalise one SC matrix; excluded matrices get a reason, not a crash."""
    from brainfuse.modalities.sc.matrix import check_sc, normalise_sc, read_sc

    atlas = atlas_from_config(atlas_cfg)
    qc = _qc_record(entities, "sc", sc_path)
    matrix = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    try:
        raw = read_sc(sc_path, list(atlas.labels), params.get("mat_key"))
        qc.update(check_sc(raw, sc_path), status="included", reason="")
        matrix = normalise_sc(raw, params.get("normalise", "log1p"), params.get("density"))
    except InputError as err:
        _exclude(qc, err)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    atomic.write_tsv(out_relmat, pd.DataFrame(matrix, columns=list(atlas.labels)))
    atomic.write_json(out_sidecar, qc)


def build_sc_cache(
    sidecars: list[str],
    data: list[str],
    participants: str,
    label_cfg: dict,
    atlas_cfg: dict,
    config_section: dict,
    out_cache: str,
    out_qc: str,
) -> None:
    """Join included subjects' SC into ``sc.parquet``."""
    atlas = atlas_from_config(atlas_cfg)
    qc, keep = _read_qc(sidecars, participants, label_cfg)
    table = qc.iloc[keep][_id_columns(qc)].reset_index(drop=True)
    mats = [pd.read_csv(data[i], sep="\t").to_numpy(np.float32) for i in keep]
    n = atlas.n_nodes
    arrays = {"sc": np.stack(mats) if mats else np.zeros((0, n, n), np.float32)}
    meta = _cache_metadata(atlas, "sc", config_section, [*sidecars, *data])
    write_cache(out_cache, table, arrays, meta)
    atomic.write_tsv(out_qc, qc)


# --------------------------------------------------------------------------- shared


def _id_columns(qc: pd.DataFrame) -> list[str]:
    cols = ["sample_id", "subject", "session", "task", "acquisition", "run", "site", "label"]
    return [c for c in cols if c in qc.columns]


def _read_qc(
    sidecars: list[str], participants: str, label_cfg: dict
) -> tuple[pd.DataFrame, np.ndarray]:
    """QC records of every sample with labels attached, and the row indices of included ones."""
    records = [json.loads(Path(p).read_text()) for p in sidecars]
    qc = _label_qc(pd.DataFrame(records), participants, label_cfg)
    return qc, np.flatnonzero(qc["status"] == "included")


def _exclude(qc: dict, err: InputError) -> None:
    log.warning("excluded %s: %s", err.path, err.reason)
    qc.update(status="excluded", reason=f"{Path(err.path).name}: {err.reason}")


def _label_qc(qc: pd.DataFrame, participants: str, label_cfg: dict) -> pd.DataFrame:
    """Attach labels and sites; samples without a label are excluded with that reason."""
    labelled = attach_labels(qc, read_participants(participants), label_cfg)
    missing = labelled["label"].isna() & (labelled["status"] == "included")
    labelled.loc[missing, "status"] = "excluded"
    labelled.loc[missing, "reason"] = "no label in participants.tsv for this subject"
    return labelled


def _cache_metadata(atlas: Atlas, modality: str, config_section: dict, inputs: list[str]) -> dict:
    return {
        "modality": modality,
        "atlas": atlas.name,
        "atlas_space": atlas.space,
        "roi_names": list(atlas.labels),
        "roi_networks": list(atlas.networks),
        "config": config_section,
        "input_hash": files_hash(sorted(inputs), config_section),
    }


def merge_qc(parts: list[str], out_qc: str) -> None:
    """The dataset QC table: every sample of every modality with its status and reason."""
    tables = [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in parts]
    merged = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    front = ["modality", "sample_id", "status", "reason"]
    merged = merged[front + [c for c in merged.columns if c not in front]]
    atomic.write_tsv(out_qc, merged)


def dataset_description(config: dict, out: str) -> None:
    """BIDS-derivative ``dataset_description.json``: brainfuse, its version and the config hash."""
    from brainfuse import __version__
    from brainfuse.core.provenance import config_hash

    atomic.write_json(
        out,
        {
            "Name": "brainfuse outputs",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "brainfuse",
                    "Version": __version__,
                    "CodeURL": "https://github.com/brainfuse/brainfuse",
                }
            ],
            "ConfigHash": config_hash(config),
        },
    )


def setup_logging(path: str) -> None:
    """Send this job's log records (and warnings) to its Snakemake log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=path,
        level=logging.INFO,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
