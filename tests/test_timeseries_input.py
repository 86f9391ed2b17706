"""Pre-parcellated tables (XCP-D TSV, plain .tsv/.csv, AFNI .1D): column order, mismatches,
constant parcels, TR, motion."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainfuse.core import atomic
from brainfuse.core.errors import InputError
from brainfuse.modalities.fmri.run import timeseries_run
from brainfuse.modalities.fmri.tables import (
    motion_of_table,
    read_timeseries_table,
    repetition_time_of_table,
)

NAMES = [f"node{i}" for i in range(5)]


def test_xcpd_table_reordered_by_name(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 5))
    path = tmp_path / "sub-01_task-rest_run-1_space-X_seg-Y_stat-mean_timeseries.tsv"
    order = ["node3", "node0", "node1", "node4", "node2"]
    pd.DataFrame(data, columns=order).to_csv(path, sep="\t", index=False)
    table = read_timeseries_table(path, NAMES)
    assert table.column_order == "header"
    for j, name in enumerate(order):
        np.testing.assert_allclose(table.timeseries[:, NAMES.index(name)], data[:, j], rtol=1e-6)


def test_missing_parcel_named(tmp_path):
    path = tmp_path / "t.tsv"
    pd.DataFrame(np.ones((3, 4)), columns=NAMES[:4]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"atlas parcels without a column: \['node4'\]"):
        read_timeseries_table(path, NAMES)


def test_demo_table_reads_as_before(tmp_path, atlas):
    """The demo's XCP-D table (atomic.write_tsv, n/a for uncovered parcels) is read unchanged."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(30, atlas.n_nodes))
    data[:, 7] = np.nan
    path = tmp_path / "sub-01_task-rest_seg-X_stat-mean_timeseries.tsv"
    atomic.write_tsv(path, pd.DataFrame(data, columns=list(atlas.labels)))
    table = read_timeseries_table(path, list(atlas.labels), list(atlas.label_values))
    expected = pd.read_csv(path, sep="\t", na_values=["n/a"]).to_numpy().astype(np.float32)
    np.testing.assert_array_equal(table.timeseries, expected)
    assert table.constant_parcels == []


def test_afni_numeric_header_shuffled_is_reordered(tmp_path, atlas):
    """AFNI .1D with a '#' header of label values (as ABIDE's CC200 tables) in shuffled order."""
    rng = np.random.default_rng(2)
    data = rng.normal(size=(12, atlas.n_nodes))
    perm = rng.permutation(atlas.n_nodes)
    header = "\t".join(f"#{atlas.label_values[k]}" for k in perm)
    path = tmp_path / "sub-01_rois.1D"
    np.savetxt(path, data[:, perm], delimiter="\t", header=header, comments="")
    table = read_timeseries_table(path, list(atlas.labels), list(atlas.label_values))
    assert table.column_order == "header"
    np.testing.assert_allclose(table.timeseries, data, rtol=1e-6)


def test_afni_name_header_is_reordered(tmp_path):
    path = tmp_path / "t.1D"
    path.write_text("# node2 node0 node1 node4 node3\n1 2 3 4 5\n6 7 8 9 10\n")
    table = read_timeseries_table(path, NAMES, [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(table.timeseries, [[2, 3, 1, 5, 4], [7, 8, 6, 10, 9]])


def test_headerless_afni_taken_in_atlas_order(tmp_path):
    data = np.arange(50, dtype=float).reshape(10, 5)
    np.savetxt(tmp_path / "a.1D", data, delimiter=" ")
    table = read_timeseries_table(tmp_path / "a.1D", NAMES)
    assert table.column_order == "assumed"
    np.testing.assert_array_equal(table.timeseries, data)


def test_headerless_wrong_width_refused(tmp_path):
    np.savetxt(tmp_path / "a.1D", np.ones((10, 4)))
    np.savetxt(tmp_path / "b.csv", np.ones((5, 10)), delimiter=",")
    with pytest.raises(InputError, match="has 4 columns but the atlas has 5 parcels"):
        read_timeseries_table(tmp_path / "a.1D", NAMES)
    # N x T is no longer guessed: only atlas-width rows are accepted without a header
    with pytest.raises(InputError, match="has 10 columns but the atlas has 5 parcels"):
        read_timeseries_table(tmp_path / "b.csv", NAMES)


def test_a_cell_that_is_no_number_or_an_empty_table_is_an_input_error(tmp_path):
    """Not a crash of the whole chunk job: the run is excluded with the reason."""
    (tmp_path / "a.tsv").write_text("node0\tnode1\tnode2\tnode3\tnode4\n1\t2\tabc\t4\t5\n")
    with pytest.raises(InputError, match="could not convert string to float: 'abc'"):
        read_timeseries_table(tmp_path / "a.tsv", NAMES)
    (tmp_path / "b.csv").write_text("")
    with pytest.raises(InputError, match="is empty"):
        read_timeseries_table(tmp_path / "b.csv", NAMES)


def test_missing_values_in_the_first_row_are_no_header(tmp_path):
    data = np.random.default_rng(4).normal(size=(6, 5))
    lines = [",".join(["n/a", "", *map(str, data[0, 2:])])]
    lines += [",".join(map(str, row)) for row in data[1:]]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    table = read_timeseries_table(tmp_path / "a.csv", NAMES)
    assert table.column_order == "assumed"
    assert np.isnan(table.timeseries[0, :2]).all()
    np.testing.assert_allclose(table.timeseries[1:], data[1:], rtol=1e-6)


def test_zero_and_constant_columns_become_nan(tmp_path):
    data = np.random.default_rng(3).normal(size=(8, 5))
    data[:, 1] = 0.0
    data[:, 3] = 2.5
    data[0, 4] = np.nan
    np.savetxt(tmp_path / "a.1D", data)
    table = read_timeseries_table(tmp_path / "a.1D", NAMES)
    assert table.constant_parcels == ["node1", "node3"]
    assert np.isnan(table.timeseries[:, [1, 3]]).all()
    np.testing.assert_allclose(table.timeseries[:, [0, 2]], data[:, [0, 2]], rtol=1e-6)
    assert np.isnan(table.timeseries[0, 4]) and np.isfinite(table.timeseries[1:, 4]).all()


def _run_table(tmp_path, atlas, atlas_data_dir, path) -> dict:
    outputs = {
        f"out_{name}": str(tmp_path / f"out_{name}.{ext}")
        for name, ext in (
            ("timeseries", "tsv"),
            ("sidecar", "json"),
            ("relmat", "tsv"),
            ("relmat_raw", "tsv"),
            ("coverage", "tsv"),
            ("figure", "png"),
        )
    }
    timeseries_run(
        table=str(path),
        entities={"subject": "01", "task": "rest"},
        atlas_cfg={"name": atlas.name, "data_dir": atlas_data_dir, "min_coverage": 0.5},
        params={"min_clean_seconds": 10, "tr_source": "exclude", "tr_tolerance": 0.01},
        default_tr=2.0,
        **outputs,
    )
    qc = json.loads(Path(outputs["out_sidecar"]).read_text())
    coverage = pd.read_csv(outputs["out_coverage"], sep="\t")["coverage"].to_numpy()
    return {"qc": qc, "coverage": coverage}


def test_run_counts_constant_parcels_and_excludes_wrong_width(tmp_path, atlas, atlas_data_dir):
    data = np.random.default_rng(4).normal(size=(20, atlas.n_nodes))
    data[:, [2, 5]] = 0.0
    good = tmp_path / "sub-01_rois.1D"
    np.savetxt(good, data)
    result = _run_table(tmp_path, atlas, atlas_data_dir, good)
    qc = result["qc"]
    assert qc["status"] == "included"
    assert qc["column_order"] == "assumed"
    assert qc["n_constant_parcels"] == 2
    assert qc["constant_parcels"] == [atlas.labels[2], atlas.labels[5]]
    assert qc["n_nan_parcels"] == 2
    assert np.flatnonzero(result["coverage"] == 0).tolist() == [2, 5]

    bad = tmp_path / "sub-02_rois.1D"
    np.savetxt(bad, data[:, :-3])
    qc = _run_table(tmp_path, atlas, atlas_data_dir, bad)["qc"]
    assert qc["status"] == "excluded"
    assert f"{atlas.n_nodes - 3} columns" in qc["reason"]
    assert f"{atlas.n_nodes} parcels" in qc["reason"]


def test_foreign_columns_refused(tmp_path):
    path = tmp_path / "t.tsv"
    pd.DataFrame(np.zeros((3, 2)), columns=["node0", "other"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="not parcels of the atlas"):
        read_timeseries_table(path, NAMES)


def test_tr_and_motion(tmp_path):
    path = tmp_path / "sub-01_task-rest_space-X_seg-Y_stat-mean_timeseries.tsv"
    path.write_text("")
    path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": 0.8}))
    choice = {"tr_source": "exclude", "tolerance": 0.01}
    assert repetition_time_of_table(path, None, **choice).seconds == 0.8
    with pytest.raises(InputError, match="no TR"):
        repetition_time_of_table(tmp_path / "other.tsv", None, **choice)
    pd.DataFrame({"framewise_displacement": [np.nan, 0.1, 0.3]}).to_csv(
        tmp_path / "sub-01_task-rest_desc-motion_timeseries.tsv",
        sep="\t",
        index=False,
        na_rep="n/a",
    )
    np.testing.assert_allclose(motion_of_table(path), [0, 0.1, 0.3])


def test_modality_runs_tables_into_a_cache(tmp_path, atlas, atlas_data_dir):
    """The fMRI modality object: pre-parcellated runs through run_sample into build_cache."""
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.fmri.modality import FMRI

    fmri = FMRI()
    atlas_cfg = {"name": atlas.name, "data_dir": atlas_data_dir, "min_coverage": 0.5}
    section = {
        "strategy": "36P",
        "min_clean_seconds": 10,
        "tr_source": "exclude",
        "tr_tolerance": 0.01,
        "sequence_length": 16,
        "dfc_window": 8,
        "dfc_step": 4,
    }
    rng = np.random.default_rng(0)
    sidecars, data, raw = [], [], []
    for sub in ("01", "02"):
        table = tmp_path / f"sub-{sub}_task-rest_run-1_stat-mean_timeseries.tsv"
        frame = pd.DataFrame(rng.normal(size=(40, atlas.n_nodes)), columns=list(atlas.labels))
        frame.to_csv(table, sep="\t", index=False)
        outputs = {
            name: str(tmp_path / f"sub-{sub}_{name}_{entities['suffix']}")
            for name, (_, entities) in fmri.sample_outputs(atlas.name).items()
        }
        params = {
            "entities": {"subject": sub, "task": "rest", "run": "1"},
            "atlas": atlas_cfg,
            "section": fmri.run_params({"fmri": section}),
            **fmri.sample_params(
                pd.Series({"path": str(table)}), {"input": {"timeseries_tr": 2.0}}
            ),
        }
        fmri.run_sample({"table": str(table)}, params, outputs)
        sidecars.append(outputs["sidecar"])
        data.append(outputs["timeseries"])
        raw.append(outputs["relmat_raw"])
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\tgroup\nsub-01\tpatient\nsub-02\tcontrol\n")
    out = {"cache": str(tmp_path / "fmri.parquet"), "qc": str(tmp_path / "fmri_qc.tsv")}
    fmri.build_cache(
        {"sidecars": sidecars, "data": data, "raw_fc": raw, "participants": str(participants)},
        {"label": {"column": "group"}, "atlas": atlas_cfg, "section": section},
        out,
    )
    cache = read_cache(out["cache"])
    assert list(cache.table["subject"]) == ["01", "02"]
    assert set(fmri.qc_fields) <= set(cache.table.columns)
    assert set(fmri.cache_columns) <= set(cache.arrays)
    assert cache.arrays["sequence"].shape == (2, atlas.n_nodes, 16)
    assert "QC-FC" in fmri.report_section(out["cache"])
