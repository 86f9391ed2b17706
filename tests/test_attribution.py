"""Biomarker attribution: Haufe patterns, integrated gradients, aggregation, stability and the
recovery of planted effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainfuse.explain.blocks import FoldBlock, MethodAttribution
from brainfuse.explain.gradients import attribution_to_block, integrated_gradients
from brainfuse.explain.linear import haufe_pattern, linear_blocks, vector_to_matrix
from brainfuse.explain.method import explain_method
from brainfuse.explain.outputs import write_outputs
from brainfuse.explain.recovery import ground_truth_recovery, hypergeom_p
from brainfuse.explain.stability import stability, top_k_overlap
from brainfuse.explain.tables import aggregate, read_table


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one thread is fastest, and the suite shares its cores."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- Haufe


def _distractor_data(n=3000, seed=0):
    """Features 0-2 carry the class signal; a distractor loads on 0-2 and on 10-12.

    The best linear classifier cancels the distractor with large weights on 10-12, features
    that carry no class information: raw weights point there, activation patterns do not.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = (y - 0.5) * 1.0
    distractor = rng.standard_normal(n) * 3.0
    a = np.zeros(20)
    a[:3] = 1.0
    b = np.zeros(20)
    b[:3] = 1.0
    b[10:13] = 1.0
    x = np.outer(signal, a) + np.outer(distractor, b) + 0.3 * rng.standard_normal((n, 20))
    return x, y, a


def test_haufe_recovers_the_generative_direction_where_weights_do_not():
    from sklearn.linear_model import LogisticRegression

    x, y, truth = _distractor_data()
    w = LogisticRegression(C=1.0, max_iter=5000).fit(x, y).coef_.ravel()
    pattern = haufe_pattern(x, w)

    top_w = set(np.argsort(-np.abs(w))[:3])
    top_pattern = set(np.argsort(-np.abs(pattern))[:3])
    assert top_pattern == {0, 1, 2}
    assert top_w != {0, 1, 2}  # the distractor features get the largest weights
    assert np.abs(w[10:13]).min() > 0.5 * np.abs(w[:3]).max()
    # the pattern is the class-difference direction; the weights are not
    assert abs(stats.pearsonr(pattern, truth).statistic) > 0.99
    assert abs(stats.pearsonr(w, truth).statistic) < 0.8
    assert np.abs(pattern[10:13]).max() < 0.05 * np.abs(pattern[:3]).min()


def test_haufe_equals_covariance_times_weights():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 6))
    w = rng.standard_normal(6)
    s = x @ w
    expected = np.cov(x, rowvar=False) @ w / np.var(s, ddof=1)
    np.testing.assert_allclose(haufe_pattern(x, w), expected, rtol=1e-10)


def test_standardized_pattern_does_not_depend_on_feature_units():
    from brainfuse.explain.linear import standardized_pattern

    x, y, truth = _distractor_data(n=500)
    w = np.linspace(-1, 1, 20)
    scale = np.geomspace(0.01, 100, 20)
    # the same decision function on rescaled features
    a = standardized_pattern(x, w)
    b = standardized_pattern(x * scale, w / scale)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    assert not np.allclose(haufe_pattern(x, w), haufe_pattern(x * scale, w / scale))


def test_vector_orders_match_the_feature_extractors():
    from nilearn.connectome import sym_matrix_to_vec

    from brainfuse.methods.baselines.estimators import upper_triangle

    rng = np.random.default_rng(2)
    m = rng.uniform(-0.5, 0.5, (6, 6))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 0)
    triu = upper_triangle(m[None], fisher=False)[0]
    np.testing.assert_allclose(vector_to_matrix(triu, 6, "triu"), m)
    tril = sym_matrix_to_vec(m[None], discard_diagonal=True)[0]
    np.testing.assert_allclose(vector_to_matrix(tril, 6, "tril"), m)


def test_linear_blocks_of_a_scaled_eeg_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_nodes, n_bands = 5, 2
    n_features = n_bands * n_nodes + n_bands * n_nodes * (n_nodes - 1) // 2
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, n_features))
    x[:, 1 * n_nodes + 3] += 2.0 * y  # band 1, node 3 power differs between classes
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    blocks = linear_blocks(model, x, "eeg", n_nodes, n_bands)
    assert set(blocks) == {"band_power", "aec"}
    power = blocks["band_power"].magnitude
    assert power.shape == (2, 5) and np.unravel_index(power.argmax(), power.shape) == (1, 3)
    aec = blocks["aec"].signed
    assert aec.shape == (2, 5, 5) and np.allclose(aec, aec.transpose(0, 2, 1))
    assert power.max() > 3 * np.abs(aec).max()


def test_majority_and_weightless_models_have_no_blocks():
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit(np.zeros((4, 3)), [0, 1, 0, 1])
    assert linear_blocks(model, np.zeros((4, 3)), "fc", 3) is None


# --------------------------------------------------------------------------- captum


def test_integrated_gradients_ranks_the_planted_feature_first():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    n, d, planted = 256, 10, 6
    x = torch.randn(n, d)
    y = (x[:, planted] + 0.1 * torch.randn(n) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()

    def forward(batch):
        logits = model(batch["x"])
        return logits[:, 1] - logits[:, 0]

    attributions, error = integrated_gradients(forward, {"x": x[:32]}, {}, n_steps=64)
    importance = np.abs(attributions["x"]).mean(0)
    assert importance.argmax() == planted
    assert importance[planted] > 3 * np.delete(importance, planted).max()
    assert error < 0.05  # completeness: attributions sum to f(x) - f(0)


def test_integrated_gradients_of_a_linear_model_from_a_baseline():
    torch = pytest.importorskip("torch")
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    base = torch.tensor([[0.5, 0.5, 0.5]])

    def forward(batch):
        return batch["x"] @ w * batch["gain"]

    extras = {"gain": torch.ones(2)}
    attributions, error = integrated_gradients(forward, {"x": x}, extras, 8, None, {"x": base})
    np.testing.assert_allclose(attributions["x"], ((x - base) * w).numpy(), atol=1e-5)
    assert error < 1e-5


def test_attribution_of_a_symmetric_matrix_input_goes_to_edges():
    rng = np.random.default_rng(0)
    attr = rng.standard_normal((3, 4, 4))
    block = attribution_to_block("fc", attr)
    assert block.magnitude.shape == (1, 4, 4)
    edge = attr[:, 0, 1] + attr[:, 1, 0]
    assert np.isclose(block.signed[0, 0, 1], edge.mean())
    assert np.isclose(block.magnitude[0, 0, 1], np.abs(edge).mean())
    assert np.allclose(np.diagonal(block.magnitude[0]), 0)
    series = attribution_to_block("timeseries", rng.standard_normal((3, 4, 7)))
    assert series.magnitude.shape == (1, 4)


# --------------------------------------------------------------------------- stability


def test_stability_on_known_inputs():
    a = np.arange(30, dtype=float)
    same = stability(np.stack([a, a, a]))
    assert same["spearman_mean"] == pytest.approx(1.0)
    assert same["top_k_overlap_mean"] == 1.0 and same["chance_overlap"] == pytest.approx(10 / 30)
    reversed_ = stability(np.stack([a, a[::-1]]))
    assert reversed_["spearman_mean"] == pytest.approx(-1.0)
    assert reversed_["top_k_overlap_mean"] == 0.0
    # top-10 of b shares exactly 5 items with top-10 of a
    b = a.copy()
    b[[29, 28, 27, 26, 25]] = -1
    assert top_k_overlap(a, b) == pytest.approx(0.5)
    assert len(stability(np.stack([a, a, b]))["pairs"]) == 3


def _planted_attribution(n=20, planted=(2, 7, 11, 15), noise=0.05, folds=3, seed=0):
    rng = np.random.default_rng(seed)
    per_fold = {}
    for f in range(folds):
        m = np.abs(rng.normal(0, noise, (n, n)))
        for i in planted:
            for j in planted:
                if i != j:
                    m[i, j] += 1.0
        m = (m + m.T) / 2
        np.fill_diagonal(m, 0)
        per_fold[f] = FoldBlock(m[None], m[None])
    from brainfuse.explain.blocks import BlockInfo

    names = [f"7Networks_LH_Default_{i}" if i % 2 else f"7Networks_RH_Vis_{i}" for i in range(n)]
    info = BlockInfo(names, ["Default" if i % 2 else "Vis" for i in range(n)])
    return MethodAttribution("toy", "haufe", list(range(folds)), {"fc": per_fold}, {"fc": info})


def test_aggregation_shares_and_ground_truth_recovery():
    result = _planted_attribution()
    importance, edges, blocks = aggregate(result)
    assert np.isclose(importance["importance"].sum(), 1.0)
    assert np.isclose(edges["importance"].sum(), 1.0)
    for f in range(3):
        assert np.isclose(importance[f"fold-{f}"].sum(), 1.0)
    top = set(importance.sort_values("rank")["parcel_index"].head(4))
    assert top == {2, 7, 11, 15}
    assert blocks["fc"]["stability"]["spearman_mean"] > 0.3
    assert blocks["fc"]["edge_stability"]["top_k_overlap_mean"] >= 0.5
    assert sum(r["share"] for r in blocks["fc"]["networks"]) == pytest.approx(1.0)

    names = importance.set_index("parcel_index")["parcel"]
    truth = {
        "fmri": {
            "parcels": [names[i] for i in (2, 7, 11, 15)],
            "edges": [[names[2], names[7]], [names[11], names[15]]],
        }
    }
    recovery = ground_truth_recovery(importance, edges, truth)["fc"]
    assert recovery["parcels"]["precision"] == pytest.approx(0.4)  # 4 planted among top 10
    assert recovery["parcels"]["chance"] == pytest.approx(4 / 20)
    assert recovery["edges"]["n_planted"] == 2
    assert {tuple(h) for h in recovery["edges"]["hits"]} <= {
        tuple(sorted((names[2], names[7]))),
        tuple(sorted((names[11], names[15]))),
    }
    assert recovery["parcels"]["p_value"] == pytest.approx(hypergeom_p(4, 10, 4, 20))


def test_hypergeometric_p_value():
    # all 10 planted among the top 10 of 100: 1 / C(100, 10)
    assert hypergeom_p(10, 10, 10, 100) == pytest.approx(1 / 17310309456440)
    assert hypergeom_p(0, 10, 10, 100) == pytest.approx(1.0)


def test_write_outputs_round_trip(tmp_path):
    result = _planted_attribution()
    out = {
        k: str(tmp_path / f)
        for k, f in [("imp", "importance.tsv"), ("edges", "edges.tsv"), ("summary", "summary.json")]
    }
    write_outputs(result, out["imp"], out["edges"], out["summary"], truth={"groups": ["a"]})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline_block"] == "fc" and summary["kind"] == "haufe"
    assert summary["ground_truth"] == {}
    edges = read_table(out["edges"])
    assert (edges["band"] == "").all() and edges["rank"].min() == 1
    importance = read_table(out["imp"])
    assert list(importance.columns[:5]) == [
        "block",
        "modality",
        "parcel_index",
        "parcel",
        "network",
    ]


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from brainfuse.methods.torch.synthetic import write_synthetic_caches

    out = tmp_path_factory.mktemp("synthetic")
    paths = write_synthetic_caches(
        out, n_subjects=24, n_nodes=20, n_planted=4, effect=0.6, n_folds=3, sc_effect=1.0
    )
    return out, paths


def _truth(paths):
    from brainfuse.core.cache import read_cache

    meta = read_cache(paths["fmri"]).metadata
    names = [f"node_{i}" for i in range(20)]
    planted = [names[i] for i in meta["planted"]]
    return {"fmri": {"parcels": planted}, "sc": {"parcels": planted}}


@pytest.mark.parametrize("method", ["logreg_fc", "svm_tangent", "logreg_sc"])
def test_linear_baselines_find_the_planted_parcels(synthetic, method, tmp_path):
    from brainfuse.methods.request import StageOutputs, StageRequest
    from brainfuse.methods.run import run_stage

    out, paths = synthetic
    modality = "sc" if method.endswith("_sc") else "fmri"
    models = []
    for fold in range(3):
        stage_dir = out / method / f"fold-{fold}"
        outputs = StageOutputs(
            *(str(stage_dir / f) for f in ("model.bin", "metrics.json", "predictions.tsv"))
        )
        run_stage(
            StageRequest(
                method, "fit", fold, {modality: paths[modality]}, paths["folds"], "patient", 0,
                outputs,
            )
        )  # fmt: skip
        models.append(outputs.model)
    result = explain_method(
        method, models, [], [], {modality: paths[modality]}, paths["folds"], "patient", 0
    )
    block = "sc" if modality == "sc" else "fc"
    assert result.kind == "haufe" and sorted(result.blocks[block]) == [0, 1, 2]
    summary = write_outputs(
        result,
        str(tmp_path / "i.tsv"),
        str(tmp_path / "e.tsv"),
        str(tmp_path / "s.json"),
        truth=_truth(paths),
    )
    assert summary["headline_block"] == block
    recovery = summary["ground_truth"][block]["parcels"]
    # 4 planted of 20 parcels: the top 4 is mostly planted (chance 0.2)
    top4 = read_table(tmp_path / "i.tsv").sort_values("rank")["parcel"].head(4)
    assert len(set(top4) & set(_truth(paths)["fmri"]["parcels"])) >= 3
    assert recovery["precision"] >= 0.3 and recovery["chance"] == pytest.approx(0.2)
    assert summary["blocks"][block]["stability"]["spearman_mean"] > 0.3


def test_torch_model_is_rebuilt_and_explained(synthetic, tmp_path):
    torch = pytest.importorskip("torch")
    from brainfuse.folds import read_folds, subjects_of
    from brainfuse.methods.catalog import default_catalog
    from brainfuse.methods.torch.data import BrainDataset
    from brainfuse.methods.torch.plugins import build_classifier_model
    from brainfuse.methods.torch.weights import MODEL_FORMAT

    out, paths = synthetic
    method = "graph_transformer_fc"
    hp = default_catalog().params(
        method,
        {"d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32, "head_hidden": 16},
    )
    dataset = BrainDataset({"fmri": paths["fmri"]}, "patient", fields=["fc"])
    folds = read_folds(paths["folds"])
    models = []
    for fold in range(2):
        torch.manual_seed(fold)
        model = build_classifier_model(hp, 20)
        train = dataset.subset(subjects_of(folds, fold, "train"))
        batch = {
            k: torch.stack([train[i][k] for i in range(len(train))])
            for k in ("fc", "node_mask", "y")
        }
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(60):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(batch), batch["y"]).backward()
            optimiser.step()
        path = tmp_path / f"fold-{fold}.bin"
        torch.save(
            {
                "format": MODEL_FORMAT,
                "method": method,
                "stage": "train",
                "fold": fold,
                "encoder": hp["encoder"],
                "n_nodes": 20,
                "params": hp,
                "supervised": True,
                "input_keys": ["fc", "node_mask"],
                "state_dict": model.state_dict(),
            },
            path,
        )
        models.append(str(path))
    result = explain_method(
        method,
        models,
        [],  # one stage: no previous stage
        [],
        {"fmri": paths["fmri"]},
        paths["folds"],
        "patient",
        0,
        n_steps=16,
    )
    assert result.kind == "integrated_gradients" and set(result.blocks) == {"fc"}
    for fold in range(2):
        assert result.extra["folds"][fold]["ig_relative_completeness_error"] < 0.1
        assert result.blocks["fc"][fold].magnitude.shape == (1, 20, 20)
    importance, edges, _ = aggregate(result)
    planted = set(_truth(paths)["fmri"]["parcels"])
    top = set(importance.sort_values("rank")["parcel"].head(10))
    assert len(top & planted) >= 3  # chance: 2 of 4 in the top half


def test_explain_majority_has_no_biomarkers(synthetic):
    _, paths = synthetic
    result = explain_method(
        "majority",
        ["unused"],
        [],
        [],
        {"fmri": paths["fmri"]},
        paths["folds"],
        "patient",
        0,
    )
    assert result.kind == "none" and not result.blocks
    importance, edges, blocks = aggregate(result)
    assert importance.empty and edges.empty and blocks == {}


def test_routing_summary(tmp_path):
    from brainfuse.explain.routing import routing_summary

    rows = []
    for label, y in (("control", 0), ("patient", 1)):
        for s in range(2):
            for e in range(2):
                share = 0.8 if e == y else 0.2
                rows.append(
                    {
                        "sample_id": f"{label}{s}",
                        "subject": f"{label}{s}",
                        "label": label,
                        "y_true": y,
                        "block": 0,
                        "moe": "shared",
                        "expert": e,
                        "sc_share": share,
                        "fc_share": share,
                        "sc_fraction": 0.5,
                    }
                )
    pd.DataFrame(rows).to_csv(tmp_path / "routing.tsv", sep="\t", index=False)
    summary = routing_summary([tmp_path / "routing.tsv", tmp_path / "missing.tsv"])
    records = pd.DataFrame(summary["records"])
    patient = records[(records["label"] == "patient") & (records["expert"] == 1)]
    assert patient["share"].item() == pytest.approx(0.8) and summary["n_folds"] == 1
    assert routing_summary([tmp_path / "missing.tsv"]) is None

    from brainfuse.report.figures import routing_figure

    out = routing_figure(summary, tmp_path / "routing.png")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
