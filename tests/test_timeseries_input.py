"""Pre-parcellated (XCP-D) tables: reordering, missing parcels, TR, refusal of foreign columns."""

import json

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.errors import InputError
from brainfuse.modalities.fmri.tables import (
    motion_of_table,
    read_timeseries_table,
    repetition_time_of_table,
)

NAMES = [f"node{i}" for i in range(5)]


def test_xcpd_table_reordered_with_nan_for_missing(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 4))
    path = tmp_path / "sub-01_task-rest_run-1_space-X_seg-Y_stat-mean_timeseries.tsv"
    pd.DataFrame(data, columns=["node3", "node0", "node1", "node4"]).to_csv(
        path, sep="\t", index=False
    )
    out = read_timeseries_table(path, NAMES)
    assert out.shape == (20, 5)
    np.testing.assert_allclose(out[:, 3], data[:, 0], rtol=1e-6)
    assert np.isnan(out[:, 2]).all()


def test_plain_table_either_orientation(tmp_path):
    data = np.arange(50, dtype=float).reshape(10, 5)
    np.savetxt(tmp_path / "a.tsv", data, delimiter="\t")
    np.savetxt(tmp_path / "b.tsv", data.T, delimiter="\t")
    np.testing.assert_array_equal(read_timeseries_table(tmp_path / "a.tsv", NAMES), data)
    np.testing.assert_array_equal(read_timeseries_table(tmp_path / "b.tsv", NAMES), data)


def test_foreign_columns_refused(tmp_path):
    path = tmp_path / "t.tsv"
    pd.DataFrame(np.zeros((3, 2)), columns=["node0", "other"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="not parcels of the atlas"):
        read_timeseries_table(path, NAMES)


def test_tr_and_motion(tmp_path):
    path = tmp_path / "sub-01_task-rest_space-X_seg-Y_stat-mean_timeseries.tsv"
    path.write_text("")
    path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": 0.8}))
    assert repetition_time_of_table(path, None) == 0.8
    with pytest.raises(InputError, match="no TR"):
        repetition_time_of_table(tmp_path / "other.tsv", None)
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
