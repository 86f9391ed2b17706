"""The report stage never stops a run: every figure is drawn (or says why) from degenerate
importances and predictions, the report is written, and every JSON written is strict JSON."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

N = 12
NAMES = [
    f"7Networks_{'LH' if i < N // 2 else 'RH'}_{net}_{i}"
    for i, net in enumerate(["Vis", "SomMot", "DorsAttn", "SalVentAttn", "Cont", "Default"] * 2)
]
NETWORKS = [n.split("_")[2] for n in NAMES]
CENTROIDS = np.column_stack(
    [np.where(np.arange(N) < N // 2, -40, 40), np.linspace(-80, 50, N), np.linspace(-10, 50, N)]
).astype(float)

IMPORTANCES = {
    "flat": np.full(N, 1 / N),
    # a diffuse effect: the top 10 span 1.069-1.107 %, which nilearn's %.2g colorbar collapsed
    "near_constant": np.linspace(0.01107, 0.01069, N),
    "nan": np.where(np.arange(N) % 3 == 0, np.nan, 1 / N),
    "all_nan": np.full(N, np.nan),
    "all_zero": np.zeros(N),
    "single_parcel": np.eye(1, N, 0).ravel(),
}


def _valid_png(path) -> None:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


def _importance(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "block": "fc",
            "parcel": NAMES,
            "network": NETWORKS,
            "rank": np.arange(1, N + 1),
            "importance": values,
        }
    )


def _edges(values: np.ndarray) -> pd.DataFrame:
    pairs = [(i, (i + 1) % N) for i in range(N)]
    return pd.DataFrame(
        {
            "block": "fc",
            "parcel_i": [NAMES[i] for i, _ in pairs],
            "parcel_j": [NAMES[j] for _, j in pairs],
            "network_i": [NETWORKS[i] for i, _ in pairs],
            "network_j": [NETWORKS[j] for _, j in pairs],
            "band": "",
            "rank": np.arange(1, N + 1),
            "importance": values,
            "sign": ["+", "-"] * (N // 2),
        }
    )


def _summary(values: np.ndarray) -> dict:
    share = {
        n: float(np.nansum(values[np.asarray(NETWORKS) == n])) for n in dict.fromkeys(NETWORKS)
    }
    return {
        "kind": "integrated_gradients",
        "blocks": {
            "fc": {
                "n_parcels": N,
                "networks": [
                    {"network": n, "share": s if np.isfinite(s) else None, "n_parcels": 2}
                    for n, s in share.items()
                ],
                "bands": {"alpha": {"share": None, "sd": None}},
            },
            "eeg": {"n_parcels": 0, "networks": [], "share_of_attribution": None},
        },
    }


@pytest.mark.parametrize("case", sorted(IMPORTANCES))
def test_biomarker_figures_draw_from_degenerate_importances(tmp_path, case):
    from brainfuse.report import figures

    values = IMPORTANCES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN arithmetic warnings either
        paths = [
            figures.top_parcels_figure(
                _importance(values), NAMES, CENTROIDS, tmp_path / "parcels.png", "fc"
            ),
            figures.top_edges_figure(_edges(values), NAMES, CENTROIDS, tmp_path / "edges.png"),
            figures.networks_figure(_summary(values), tmp_path / "networks.png"),
        ]
    for path in paths:
        _valid_png(path)


def test_narrow_importances_get_a_brain_map_not_a_message(tmp_path, caplog):
    """The real cause is fixed: the narrow range is drawn, nothing falls back to a message."""
    from brainfuse.report import figures

    with caplog.at_level("WARNING", logger="brainfuse"):
        figures.top_parcels_figure(
            _importance(IMPORTANCES["near_constant"]), NAMES, CENTROIDS, tmp_path / "p.png", "fc"
        )
    assert "could not draw" not in caplog.text
    with Image.open(tmp_path / "p.png") as image:
        assert image.size[0] > 600  # the glass brain, not the small message figure


def test_colour_range_survives_nilearn_rounding():
    from brainfuse.report.figures import NILEARN_TICK_FORMAT, _colour_range

    for low, high in ((1.069, 1.107), (5.0, 5.0), (0.0, 0.0), (0.2, 30.0)):
        vmin, vmax = _colour_range(low, high)
        assert float(NILEARN_TICK_FORMAT % vmin) < float(NILEARN_TICK_FORMAT % vmax)
        assert vmax >= high


def test_a_failing_figure_becomes_a_message(tmp_path, caplog):
    from brainfuse.report import figures

    broken = pd.DataFrame({"method": ["m"]})  # no fold, labels or scores at all
    with caplog.at_level("WARNING", logger="brainfuse"):
        path = figures.fold_spread_figure(broken, tmp_path / "spread.png", metric="auc")
        path2 = figures.routing_figure({"records": [{"moe": "fmri"}]}, tmp_path / "routing.png")
    _valid_png(path)
    _valid_png(path2)
    assert "routing_figure could not draw" in caplog.text


def _predictions(one_class: bool, nan_scores: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method in ("logreg_fc", "majority"):
        for i in range(12):
            y = 0 if one_class else i % 2
            score = np.nan if nan_scores and i % 4 == 0 else float(rng.uniform())
            rows.append(
                {
                    "method": method,
                    "fold": i % 3,
                    "sample_id": f"sub-{i:02d}_run-1",
                    "subject": f"{i:02d}",
                    "label": "patient" if y else "control",
                    "y_true": y,
                    "y_score": score,
                    "y_pred": int(score >= 0.5) if np.isfinite(score) else 0,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("one_class", [True, False])
@pytest.mark.parametrize("nan_scores", [True, False])
def test_evaluation_figures_draw_from_one_class_and_nan_predictions(
    tmp_path, one_class, nan_scores
):
    from brainfuse.report import figures

    predictions = _predictions(one_class, nan_scores)
    per_fold = pd.DataFrame(
        {"method": ["logreg_fc"] * 3, "fold": [0, 1, 2], "balanced_accuracy": [np.nan, 0.5, np.inf]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _valid_png(figures.roc_figure(predictions, tmp_path / "roc.png"))
        _valid_png(figures.fold_spread_figure(per_fold, tmp_path / "spread.png"))
        _valid_png(figures.roc_figure(predictions.iloc[0:0], tmp_path / "empty_roc.png"))
        _valid_png(figures.fold_spread_figure(per_fold.iloc[0:0], tmp_path / "empty_spread.png"))


def test_fc_difference_and_qc_figures_from_missing_data(tmp_path):
    from brainfuse.report import figures

    fc = np.full((4, N, N), np.nan)
    fc[:2, :3, :3] = 0.3  # only the first runs have a few parcels
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for name, labels in (("both", ["a", "b", "a", "b"]), ("one", ["a"] * 4)):
            path = figures.fc_difference_figure(
                fc, labels, ["1", "2", "3", "4"], NETWORKS, "a", tmp_path / f"fc_{name}.png"
            )
            _valid_png(path)
        _valid_png(
            figures.fc_difference_figure(
                np.zeros((0, 0, 0)), [], [], [], "a", tmp_path / "fc_empty.png"
            )
        )
        qc = pd.DataFrame(
            {
                "modality": ["fmri", "fmri", "eeg"],
                "sample_id": ["a", "b", "c"],
                "status": ["included", "excluded", "included"],
                "reason": ["", "x.tsv: too short", ""],
                "mean_fd": ["inf", "n/a", ""],
            }
        )
        _valid_png(figures.fd_distribution_figure(qc, tmp_path / "fd.png", 0.5))
        _valid_png(figures.exclusions_figure(qc, tmp_path / "exclusions.png"))
        _valid_png(figures.exclusions_figure(qc.iloc[0:0], tmp_path / "no_exclusions.png"))


def test_permutation_test_with_labels_within_subjects():
    """Rest and task recordings of every subject: chance is estimated, not NaN."""
    from brainfuse.report.permutation import permutation_test

    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        for y in (0, 1):
            score = 2.0 * y + rng.normal()
            rows.append(
                {
                    "method": "eeg",
                    "subject": f"{i:02d}",
                    "sample_id": f"sub-{i:02d}_task-{y}",
                    "y_true": y,
                    "y_score": score,
                    "y_pred": int(score > 1),
                }
            )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        test = permutation_test(pd.DataFrame(rows), "eeg", ["eeg"], n_permutations=199)
    assert test["available"] and test["permuted"] == "within subjects"
    assert abs(test["balanced_accuracy"]["null_mean"] - 0.5) < 0.05
    assert test["auc"]["p"] < 0.01


def test_report_is_written_from_degenerate_results(tmp_path):
    """One-class predictions, NaN metrics and a null-valued attribution summary: every page."""
    from brainfuse.explain.blocks import BlockInfo, FoldBlock, MethodAttribution
    from brainfuse.explain.outputs import write_outputs
    from brainfuse.report.index_page import ReportInputs, build_report
    from brainfuse.report.step import make_biomarker_figures, make_report_figures

    predictions = _predictions(one_class=True, nan_scores=True)
    predictions.to_csv(tmp_path / "predictions.tsv", sep="\t", index=False)
    per_fold = pd.DataFrame(
        {
            "method": ["logreg_fc", "majority"] * 3,
            "fold": [0, 0, 1, 1, 2, 2],
            "balanced_accuracy": 0.5,
            "auc": np.nan,
        }
    )
    per_fold.to_csv(tmp_path / "per_fold.tsv", sep="\t", index=False)
    summary = pd.DataFrame(
        {
            "method": ["logreg_fc", "majority"],
            "n_folds": 3,
            **{
                f"{m}_{s}": [0.5 if m == "balanced_accuracy" and s == "mean" else np.nan] * 2
                for m in ("balanced_accuracy", "auc")
                for s in ("mean", "sd", "ci_low", "ci_high")
            },
        }
    )
    summary.to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    qc = pd.DataFrame(
        {
            "modality": "eeg",
            "sample_id": predictions["sample_id"].unique(),
            "status": "included",
            "reason": "",
            "subject": predictions["subject"].unique(),
            "label": "control",
        }
    )
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    pd.DataFrame({"fold": [0, 1, 2], "subject": ["00", "01", "02"], "role": "test"}).to_csv(
        tmp_path / "folds.tsv", sep="\t", index=False
    )
    figures = {
        k: str(tmp_path / "figures" / f"{k}.png")
        for k in ("roc", "fold_spread", "fc_difference", "fd_distribution", "exclusions")
    }
    make_report_figures(
        str(tmp_path / "predictions.tsv"),
        str(tmp_path / "per_fold.tsv"),
        str(tmp_path / "qc.tsv"),
        figures,
        None,
        "patient",
        0.5,
    )
    # a diffuse effect: every edge equally important in every fold (flat importances)
    flat = np.ones((N, N)) - np.eye(N)
    per_fold = {f: FoldBlock(flat[None], flat[None]) for f in range(3)}
    result = MethodAttribution(
        "logreg_fc", "haufe", [0, 1, 2], {"fc": per_fold}, {"fc": BlockInfo(NAMES, NETWORKS)}, []
    )
    bio = tmp_path / "biomarkers" / "logreg_fc"
    write_outputs(
        result, str(bio / "importance.tsv"), str(bio / "edges.tsv"), str(bio / "summary.json")
    )
    paths = {k: str(bio / f"{k}.png") for k in ("top_parcels", "top_edges", "networks")}

    class Atlas:
        labels = NAMES

        @staticmethod
        def centroids():
            return CENTROIDS

    make_biomarker_figures(
        str(bio / "summary.json"), str(bio / "importance.tsv"), str(bio / "edges.tsv"), Atlas, paths
    )
    for path in [*figures.values(), *paths.values()]:
        _valid_png(path)

    folds_json = tmp_path / "folds.json"
    folds_json.write_text(
        json.dumps(
            {
                "n_folds": 3,
                "requested": "auto",
                "group_by": "subject",
                "subjects_per_class": {"control": 5, "patient": 4},
                "reason": "cv.n_folds: auto chose 3, the largest number up to 5 that ...",
            }
        )
    )
    out = tmp_path / "reports" / "index.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        build_report(
            ReportInputs(
                summary_path=str(tmp_path / "summary.tsv"),
                per_fold_path=str(tmp_path / "per_fold.tsv"),
                qc_path=str(tmp_path / "qc.tsv"),
                folds_path=str(tmp_path / "folds.tsv"),
                folds_summary_path=str(folds_json),
                out_html=str(out),
                predictions_path=str(tmp_path / "predictions.tsv"),
                figures=figures,
                biomarkers={
                    "logreg_fc": {
                        "summary": str(bio / "summary.json"),
                        "importance": str(bio / "importance.tsv"),
                        "edges": str(bio / "edges.tsv"),
                        **paths,
                    }
                },
                positive="patient",
                n_permutations=50,
            )
        )
    for page in (out, out.parent / "logreg_fc.html", out.parent / "majority.html"):
        assert page.exists(), page
        assert not re.search(r"\bnan\b", page.read_text(), re.IGNORECASE), page.name
    assert "No permutation test" in out.read_text()
    # why this many folds, after exclusions, from folds.json
    assert "cv.n_folds: auto chose 3" in out.read_text()
    assert "included subjects per class: control 5, patient 4" in out.read_text()


def test_write_json_writes_null_for_non_finite_numbers(tmp_path):
    from brainfuse.core.atomic import write_json

    obj = {
        "mean_fd": float("nan"),
        "tsnr": np.float32("inf"),
        "nested": {"values": [1.5, np.nan, -np.inf, np.int64(3)], "array": np.array([np.nan, 2.0])},
        "tuple": (np.float64("nan"), True),
        np.int64(4): "numpy key",
    }
    write_json(tmp_path / "sidecar.json", obj)
    text = (tmp_path / "sidecar.json").read_text()

    def reject(constant: str):
        raise ValueError(f"non-JSON constant {constant}")

    parsed = json.loads(text, parse_constant=reject)  # strict: NaN/Infinity would raise
    assert parsed == {
        "mean_fd": None,
        "tsnr": None,
        "nested": {"values": [1.5, None, None, 3], "array": [None, 2.0]},
        "tuple": [None, True],
        "4": "numpy key",
    }


def test_subjects_per_site_and_label_counts_entity_labels_of_one_subject():
    from brainfuse.report.index_page import subjects_per_group

    # a label from the task entity: every subject has a rest and an arithmetic recording
    included = pd.DataFrame(
        {
            "subject": ["01", "01", "02", "02", "03"],
            "label": ["rest", "arith", "rest", "arith", "rest"],
            "site": "A",
        }
    )
    table = subjects_per_group(included, "site")
    assert table.loc["A"].to_dict() == {"arith": 2, "rest": 3}
