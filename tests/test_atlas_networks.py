"""Network labels come only from the atlas: Schaefer's Yeo-7 labels or a label table's ``network``
column. An atlas without them (or without a label table) gives parcels in atlas order, and no
report piece names a network, "NA" or Yeo-7 for it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import AxesImage
from matplotlib.text import Text

from brainfuse.core.atlas import known_networks, load_atlas, network_word
from brainfuse.core.atomic import write_tsv
from brainfuse.explain.blocks import BlockInfo, FoldBlock, MethodAttribution
from brainfuse.explain.method import _cache_info
from brainfuse.explain.tables import aggregate, read_table
from brainfuse.report import figures
from brainfuse.report.index_page import TOP_NETWORKS, _biomarker_overview
from brainfuse.report.method_page import _figure_captions, _top_edges, _top_parcels

#: image values of the synthetic atlas's parcels (not 1..n, so that names by value show)
VALUES = (3, 7, 10, 12)


def _atlas_image(path: Path) -> str:
    """A 4 x 4 x 4 NIfTI with one parcel per value of :data:`VALUES` (and background)."""
    data = np.zeros((4, 4, 4), dtype=np.int16)
    for i, value in enumerate(VALUES):
        data[i, :2, :] = value
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return str(path)


def _label_table(path: Path, networks: list[str] | None) -> str:
    table = pd.DataFrame({"index": VALUES, "name": ["a_L", "b_L", "c_R", "d_R"]})
    if networks is not None:
        table["network"] = networks
    table.to_csv(path, sep="\t", index=False)
    return str(path)


def _texts(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Collect every text of each figure that ``figures.save`` writes (titles, ticks, labels)."""
    seen: list[list[str]] = []
    save = figures.save

    def recording_save(fig, out_png):
        seen.append([t.get_text() for t in fig.findobj(Text) if t.get_text()])
        return save(fig, out_png)

    monkeypatch.setattr(figures, "save", recording_save)
    return seen


def _no_network_claims(texts: list[str]) -> None:
    joined = " ".join(texts)
    assert "Yeo" not in joined
    assert "NA" not in joined.split()


# --------------------------------------------------------------------------- the atlas


def test_label_table_network_column_gives_networks(tmp_path):
    networks = ["Motor", "Motor", "Visual", "Default"]
    atlas = load_atlas(
        "Toy",
        path=_atlas_image(tmp_path / "atlas.nii.gz"),
        labels_path=_label_table(tmp_path / "labels.tsv", networks),
    )
    assert atlas.networks == tuple(networks)
    assert atlas.has_networks
    assert atlas.label_values == VALUES
    assert network_word(atlas.networks) == "network"


def test_label_table_without_network_column_gives_no_networks(tmp_path):
    atlas = load_atlas(
        "Toy",
        path=_atlas_image(tmp_path / "atlas.nii.gz"),
        labels_path=_label_table(tmp_path / "labels.csv", None),
    )
    assert atlas.labels == ("a_L", "b_L", "c_R", "d_R")
    assert atlas.networks == ()
    assert not atlas.has_networks
    assert network_word(atlas.networks) == ""


def test_blank_network_in_label_table_is_an_error_naming_the_parcel(tmp_path):
    with pytest.raises(ValueError, match=r"'network' column is empty.*c_R"):
        load_atlas(
            "Toy",
            path=_atlas_image(tmp_path / "atlas.nii.gz"),
            labels_path=_label_table(tmp_path / "labels.tsv", ["A", "A", "", "B"]),
        )


def test_schaefer_labels_in_a_custom_table_give_yeo7_networks(tmp_path):
    table = pd.DataFrame(
        {
            "index": VALUES,
            "name": [
                "7Networks_LH_Vis_1",
                "7Networks_LH_Default_PFC_1",
                "7Networks_RH_SalVentAttn_Med_1",
                "7Networks_RH_Vis_1",
            ],
        }
    )
    table.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    atlas = load_atlas(
        "Custom", _atlas_image(tmp_path / "atlas.nii.gz"), str(tmp_path / "labels.tsv")
    )
    assert atlas.networks == ("Vis", "Default", "SalVentAttn", "Vis")
    assert network_word(atlas.networks) == "Yeo-7 network"


def test_names_that_only_contain_a_network_word_give_no_networks(tmp_path):
    table = pd.DataFrame({"index": VALUES, "name": ["L_Vis", "R_Vis", "L_Cont", "R_Cont"]})
    table.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    atlas = load_atlas("HO", _atlas_image(tmp_path / "atlas.nii.gz"), str(tmp_path / "labels.tsv"))
    assert atlas.networks == ()


def test_no_label_table_names_parcels_by_image_value_in_ascending_order(tmp_path):
    atlas = load_atlas("CC4", path=_atlas_image(tmp_path / "atlas.nii.gz"))
    assert atlas.label_values == VALUES
    assert atlas.labels == ("3", "7", "10", "12")  # numeric order, not text order
    assert atlas.networks == ()
    assert atlas.n_nodes == 4
    assert np.isfinite(atlas.centroids()).all()


def test_an_image_without_parcels_is_an_error(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), tmp_path / "empty.nii")
    with pytest.raises(ValueError, match="no nonzero"):
        load_atlas("Empty", path=str(tmp_path / "empty.nii"))


def test_known_networks_ignores_na_placeholders_and_other_lengths():
    assert known_networks(["NA", "NA", "NA"], 3) == ()  # a cache of a non-Schaefer atlas
    assert known_networks(None, 3) == ()
    assert known_networks(["Vis", "Default"], 3) == ()  # e.g. EEG channels, not parcels
    assert known_networks(["Vis", "Default", "Vis"], 3) == ("Vis", "Default", "Vis")


def test_cache_of_a_non_schaefer_atlas_gives_no_networks_to_attribution():
    class Cache:
        metadata = {"roi_names": ["1", "2", "3"], "roi_networks": ["NA", "NA", "NA"]}
        arrays: dict = {}

    assert _cache_info(Cache(), "fmri").networks == []


# --------------------------------------------------------------------------- attribution tables


def _attribution(networks: list[str]) -> MethodAttribution:
    rng = np.random.default_rng(0)
    per_fold = {}
    for f in range(2):
        m = np.abs(rng.normal(size=(4, 4)))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 0)
        per_fold[f] = FoldBlock(m[None], m[None])
    info = BlockInfo(["3", "7", "10", "12"], networks)
    return MethodAttribution("toy", "haufe", [0, 1], {"fc": per_fold}, {"fc": info})


def test_attribution_without_networks_has_empty_network_columns_and_no_shares():
    importance, edges, blocks = aggregate(_attribution([]))
    assert set(importance["network"]) == {""}
    assert set(edges["network_i"]) | set(edges["network_j"]) == {""}
    assert blocks["fc"]["networks"] == []
    assert blocks["fc"]["network_pairs"] == []
    assert np.isclose(importance["importance"].sum(), 1.0)


def test_attribution_with_custom_networks_shares_them():
    _, _, blocks = aggregate(_attribution(["Motor", "Motor", "Visual", "Visual"]))
    shares = {r["network"]: r["share"] for r in blocks["fc"]["networks"]}
    assert set(shares) == {"Motor", "Visual"}
    assert sum(shares.values()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- report pieces


def test_fc_difference_without_networks_is_in_atlas_order(tmp_path, monkeypatch):
    texts = _texts(monkeypatch)
    n = 5
    rng = np.random.default_rng(1)
    base = np.tanh(rng.normal(0, 0.3, (n, n)))
    base = (base + base.T) / 2
    fc = np.stack([base, base, base + 0.2, base + 0.2])
    np.fill_diagonal(fc[2], 0.0)
    np.fill_diagonal(fc[3], 0.0)
    out = figures.fc_difference_figure(
        fc, ["p", "c", "p", "c"], ["s1", "s2", "s3", "s4"], (), "p", tmp_path / "fc.png"
    )
    assert Path(out).stat().st_size > 0
    _no_network_claims(texts[0])
    assert any("atlas order" in t for t in texts[0])


def test_fc_difference_groups_custom_networks_in_first_appearance_order(tmp_path, monkeypatch):
    images: list[np.ndarray] = []
    save = figures.save

    def keep_image(fig, out_png):
        images.append(fig.findobj(AxesImage)[0].get_array())
        return save(fig, out_png)

    monkeypatch.setattr(figures, "save", keep_image)
    diff = np.arange(16, dtype=float).reshape(4, 4) / 100
    diff = diff + diff.T
    fc = np.tanh(np.stack([diff, np.zeros((4, 4))]))
    networks = ["B", "A", "B", "A"]
    figures.fc_difference_figure(fc, ["p", "c"], ["s1", "s2"], networks, "p", tmp_path / "f.png")
    order = [0, 2, 1, 3]  # B first (it appears first), then A; stable within each
    expected = diff[np.ix_(order, order)].copy()
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(images[0], expected, atol=1e-6)


def test_networks_figure_without_networks_says_the_atlas_has_none(tmp_path, monkeypatch):
    texts = _texts(monkeypatch)
    summary = {"kind": "haufe", "blocks": {"fc": {"n_parcels": 4, "networks": []}}}
    figures.networks_figure(summary, tmp_path / "networks.png")
    assert "no network labels" in " ".join(texts[0])
    _no_network_claims(texts[0])


def test_networks_figure_without_networks_still_shows_bands(tmp_path, monkeypatch):
    texts = _texts(monkeypatch)
    bands = {"alpha": {"share": 0.7, "sd": 0.1}, "beta": {"share": 0.3, "sd": 0.1}}
    summary = {"kind": "haufe", "blocks": {"band_power": {"networks": [], "bands": bands}}}
    figures.networks_figure(summary, tmp_path / "networks.png")
    joined = " ".join(texts[0])
    assert "alpha" in joined and "band_power: bands" in joined
    assert "networks" not in joined


def test_top_edges_figure_without_networks_draws(tmp_path, monkeypatch):
    texts = _texts(monkeypatch)
    _, edges, _ = aggregate(_attribution([]))
    centroids = np.array([[-40.0, 0, 0], [40, 0, 0], [0, -40, 0], [0, 40, 10]])
    figures.top_edges_figure(edges, ["3", "7", "10", "12"], centroids, tmp_path / "e.png", "fc")
    assert texts and not any("could not be drawn" in t for t in texts[0])
    _no_network_claims(texts[0])


def test_method_page_tables_and_captions_without_networks(tmp_path):
    importance, edges, _ = aggregate(_attribution([]))
    # as the report reads them: through importance.tsv and edges.tsv
    write_tsv(tmp_path / "importance.tsv", importance)
    write_tsv(tmp_path / "edges.tsv", edges)
    importance = read_table(tmp_path / "importance.tsv")
    edges = read_table(tmp_path / "edges.tsv")
    parcels = _top_parcels(importance, "fc")
    assert "network" not in parcels
    assert sorted(parcels["parcel"]) == ["10", "12", "3", "7"]
    assert "networks" not in _top_edges(edges, "fc")
    for _, caption in _figure_captions("fc", "patient", ""):
        assert "Yeo" not in caption and "coloured by" not in caption and "NA" not in caption
    yeo = dict(_figure_captions("fc", "patient", "Yeo-7 network"))
    assert "per Yeo-7 network" in yeo["networks"]
    custom = dict(_figure_captions("fc", "patient", "network"))
    assert "Yeo" not in custom["networks"] and "per network" in custom["networks"]


def test_biomarker_overview_without_networks_has_no_network_column():
    _, _, blocks = aggregate(_attribution([]))
    summary = {"kind": "haufe", "headline_block": "fc", "blocks": blocks}
    html = _biomarker_overview({"toy": summary}, {"toy": "toy.html"})
    assert "toy" in html and TOP_NETWORKS not in html and "NA" not in html
    _, _, blocks = aggregate(_attribution(["Motor", "Motor", "Visual", "Visual"]))
    summary = {"kind": "haufe", "headline_block": "fc", "blocks": blocks}
    assert TOP_NETWORKS in _biomarker_overview({"toy": summary}, {"toy": "toy.html"})


def test_fmri_qc_figure_keeps_every_parcel_in_atlas_order_without_networks(tmp_path):
    from brainfuse.modalities.fmri.qc_figure import _network_order, run_figure

    assert list(_network_order([], 4)) == [0, 1, 2, 3]
    assert list(_network_order(["B", "A", "B", "A"], 4)) == [1, 3, 0, 2]
    timeseries = np.random.default_rng(0).normal(size=(40, 4))
    qc = {"status": "included", "sample_id": "sub-01"}
    out = tmp_path / "qc.png"
    run_figure(timeseries, np.corrcoef(timeseries.T), np.zeros(40), [], qc, str(out))
    assert out.stat().st_size > 0
