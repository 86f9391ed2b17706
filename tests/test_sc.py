"""Structural connectivity: formats, reordering by names, refusal of bad matrices."""

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from brainfuse.errors import InputError
from brainfuse.sc import check_sc, normalise_sc, read_sc

NAMES = [f"p{i}" for i in range(6)]


@pytest.fixture
def matrix():
    rng = np.random.default_rng(0)
    m = rng.lognormal(size=(6, 6))
    m = m + m.T
    np.fill_diagonal(m, 0)
    return m


def test_tsv_with_names_is_reordered(tmp_path, matrix):
    order = [3, 1, 0, 5, 2, 4]
    path = tmp_path / "sub-01_relmat.tsv"
    pd.DataFrame(matrix[np.ix_(order, order)], columns=[NAMES[i] for i in order]).to_csv(
        path, sep="\t", index=False
    )
    np.testing.assert_allclose(read_sc(path, NAMES), matrix)


def test_mat_and_npy(tmp_path, matrix):
    savemat(tmp_path / "c.mat", {"connectivity": matrix, "other": np.ones(3)})
    np.testing.assert_allclose(read_sc(tmp_path / "c.mat", NAMES, "connectivity"), matrix)
    np.save(tmp_path / "c.npy", matrix)
    np.testing.assert_allclose(read_sc(tmp_path / "c.npy", NAMES), matrix)


def test_different_parcel_set_is_refused(tmp_path, matrix):
    path = tmp_path / "bad.tsv"
    pd.DataFrame(matrix, columns=[*NAMES[:5], "other"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="parcel set differs"):
        read_sc(path, NAMES)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m + np.triu(np.ones_like(m)), "not symmetric"),
        (lambda m: np.where(np.eye(6, dtype=bool), np.nan, m), "non-finite"),
        (lambda m: -m, "negative"),
    ],
)
def test_bad_matrices_are_refused(matrix, edit, reason):
    with pytest.raises(InputError, match=reason):
        check_sc(edit(matrix.copy()), "sub-01_relmat.tsv")


def test_wrong_size_is_refused(tmp_path, matrix):
    np.save(tmp_path / "c.npy", matrix[:5, :5])
    with pytest.raises(InputError, match=r"expected \(6, 6\)"):
        read_sc(tmp_path / "c.npy", NAMES)


def test_normalise(matrix):
    out = normalise_sc(matrix, "log1p_max", density=0.4)
    assert np.allclose(out, out.T) and np.all(np.diag(out) == 0)
    assert out.max() == pytest.approx(1.0)
    assert (out[np.triu_indices(6, 1)] > 0).mean() == pytest.approx(0.4, abs=0.07)
