"""Parquet caches: round trip, fixed-shape tensor columns readable by plain pyarrow/pandas."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainfuse.core.cache import pad_time, read_cache, read_metadata, write_cache
from brainfuse.inspect import describe


def test_round_trip(tmp_path):
    table = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "subject": ["01", "02", "03"], "label": ["x", "y", "x"]}
    )
    fc = np.random.default_rng(0).normal(size=(3, 5, 5)).astype(np.float32)
    path = tmp_path / "fmri.parquet"
    write_cache(path, table, {"fc": fc}, {"atlas": "Schaefer100", "roi_names": list("abcde")})
    cache = read_cache(path)
    np.testing.assert_array_equal(cache.arrays["fc"], fc)
    assert cache.table["subject"].tolist() == ["01", "02", "03"]
    assert cache.metadata["atlas"] == "Schaefer100"
    assert cache.metadata["array_shapes"] == {"fc": [5, 5]}
    assert read_metadata(path)["roi_names"] == list("abcde")
    # plain pyarrow sees a fixed-shape tensor extension column; pandas can read the file
    schema = pq.read_schema(path)
    assert isinstance(schema.field("fc").type, pa.FixedShapeTensorType)
    assert len(pd.read_parquet(path)) == 3
    assert "fc: shape (3, 5, 5)" in describe(path)


def test_empty_cache_keeps_shapes(tmp_path):
    path = tmp_path / "eeg.parquet"
    write_cache(path, pd.DataFrame({"subject": []}), {"aec": np.zeros((0, 2, 4, 4))}, {})
    assert read_cache(path).arrays["aec"].shape == (0, 2, 4, 4)


def test_pad_time():
    stacked, lengths = pad_time([np.ones((2, 3)), np.ones((2, 5))])
    assert stacked.shape == (2, 2, 5) and lengths.tolist() == [3, 5]
    assert np.isnan(stacked[0, :, 3:]).all() and not np.isnan(stacked[1]).any()


def test_no_partial_file_after_failed_write(tmp_path):
    path = tmp_path / "x.parquet"
    try:
        write_cache(path, pd.DataFrame({"s": [1]}), {"a": np.zeros((2, 3))}, {})
    except ValueError:
        pass
    assert not path.exists() and not list(tmp_path.iterdir())


def test_text_column_with_missing_values_is_written_as_null(tmp_path):
    """BOLD runs beside pre-parcellated tables: a text QC field (column_order) that only the
    tables have, and a numeric one with a gap."""
    table = pd.DataFrame(
        {
            "sample_id": ["bold", "table"],
            "column_order": pd.Series([np.nan, "header"], dtype=object),
            "mean_fd": [0.2, np.nan],
        }
    )
    path = tmp_path / "fmri.parquet"
    write_cache(path, table, {"fc": np.zeros((2, 3, 3), np.float32)}, {})
    read = read_cache(path).table
    assert read["column_order"].isna().tolist() == [True, False]
    assert read["column_order"].iloc[1] == "header"
    assert np.isnan(read["mean_fd"].iloc[1]) and read["mean_fd"].iloc[0] == 0.2
