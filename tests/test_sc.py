"""Structural connectivity: formats, reordering by names, refusal of bad matrices and of tables
without a header unless atlas order is assumed."""

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from brainfuse.core.errors import InputError
from brainfuse.modalities.sc.matrix import NO_HEADER, check_sc, normalise_sc, read_sc

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


def test_bad_subject_files_are_excluded_with_reasons_and_the_rest_cached(
    tmp_path, atlas, atlas_data_dir
):
    """The pipeline steps: each bad SC file becomes a QC exclusion naming the file and the
    reason; the good subjects still make the cache."""
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.sc.cache import build_sc_cache
    from brainfuse.modalities.sc.run import sc_run

    rng = np.random.default_rng(1)
    n, labels = atlas.n_nodes, list(atlas.labels)
    good = rng.lognormal(size=(n, n))
    good = np.triu(good, 1) + np.triu(good, 1).T
    asymmetric = good + np.triu(np.ones_like(good), 1)
    with_nan = good.copy()
    with_nan[3, 7] = with_nan[7, 3] = with_nan[0, -1] = with_nan[-1, 0] = np.nan
    matrices = {"01": good, "02": asymmetric, "03": with_nan, "04": good[:-1, :-1], "05": good}
    atlas_cfg = {"name": atlas.name, "path": None, "labels": None, "data_dir": atlas_data_dir,
                 "min_coverage": 0.5}  # fmt: skip
    sidecars, data = [], []
    for sub, m in matrices.items():
        path = tmp_path / f"sub-{sub}_relmat.tsv"
        pd.DataFrame(m, columns=labels[: len(m)]).to_csv(path, sep="\t", index=False)
        out = tmp_path / "out" / f"sub-{sub}_desc-normalized_relmat.tsv"
        params = {"normalise": "log1p", "density": None, "assume_atlas_order": False}
        sc_run(str(path), {"subject": sub}, atlas_cfg, params, str(out),
               str(out.with_suffix(".json")))  # fmt: skip
        sidecars.append(str(out.with_suffix(".json")))
        data.append(str(out))
    participants = tmp_path / "participants.tsv"
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in matrices],
                  "group": ["control", "patient"] * 2 + ["patient"]}).to_csv(
        participants, sep="\t", index=False)  # fmt: skip
    build_sc_cache(sidecars, data, str(participants),
                   {"column": "group", "entity": None, "positive": "patient"}, atlas_cfg,
                   {"normalise": "log1p", "density": None}, str(tmp_path / "sc.parquet"),
                   str(tmp_path / "sc_qc.tsv"))  # fmt: skip
    qc = pd.read_csv(tmp_path / "sc_qc.tsv", sep="\t", dtype={"subject": str}).set_index("subject")
    assert qc.loc[["01", "05"], "status"].eq("included").all()
    reasons = qc["reason"].fillna("")
    assert qc.loc[["02", "03", "04"], "status"].eq("excluded").all()
    assert "not symmetric" in reasons["02"] and "sub-02_relmat.tsv" in reasons["02"]
    assert "non-finite" in reasons["03"] and "sub-03_relmat.tsv" in reasons["03"]
    assert "sub-04_relmat.tsv" in reasons["04"]
    cache = read_cache(tmp_path / "sc.parquet")
    assert list(cache.table["subject"].astype(str)) == ["01", "05"]
    assert cache.arrays["sc"].shape == (2, n, n)
    np.testing.assert_allclose(cache.arrays["sc"][0], np.log1p(good), rtol=1e-5)


def _write_table(path, rows, sep):
    path.write_text("\n".join(sep.join(str(x) for x in row) for row in rows) + "\n")


def test_headerless_table_is_refused_by_default(tmp_path, matrix):
    path = tmp_path / "sub-01_relmat.tsv"
    _write_table(path, matrix.tolist(), "\t")
    with pytest.raises(InputError, match="no header row naming the parcels") as err:
        read_sc(path, NAMES)
    assert "sc.assume_atlas_order: true" in str(err.value)


@pytest.mark.parametrize(
    ("name", "sep", "comment"),
    [
        ("c.tsv", "\t", ""),
        ("c.csv", ",", ""),
        ("c.csv", " ", "# command_history: tck2connectome in.tck parc.mif c.csv\n"),
        ("c.txt", "   ", ""),
    ],
)
def test_headerless_table_is_read_in_atlas_order_when_assumed(tmp_path, matrix, name, sep, comment):
    """Tab, comma and whitespace separators and MRtrix-style comment lines all read the same."""
    path = tmp_path / name
    _write_table(path, matrix.tolist(), sep)
    path.write_text(comment + path.read_text())
    np.testing.assert_array_equal(read_sc(path, NAMES, assume_atlas_order=True), matrix)


@pytest.mark.parametrize(("name", "sep"), [("c.csv", ","), ("c.txt", " ")])
def test_csv_and_whitespace_tables_with_names_are_reordered(tmp_path, matrix, name, sep):
    order = [3, 1, 0, 5, 2, 4]
    path = tmp_path / name
    _write_table(path, [[NAMES[i] for i in order], *matrix[np.ix_(order, order)].tolist()], sep)
    np.testing.assert_array_equal(read_sc(path, NAMES), matrix)


def test_headerless_table_of_another_size_is_refused_naming_both_sizes(tmp_path, matrix):
    path = tmp_path / "c.tsv"
    _write_table(path, matrix[:5, :5].tolist(), "\t")
    with pytest.raises(InputError, match=r"\(5, 5\), expected \(6, 6\)"):
        read_sc(path, NAMES, assume_atlas_order=True)


@pytest.mark.parametrize("assume", [False, True])
def test_headerless_files_in_the_pipeline(tmp_path, atlas, atlas_data_dir, assume):
    """Without the key a headerless file is an exclusion with the reason; with it, it is cached
    in atlas order; a headerless file of the wrong size is excluded either way; the cache holds
    exactly the included subjects."""
    from brainfuse.core.cache import read_cache
    from brainfuse.modalities.sc.cache import build_sc_cache
    from brainfuse.modalities.sc.run import sc_run

    rng = np.random.default_rng(2)
    n, labels = atlas.n_nodes, list(atlas.labels)
    good = rng.lognormal(size=(n, n))
    good = np.triu(good, 1) + np.triu(good, 1).T
    atlas_cfg = {"name": atlas.name, "path": None, "labels": None, "data_dir": atlas_data_dir,
                 "min_coverage": 0.5}  # fmt: skip
    section = {"normalise": "log1p", "density": None, "assume_atlas_order": assume}
    files = {"01": (good, True), "02": (good, False), "03": (good[:-1, :-1], False)}
    sidecars, data = [], []
    for sub, (m, header) in files.items():
        path = tmp_path / f"sub-{sub}_relmat.tsv"
        pd.DataFrame(m, columns=labels[: len(m)]).to_csv(path, sep="\t", index=False, header=header)
        out = tmp_path / "out" / f"sub-{sub}_desc-normalized_relmat.tsv"
        sc_run(str(path), {"subject": sub}, atlas_cfg, section, str(out),
               str(out.with_suffix(".json")))  # fmt: skip
        sidecars.append(str(out.with_suffix(".json")))
        data.append(str(out))
    participants = tmp_path / "participants.tsv"
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in files],
                  "group": ["control", "patient", "patient"]}).to_csv(
        participants, sep="\t", index=False)  # fmt: skip
    build_sc_cache(sidecars, data, str(participants),
                   {"column": "group", "entity": None, "positive": "patient"}, atlas_cfg,
                   section, str(tmp_path / "sc.parquet"), str(tmp_path / "sc_qc.tsv"))  # fmt: skip
    qc = pd.read_csv(tmp_path / "sc_qc.tsv", sep="\t", dtype={"subject": str}).set_index("subject")
    reasons = qc["reason"].fillna("")
    assert qc.loc["03", "status"] == "excluded" and "sub-03_relmat.tsv" in reasons["03"]
    if assume:
        assert f"expected ({n}, {n})" in reasons["03"] and f"({n - 1}, {n - 1})" in reasons["03"]
    else:
        assert NO_HEADER in reasons["03"]
    included = ["01", "02"] if assume else ["01"]
    assert list(qc.index[qc["status"] == "included"]) == included
    if not assume:
        assert NO_HEADER in reasons["02"] and "sub-02_relmat.tsv" in reasons["02"]
    cache = read_cache(tmp_path / "sc.parquet")
    assert list(cache.table["subject"].astype(str)) == included
    assert cache.arrays["sc"].shape == (len(included), n, n)
    for array in cache.arrays["sc"]:
        np.testing.assert_allclose(array, np.log1p(good), rtol=1e-5)


def test_header_of_numeric_labels_is_read_as_names(tmp_path, matrix):
    """One row more than columns: the numeric first row names the parcels (label ids)."""
    ids = [str(i + 1) for i in range(6)]
    order = [3, 1, 0, 5, 2, 4]
    path = tmp_path / "c.tsv"
    _write_table(path, [[ids[i] for i in order], *matrix[np.ix_(order, order)].tolist()], "\t")
    np.testing.assert_array_equal(read_sc(path, ids), matrix)
