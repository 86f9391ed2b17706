"""The fMRI sample step: one BOLD run (or XCP-D table) into time series, FC and QC."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainfuse.core import atomic
from brainfuse.core.atlas import atlas_from_config
from brainfuse.core.errors import InputError
from brainfuse.core.qc import exclude, qc_record

log = logging.getLogger("brainfuse")


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
    out_figure: str | None = None,
) -> None:
    """Parcellate and denoise one BOLD run; write XCP-D style time series, FC, coverage and QC.

    ``out_relmat_raw`` holds the FC of the parcel signals before denoising (dummy volumes and
    censored volumes removed), so that QC-FC can compare before and after.

    A missing confounds TSV or brain mask, or a sidecar TR that disagrees with the NIfTI header
    (under ``params["tr_source"] == "exclude"``), excludes the run with the file and values in
    the reason; every output is still written (the QC figure ``out_figure`` only where given:
    config ``qc.run_figures``). The QC record says where the TR came from
    (``tr_source``) and lists a missing sidecar or a tolerated disagreement under ``warnings``.
    """
    from brainfuse.core.connectivity import pearson
    from brainfuse.modalities.fmri.denoise import denoise, read_confounds, repetition_time
    from brainfuse.modalities.fmri.parcellate import parcellate
    from brainfuse.modalities.fmri.qc_figure import run_figure

    atlas = atlas_from_config(atlas_cfg)
    min_coverage = atlas_cfg["min_coverage"]
    qc = qc_record(entities, "fmri", bold)
    names = list(atlas.labels)
    timeseries = raw = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    coverage = np.full(atlas.n_nodes, np.nan)
    fd = np.zeros(0)
    try:
        # checked before parcellating, the costly step, so a missing companion fails fast
        for path, what in ((confounds, "confounds file"), (mask, "brain mask")):
            if not Path(path).exists():
                raise InputError(path, f"{what} is missing (expected beside the preprocessed BOLD)")
        parcels = parcellate(bold, atlas, mask_path=mask, min_coverage=min_coverage)
        coverage = parcels.coverage
        run_tr = repetition_time(
            sidecar,
            parcels.tr,
            bold=bold,
            tr_source=params["tr_source"],
            tolerance=params["tr_tolerance"],
        )
        tr = run_tr.seconds
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
            tr_source=run_tr.source,
            warnings=[*parcels.warnings, *([run_tr.warning] if run_tr.warning else [])],
            nan_parcels=nan_nodes,
            n_nan_parcels=len(nan_nodes),
        )
    except InputError as err:
        exclude(qc, err)
    fc = pearson(timeseries) if len(timeseries) > 2 else np.full((len(names),) * 2, np.nan)
    fc_raw = pearson(raw) if len(raw) > 2 else np.full((len(names),) * 2, np.nan)
    log.info("%s: %s %s", qc["sample_id"], qc["status"], qc.get("reason", ""))
    atomic.write_tsv(out_timeseries, pd.DataFrame(timeseries, columns=names))
    atomic.write_json(out_sidecar, {**qc, "atlas": atlas.name, "strategy": params["strategy"]})
    atomic.write_tsv(out_relmat, pd.DataFrame(fc, columns=names))
    atomic.write_tsv(out_relmat_raw, pd.DataFrame(fc_raw, columns=names))
    atomic.write_tsv(out_coverage, pd.DataFrame({"node": names, "coverage": coverage}))
    if out_figure:
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
    out_figure: str | None = None,
    tr_missing: str = "",
    mean_fd: float | None = None,
) -> None:
    """A pre-parcellated run (XCP-D TSV or plain ROI table) into :func:`fmri_run`'s outputs.

    The series is taken as already denoised, so the raw-FC output is all NaN (QC-FC skips it);
    the minimum-clean-time rule still applies. A header that does not match the atlas, or a
    headerless table of the wrong width, excludes the run with the reason. The QC record says how
    the columns were ordered (``column_order``: ``header`` or ``assumed``) and counts the all-zero
    or constant parcels (``n_constant_parcels``, the first few named in ``constant_parcels``),
    which are NaN in the series and so missing in the node mask.

    The TR comes from the table's JSON sidecar or ``default_tr`` (``input.timeseries_tr``); a
    disagreement beyond ``params["tr_tolerance"]`` follows ``params["tr_source"]``, and a run
    with neither is excluded with ``tr_missing`` (which key had no TR) in the reason. Mean FD
    comes from XCP-D's motion table beside the table, else ``mean_fd`` (a participants column);
    ``mean_fd_source`` says which.
    """
    from brainfuse.core.connectivity import pearson
    from brainfuse.modalities.fmri.qc_figure import run_figure
    from brainfuse.modalities.fmri.tables import (
        CONSTANT_PARCELS_NAMED,
        motion_of_table,
        read_timeseries_table,
        repetition_time_of_table,
    )

    atlas = atlas_from_config(atlas_cfg)
    names = list(atlas.labels)
    qc = qc_record(entities, "fmri", table)
    timeseries = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    coverage = np.full(atlas.n_nodes, np.nan)
    fd = np.zeros(0)
    try:
        roi_table = read_timeseries_table(table, names, list(atlas.label_values))
        timeseries = roi_table.timeseries
        run_tr = repetition_time_of_table(
            table,
            default_tr,
            tr_source=params["tr_source"],
            tolerance=params["tr_tolerance"],
            missing=tr_missing,
        )
        tr = run_tr.seconds
        coverage = np.isfinite(timeseries).all(axis=0).astype(float)
        seconds = len(timeseries) * tr
        if seconds < params["min_clean_seconds"]:
            raise InputError(
                table, f"only {seconds:.0f} s of data (minimum {params['min_clean_seconds']} s)"
            )
        fd = motion_of_table(table)
        if fd is not None:
            run_fd, fd_source = float(fd.mean()), "motion table"
        elif mean_fd is not None:
            run_fd, fd_source = float(mean_fd), "input.mean_fd_column"
        else:
            run_fd, fd_source = float("nan"), "none"
        nan_nodes = [n for n, c in zip(names, coverage, strict=True) if c == 0]
        qc.update(
            status="included",
            reason="",
            source="pre-parcellated",
            tr=tr,
            tr_source=run_tr.source,
            warnings=[run_tr.warning] if run_tr.warning else [],
            n_volumes=len(timeseries),
            n_kept=len(timeseries),
            clean_seconds=seconds,
            mean_fd=run_fd,
            mean_fd_source=fd_source,
            censored_fraction=0.0,
            tsnr_mean=float("nan"),
            nan_parcels=nan_nodes,
            n_nan_parcels=len(nan_nodes),
            column_order=roi_table.column_order,
            n_constant_parcels=len(roi_table.constant_parcels),
            constant_parcels=roi_table.constant_parcels[:CONSTANT_PARCELS_NAMED],
        )
    except InputError as err:
        exclude(qc, err)
        timeseries = np.zeros((0, atlas.n_nodes), dtype=np.float32)
    fc = pearson(timeseries) if len(timeseries) > 2 else np.full((len(names),) * 2, np.nan)
    atomic.write_tsv(out_timeseries, pd.DataFrame(timeseries, columns=names))
    atomic.write_json(out_sidecar, {**qc, "atlas": atlas.name})
    atomic.write_tsv(out_relmat, pd.DataFrame(fc, columns=names))
    atomic.write_tsv(out_relmat_raw, pd.DataFrame(np.full_like(fc, np.nan), columns=names))
    atomic.write_tsv(out_coverage, pd.DataFrame({"node": names, "coverage": coverage}))
    if out_figure:
        fd_trace = fd if fd is not None else np.zeros(0)
        run_figure(timeseries, fc, fd_trace, list(atlas.networks), qc, out_figure)
