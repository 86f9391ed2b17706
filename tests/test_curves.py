"""Learning curves (config ``curves``, target ``curves``): the nested, label-stratified subsample
of each fold's training subjects, the curves table, its report section, and the jobs a dry run
of the real Snakefile plans for them."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from test_slurm import ROOT, snakemake

from brainfuse.core.errors import ConfigError
from brainfuse.curves import (
    CURVE_COLUMNS,
    CurvePoint,
    curve_methods,
    fraction_label,
    learning_curves,
    subsample_folds,
    write_subsampled_folds,
)
from brainfuse.folds import make_folds
from brainfuse.report.curves import curve_means, curves_figure, curves_section

FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, dict[str, str]]:
    """Folds of 60 subjects (40 controls, 20 patients, 3 sites) and every subject's label."""
    subjects = [f"s{i:02d}" for i in range(60)]
    labels = {s: "patient" if i % 3 == 0 else "control" for i, s in enumerate(subjects)}
    samples = pd.DataFrame(
        {"subject": subjects, "label": [labels[s] for s in subjects], "site": ["a", "b", "c"] * 20}
    )
    return make_folds(samples, n_folds=3, val_fraction=0.25, seed=1), labels


def _members(folds: pd.DataFrame, fold: int, role: str) -> set[str]:
    rows = folds[(folds["fold"] == fold) & (folds["role"] == role)]
    return set(rows["subject"])


def test_subsample_is_nested_stratified_and_keeps_the_test_subjects(cohort):
    folds, labels = cohort
    subsamples = {f: subsample_folds(folds, labels, f, seed=3) for f in FRACTIONS}
    pd.testing.assert_frame_equal(subsamples[1.0], folds)
    for fold in range(3):
        for role in ("train", "val"):
            full = _members(folds, fold, role)
            for smaller, larger in zip(FRACTIONS, FRACTIONS[1:], strict=False):
                assert _members(subsamples[smaller], fold, role) <= _members(
                    subsamples[larger], fold, role
                )
            for fraction, sub in subsamples.items():
                kept = _members(sub, fold, role)
                for label in ("control", "patient"):
                    n = sum(labels[s] == label for s in full)
                    expected = max(1, math.ceil(round(fraction * n, 9)))
                    assert sum(labels[s] == label for s in kept) == expected
        for sub in subsamples.values():
            # the test subjects stay exactly the fold's, and none of them trains
            assert _members(sub, fold, "test") == _members(folds, fold, "test")
            assert not (_members(sub, fold, "test") & _members(sub, fold, "train"))
            assert not (_members(sub, fold, "test") & _members(sub, fold, "val"))
    # the 10 % subsample is strictly smaller than the full training set
    assert len(subsamples[0.1]) < len(subsamples[0.5]) < len(folds)


def test_subsample_is_seeded_and_never_reads_test_labels(cohort, tmp_path):
    folds, labels = cohort
    first = subsample_folds(folds, labels, 0.25, seed=3)
    pd.testing.assert_frame_equal(first, subsample_folds(folds, labels, 0.25, seed=3))
    assert not first.equals(subsample_folds(folds, labels, 0.25, seed=4))
    # a fold's subsample reads no label of its test subjects: flipping them (they train in the
    # other folds, whose subsamples may change) leaves fold 0 as it was
    flipped = dict(labels)
    for subject in _members(folds, 0, "test"):
        flipped[subject] = "control" if labels[subject] == "patient" else "patient"
    changed = subsample_folds(folds, flipped, 0.25, seed=3)
    pd.testing.assert_frame_equal(
        first[first["fold"] == 0].reset_index(drop=True),
        changed[changed["fold"] == 0].reset_index(drop=True),
    )
    with pytest.raises(ValueError, match="no label"):
        subsample_folds(folds, {}, 0.25, seed=3)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        subsample_folds(folds, labels, 0.0, seed=3)
    # the written file keeps the folds format and holds the same rows
    folds_path = tmp_path / "folds.tsv"
    folds.to_csv(folds_path, sep="\t", index=False)
    out = tmp_path / "frac-25.tsv"
    write_subsampled_folds(str(folds_path), labels, 0.25, 3, str(out))
    written = pd.read_csv(out, sep="\t", dtype={"subject": str})
    pd.testing.assert_frame_equal(written, first)


def test_planning_import_is_light():
    """The Snakefile imports brainfuse.curves while planning: no scikit-learn or torch."""
    code = (
        "import sys, brainfuse.curves; "
        "assert not {'torch', 'sklearn'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fraction_labels_and_methods():
    assert [fraction_label(f) for f in (0.1, 0.25, 0.125, 1.0)] == ["10", "25", "12.5", "100"]
    run, known = ["majority", "logreg_fc"], ["majority", "logreg_fc", "svm_sc", "gcn_fc"]
    assert curve_methods(None, run, known) == run
    # a method that does not run (its modality absent, or not configured) is left out
    assert curve_methods(["svm_sc", "logreg_fc", "gcn_fc"], run, known) == ["logreg_fc"]
    with pytest.raises(ConfigError, match="gcn"):
        curve_methods(["gcn"], run, known)


def _write_predictions(path, folds: pd.DataFrame, labels, method, accuracy, rng):
    """Test predictions of every fold, right for a share ``accuracy`` of the subjects."""
    rows = []
    for fold in sorted(folds["fold"].unique()):
        for subject in sorted(_members(folds, fold, "test")):
            y = int(labels[subject] == "patient")
            right = rng.uniform() < accuracy
            rows.append(
                {
                    "method": method,
                    "fold": fold,
                    "subject": subject,
                    "y_true": y,
                    "y_pred": y if right else 1 - y,
                    "y_score": float(y if right else 1 - y) + rng.normal(0, 0.1),
                }
            )
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


@pytest.fixture(scope="module")
def curves(cohort, tmp_path_factory) -> pd.DataFrame:
    """The curves of a baseline and a deep method that improve with more training subjects."""
    folds, labels = cohort
    tmp = tmp_path_factory.mktemp("curves")
    rng = np.random.default_rng(0)
    points = []
    for fraction in FRACTIONS:
        folds_path = tmp / f"folds_{fraction}.tsv"
        subsample_folds(folds, labels, fraction, seed=0).to_csv(folds_path, sep="\t", index=False)
        for method, family, gain in (("logreg_fc", "baseline", 0.3), ("gcn_fc", "deep", 0.2)):
            path = tmp / f"{method}_{fraction}.tsv"
            accuracy = 0.6 + gain * fraction
            points.append(
                CurvePoint(
                    method,
                    family,
                    fraction,
                    str(folds_path),
                    [_write_predictions(path, folds, labels, method, accuracy, rng)],
                )
            )
    return learning_curves(points)


def test_curves_table(curves, cohort):
    folds, _ = cohort
    assert list(curves.columns) == CURVE_COLUMNS
    assert len(curves) == 2 * len(FRACTIONS) * 3
    full = curves[curves["fraction"] == 1.0]
    training = folds[folds["role"] != "test"].groupby("fold")["subject"].nunique()
    assert full.set_index("fold")["n_train_subjects"].groupby(level=0).first().equals(training)
    # training size grows with the fraction on every fold
    sizes = curves.groupby(["fold", "fraction"])["n_train_subjects"].first().unstack()
    assert (sizes.diff(axis=1).iloc[:, 1:] > 0).all().all()
    assert curves[["balanced_accuracy", "auc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert set(curves.loc[curves["method"] == "gcn_fc", "family"]) == {"deep"}


def test_curves_section_and_figure(curves, tmp_path):
    figure = curves_figure(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    html = curves_section(curves, figure)
    assert "<h2>Learning curves</h2>" in html
    assert "data:image/png;base64," in html
    for column in ("10%", "25%", "50%", "100%"):
        assert f"<th>{column}</th>" in html
    assert html.count("<tr>") == 1 + 2  # header and one row per method
    assert "the best baseline is logreg_fc" in html and "the best deep method is gcn_fc" in html
    # without the table (curves not made) there is no section
    assert curves_section(None) == ""
    assert curves_section(curves.iloc[:0]) == ""


def _dry_run_jobs(workdir, *targets: str) -> dict[str, int]:
    result = snakemake(
        workdir, "-n", "--quiet", "rules", "--cores", "1", "--", *targets, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = {}
    for line in output[output.index("Job stats:") :].splitlines()[3:]:
        words = line.split()
        if len(words) != 2 or not words[1].isdigit():
            break
        counts[words[0]] = int(words[1])
    return counts


def test_dry_run_plans_the_curve_jobs(tmp_path, atlas_data_dir):
    """The demo with two folds, a baseline, the majority rule and a two-stage self-supervised
    method: one job per method x stage x fold x fraction below 100 %, one subsampled folds file
    per such fraction, and nothing of it in the default target unless ``curves.in_report``
    asks for it."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["cv"]["n_folds"] = 2
    config["atlas"]["data_dir"] = atlas_data_dir
    config["methods"] = {
        "majority": {"stages": ["fit"]},
        "logreg_fc": {"stages": ["fit"]},
        "brainmass": {"stages": ["pretrain", "finetune"]},
    }
    every = ["majority", "logreg_fc", "brainmass"]
    config["curves"] = {"fractions": [0.25, 0.5, 1.0], "methods": every, "in_report": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = _dry_run_jobs(tmp_path, "curves")
    assert jobs["curve_folds"] == 2
    assert jobs["curve_fit_baseline"] == 2 * 2 * 2  # methods x folds x fractions
    assert jobs["curve_train_stage"] == 2 * 2 * 2  # stages x folds x fractions
    # 100 % is the main run's stages
    assert jobs["fit_baseline"] == 2 * 2 and jobs["train_stage"] == 2 * 2
    assert jobs["curves_evaluate"] == 1 and "report" not in jobs
    default = _dry_run_jobs(tmp_path)
    assert not {"curve_folds", "curve_fit_baseline", "curve_train_stage", "curves"} & set(default)
    # curves.methods narrows the refitted methods
    config["curves"]["methods"] = ["logreg_fc"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = _dry_run_jobs(tmp_path, "curves")
    assert jobs["curve_fit_baseline"] == 2 * 2 and "curve_train_stage" not in jobs
    # curves.in_report: demo (the default): the demo's default target makes them for the
    # report, for curves.demo_methods when curves.methods is null
    config["curves"] = {"fractions": [0.25, 0.5, 1.0], "methods": None, "in_report": "demo"}
    # and brainmass pre-trained once on the demo's corpus beside it, as the demo's config has
    config["methods"]["brainmass_corpus"] = {
        "variant_of": "brainmass",
        "stages": ["pretrain", "finetune"],
        "pretrain_on": "demo_corpus",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    default = _dry_run_jobs(tmp_path)
    assert default["curves_evaluate"] == default["report"] == 1
    assert default["curve_fit_baseline"] == 2 * 2  # logreg_fc, not majority
    # brainmass's two stages and brainmass_corpus's fine-tuning, per fold and fraction
    assert default["curve_train_stage"] == (2 + 1) * 2 * 2
    # the corpus is made and pre-trained on once, for every fold and fraction
    assert default["demo_corpus"] == default["pretrain_corpus"] == 1


def test_report_shows_the_curves_once_made(curves, cohort, tmp_path):
    """build_report adds the section when curves.tsv is given and builds without it."""
    from brainfuse.evaluate import evaluate
    from brainfuse.report.index_page import ReportInputs, build_report

    folds, labels = cohort
    rng = np.random.default_rng(1)
    predictions = [
        _write_predictions(tmp_path / f"{m}.tsv", folds, labels, m, 0.8, rng)
        for m in ("logreg_fc", "gcn_fc")
    ]
    qc = pd.DataFrame(
        {
            "modality": "fmri",
            "sample_id": [f"{s}_run-1" for s in labels],
            "status": "included",
            "reason": "",
            "subject": list(labels),
            "label": list(labels.values()),
            "site": "a",
        }
    )
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    evaluate(
        predictions,
        str(tmp_path / "predictions.tsv"),
        str(tmp_path / "per_fold.tsv"),
        str(tmp_path / "summary.tsv"),
        n_resamples=100,
    )
    curves.to_csv(tmp_path / "curves.tsv", sep="\t", index=False)
    figure = curves_figure(curves, tmp_path / "curves.png")
    pages = {}
    for name, curves_path in (("with", str(tmp_path / "curves.tsv")), ("without", None)):
        out = tmp_path / name / "index.html"
        build_report(
            ReportInputs(
                summary_path=str(tmp_path / "summary.tsv"),
                per_fold_path=str(tmp_path / "per_fold.tsv"),
                qc_path=str(tmp_path / "qc.tsv"),
                folds_path=str(tmp_path / "folds.tsv"),
                out_html=str(out),
                families={"logreg_fc": "baseline", "gcn_fc": "deep"},
                curves_path=curves_path,
                curves_figure=figure if curves_path else None,
                n_permutations=50,
            )
        )
        pages[name] = out.read_text()
    assert "<h2>Learning curves</h2>" in pages["with"]
    assert "Learning curves" not in pages["without"]


def test_section_compares_one_method_pre_trained_on_a_corpus_and_on_each_fold(curves):
    """A variant of gcn_fc (standing in for a corpus-pre-trained SSL method) beside it: the
    section reads both at the few-shot end and at 100 %, with what each was pre-trained on."""
    variant = curves[curves["method"] == "gcn_fc"].assign(
        method="gcn_corpus", balanced_accuracy=lambda t: t["balanced_accuracy"] * 0.9
    )
    both = pd.concat([curves, variant], ignore_index=True)
    pretraining = {
        "gcn_fc": "each fold's training subjects (unlabelled, in every fold)",
        "gcn_corpus": "corpus demo_corpus (40 subjects, 50 samples, unlabelled), once",
    }
    origins = {"gcn_fc": "gcn_fc", "gcn_corpus": "gcn_fc", "logreg_fc": "logreg_fc"}
    html = curves_section(both, origins=origins, pretraining=pretraining)
    (sentence,) = [p for p in html.split("<p>") if p.startswith("gcn_fc pre-trained on")]
    assert "gcn_corpus on corpus demo_corpus" in sentence
    assert "with 10% of the training subjects: gcn_corpus 0." in sentence
    assert "with 100% of the training subjects" in sentence
    means = curve_means(both).set_index(["method", "fraction"])
    assert f"gcn_fc {means.loc[('gcn_fc', 0.1), 'balanced_accuracy_mean']:.2f}" in sentence
    # the same pre-training (or no other configuration) gives no comparison
    same = dict.fromkeys(pretraining, "each fold's training subjects")
    assert "pre-trained on different data" not in curves_section(
        both, origins=origins, pretraining=same
    )
    assert "pre-trained on different data" not in curves_section(curves, origins=origins)
