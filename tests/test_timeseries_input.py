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
