"""Pre-training once on an unlabelled corpus: every fold fine-tunes from the same encoder, and a
corpus holding a subject of the study is refused (brainfuse.methods.pretrained)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning import Callback

from brainfuse.check import check_plan
from brainfuse.cli import main
from brainfuse.config import read_config
from brainfuse.core.cache import read_cache, write_cache
from brainfuse.core.errors import ConfigError
from brainfuse.demo.corpus import make_demo_corpus
from brainfuse.demo.participants import choose_fmri_parcels
from brainfuse.folds import read_folds, subjects_of
from brainfuse.methods.catalog import default_catalog
from brainfuse.methods.pretrained import (
    FORMAT,
    CorpusJob,
    corpus_subjects,
    list_encoders,
    method_corpus,
    pretrain_on_corpus,
    pretraining_summary,
    read_manifest,
)
from brainfuse.methods.request import StageOutputs, StageRequest
from brainfuse.methods.torch.runner import run_torch_stage
from brainfuse.methods.torch.synthetic import write_synthetic_caches
from brainfuse.modalities import builtin_modalities
from brainfuse.provenance import LeakageError, check_provenance, file_record, stage_manifest
from brainfuse.report.index_page import _pretraining_section

torch.set_num_threads(1)

ROOT = Path(__file__).parents[1]
CATALOG = default_catalog()
#: A tiny BrainMAE (as in test_provenance): a few seconds per stage on one core.
MAE = {
    "num_threads": 1,
    "d_model": 16,
    "d_embed": 8,
    "n_heads": 2,
    "n_layers": 1,
    "dim_feedforward": 32,
    "length": 60,
    "segment": 10,
    "decoder_dim": 8,
    "decoder_heads": 2,
    "per_stage": {"pretrain": {"epochs": 2, "batch_size": 8}, "finetune": {"epochs": 2}},
}


def _corpus(source: Path, out: Path, prefix: str, keep: list[str] | None = None) -> Path:
    """The fMRI cache at ``source`` as an unlabelled corpus: subjects renamed ``prefix + id``
    (``keep``: these subjects keep their label, as if they were in both datasets)."""
    cache = read_cache(source)
    table = cache.table.copy()
    renamed = [s if s in (keep or []) else f"{prefix}{s}" for s in table["subject"].astype(str)]
    table["sample_id"] = [f"sub-{s}_task-rest" for s in renamed]
    table["subject"], table["label"] = renamed, None
    out.mkdir(parents=True, exist_ok=True)
    write_cache(out / "fmri.parquet", table, cache.arrays, cache.metadata)
    return out / "fmri.parquet"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_synthetic_caches(
        tmp_path_factory.mktemp("study"), n_subjects=24, n_nodes=20, n_timepoints=(70, 90)
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """16 other subjects: the same generator with another seed, labels dropped."""
    other = write_synthetic_caches(
        tmp_path_factory.mktemp("other"), n_subjects=16, n_nodes=20, n_timepoints=(70, 90), seed=1
    )
    return _corpus(Path(other["fmri"]), tmp_path_factory.mktemp("corpus"), "c")


@pytest.fixture(scope="module")
def encoder(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "pretrained" / "brainmae"
    job = CorpusJob(
        method="brainmae",
        corpus={"fmri": str(corpus)},
        source=str(corpus.parent),
        seed=0,
        encoder=str(out / "encoder.bin"),
        manifest=str(out / "manifest.json"),
        checkpoint_dir=str(out.parent / "ckpt"),
        params=MAE,
    )
    pretrain_on_corpus(job, CATALOG)
    return out / "encoder.bin"


class InitialWeights(Callback):
    """The network's tensors when training starts (after the encoder was loaded)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def _finetune(data, encoder: Path, out: Path, fold: int) -> InitialWeights:
    initial = InitialWeights()
    request = StageRequest(
        method="brainmae",
        stage="finetune",
        fold=fold,
        cache_paths={"fmri": data["fmri"]},
        folds_path=data["folds"],
        positive="patient",
        seed=0,
        outputs=StageOutputs(
            str(out / "model.bin"), str(out / "metrics.json"), str(out / "predictions.tsv")
        ),
        params=MAE,
        previous=str(encoder),
        checkpoint_dir=str(out / "ckpt"),
        pretrained=str(encoder.with_name("manifest.json")),
    )
    run_torch_stage(request, CATALOG, callbacks=[initial])
    return initial


def test_the_corpus_encoder_and_its_manifest(encoder, corpus):
    manifest = read_manifest(encoder)
    subjects = corpus_subjects({"fmri": str(corpus)})
    assert manifest["format"] == FORMAT and manifest["method"] == "brainmae"
    assert manifest["subjects"]["unlabelled_pretraining"] == subjects
    assert manifest["n_subjects"] == 16 == len(subjects) and manifest["n_samples"] == 16
    assert manifest["corpus"]["caches"]["fmri"] == file_record(corpus)
    assert manifest["encoder"] == file_record(encoder)
    assert manifest["seed"] == 0 and manifest["steps"] > 0
    saved = torch.load(encoder, map_location="cpu", weights_only=True)
    assert saved["stage"] == "pretrain" and not saved["supervised"] and saved["n_nodes"] == 20


def test_two_folds_fine_tune_from_the_same_encoder(data, encoder, tmp_path):
    saved = torch.load(encoder, map_location="cpu", weights_only=True)["state_dict"]
    folds = read_folds(data["folds"])
    initial = {}
    for fold in (0, 1):
        out = tmp_path / f"fold-{fold}"
        initial[fold] = _finetune(data, encoder, out, fold).state
        manifest = json.loads((out / "provenance.json").read_text())
        # The corpus subjects are listed as unlabelled pre-training, and no test subject.
        corpus = set(read_manifest(encoder)["subjects"]["unlabelled_pretraining"])
        assert set(manifest["subjects"]["unlabelled_pretraining"]) == corpus
        assert manifest["inputs"]["previous"] == file_record(encoder)
        assert manifest["inputs"]["init"]["manifest"] == read_manifest(encoder)
        check_provenance(manifest, folds)
    # Both folds start from the encoder's tensors, so from the same weights.
    loaded = [k for k, v in saved.items() if k in initial[0] and initial[0][k].shape == v.shape]
    assert len(loaded) > 5
    for key in loaded:
        assert torch.equal(initial[0][key], saved[key]) and torch.equal(initial[1][key], saved[key])


def test_a_corpus_with_a_test_subject_fails_the_provenance_check(data, encoder, tmp_path):
    folds = read_folds(data["folds"])
    intruder = sorted(subjects_of(folds, 0, "test"))[0]
    leaked = read_manifest(encoder)
    leaked["subjects"]["unlabelled_pretraining"].append(intruder)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(leaked))
    manifest = stage_manifest(
        method="brainmae",
        stage="finetune",
        fold=0,
        seed=0,
        params=MAE,
        cache_paths={"fmri": data["fmri"]},
        folds_path=data["folds"],
        previous=str(encoder),
        subjects={"test": subjects_of(folds, 0, "test")},
        pretrained=str(path),
    )
    with pytest.raises(LeakageError, match=f"unlabelled_pretraining: {intruder}"):
        check_provenance(manifest, folds)


def _demo_config(tmp_path: Path, method: dict) -> dict:
    return {
        "results_dir": str(tmp_path / "results"),
        "cv": {"n_folds": 3},
        "methods": {"logreg_fc": {"stages": ["fit"]}, "brainmae": method},
    }


def _plan(raw: dict):
    return check_plan(read_config(raw), builtin_modalities(), CATALOG, scan_roots=False)


def test_planning_refuses_a_corpus_holding_study_subjects(data, tmp_path):
    # The demo's subjects are 01 .. 24; "03" and "07" are in both datasets.
    corpus = _corpus(Path(data["fmri"]), tmp_path / "corpus", "c", keep=["03", "07"])
    method = {"stages": ["pretrain", "finetune"], "pretrain_on": str(corpus)}
    plan = _plan(_demo_config(tmp_path, method))
    assert any(
        "methods.brainmae.pretrain_on: 2 subjects of this study" in e and e.endswith(": 03, 07")
        for e in plan.errors
    ), plan.errors
    clean = _corpus(Path(data["fmri"]), tmp_path / "clean", "c")
    plan = _plan(_demo_config(tmp_path, {**method, "pretrain_on": str(clean)}))
    assert not plan.errors and plan.run_methods["brainmae"] == ["finetune"]


def test_planning_refuses_a_missing_corpus_or_encoder_and_a_bad_stage_list(tmp_path):
    method = {"stages": ["pretrain", "finetune"], "pretrain_on": str(tmp_path / "none")}
    plan = _plan(_demo_config(tmp_path, method))
    assert any("methods.brainmae.pretrain_on" in e for e in plan.errors), plan.errors
    method = {"stages": ["pretrain", "finetune"], "init": str(tmp_path / "encoder.bin")}
    plan = _plan(_demo_config(tmp_path, method))
    assert any("methods.brainmae.init" in e and "manifest" in e for e in plan.errors)
    with pytest.raises(ConfigError, match="must start with pretrain"):
        CATALOG.check({"brainmae": {"stages": ["finetune"], "pretrain_on": "x"}})
    with pytest.raises(ConfigError, match="not both"):
        CATALOG.check(
            {"brainmae": {"stages": ["pretrain", "finetune"], "init": "x", "pretrain_on": "y"}}
        )


def test_an_init_encoder_is_checked_against_the_study(encoder, tmp_path):
    """init: the encoder's manifest lists its corpus (c00 .. c15): no demo subject."""
    method = {"stages": ["pretrain", "finetune"], "init": str(encoder)}
    plan = _plan(_demo_config(tmp_path, method))
    assert not plan.errors and plan.run_methods["brainmae"] == ["finetune"]


def test_a_dry_run_plans_one_pretraining_and_no_per_fold_one(corpus, tmp_path):
    config = {
        "cv": {"n_folds": 3},
        "methods": {
            "logreg_fc": {"stages": ["fit"]},
            "brainmae": {"stages": ["pretrain", "finetune"], "pretrain_on": str(corpus.parent)},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
         "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = {
        parts[0]: int(parts[1])
        for line in output.splitlines()
        if len(parts := line.split()) == 2 and parts[1].isdigit()
    }
    assert counts["pretrain_corpus"] == 1, counts
    assert counts["train_stage"] == 3  # brainmae's finetune in each fold, nothing else
    assert "brainmae/fold-0/pretrain" not in output


def test_the_cli_lists_and_inspects_encoders(encoder, capsys):
    root = encoder.parents[1]
    assert main(["pretrained", "list", str(root)]) == 0
    listed = capsys.readouterr().out
    assert "brainmae" in listed and str(encoder) in listed and " 16 " in listed
    assert list_encoders(root)[0]["n_subjects"] == 16
    assert main(["pretrained", "inspect", str(encoder)]) == 0
    assert json.loads(capsys.readouterr().out) == read_manifest(encoder)
    assert main(["pretrained", "list", str(root / "nothing")]) == 0
    assert "no pre-trained encoder" in capsys.readouterr().out


def test_the_report_says_what_each_encoder_was_pre_trained_on(encoder, corpus):
    manifest = str(encoder.with_name("manifest.json"))
    two = ["pretrain", "finetune"]
    on_corpus = pretraining_summary(two, manifest, None)
    assert on_corpus.startswith(f"corpus {corpus.parent} (16 subjects, 16 samples, unlabelled)")
    assert pretraining_summary(two, manifest, str(encoder)).startswith(f"init file {encoder}")
    assert pretraining_summary(two, None, None).startswith("each fold's training subjects")
    assert pretraining_summary(["fit"], None, None) == ""
    section = "".join(
        _pretraining_section({"brainmae": on_corpus, "logreg_fc": ""}, {"brainmae": "b.html"})
    )
    assert "<a href='b.html'>brainmae</a>" in section and "16 subjects" in section
    assert "logreg_fc" not in section
    assert _pretraining_section({"logreg_fc": ""}, {}) == []


def test_pre_training_refuses_a_corpus_holding_a_study_subject(corpus, tmp_path):
    """Checked again when the job runs: a corpus a rule makes is not there at planning."""
    job = CorpusJob(
        method="brainmae",
        corpus={"fmri": str(corpus)},
        source="demo_corpus",
        seed=0,
        encoder=str(tmp_path / "encoder.bin"),
        manifest=str(tmp_path / "manifest.json"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        params=MAE,
        study_subjects=["01", "c03"],
    )
    with pytest.raises(ValueError, match="1 subjects of this study are in the corpus demo_corpus"):
        pretrain_on_corpus(job, CATALOG)
    assert not (tmp_path / "encoder.bin").exists()


def test_the_demo_corpus_is_other_unlabelled_subjects_of_the_study_population(
    atlas, atlas_data_dir, tmp_path
):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["atlas"]["data_dir"] = atlas_data_dir  # the tables are read with the run's atlas
    out = tmp_path / "demo_corpus"
    path = make_demo_corpus(out, atlas, config["fmri"], config["atlas"], n_subjects=12, seed=0)
    cache = read_cache(path)
    # every run kept, none labelled, no study subject (those are 01, 02, ...)
    assert cache.table["label"].isna().all()
    assert set(cache.table["subject"]) == {f"c{i:02d}" for i in range(1, 13)}
    assert "group" not in pd.read_csv(out / "participants.tsv", sep="\t").columns
    assert not list(out.glob("derivatives-*"))  # the per-run outputs are gone
    # the study's population: its planted patient edges are stronger in the corpus's patients
    truth = json.loads((out / "corpus_truth.json").read_text())["subjects"]
    idx = [cache.metadata["roi_names"].index(p) for p in choose_fmri_parcels(atlas)]
    upper = np.triu_indices(len(idx), 1)
    planted = np.array([fc[np.ix_(idx, idx)][upper].mean() for fc in cache.arrays["fc"]])
    patient = (cache.table["subject"].map(lambda s: truth[s]["group"]) == "patient").to_numpy()
    assert 0 < patient.sum() < len(patient)
    assert planted[patient].mean() - planted[~patient].mean() > 0.15
    # the demo plans it when a method pre-trains on it, and the planning check accepts it
    raw = _demo_config(tmp_path, {"stages": ["pretrain", "finetune"]})
    raw["methods"]["brainmae_corpus"] = {
        "variant_of": "brainmae",
        "stages": ["pretrain", "finetune"],
        "pretrain_on": "demo_corpus",
    }
    catalog = default_catalog()
    catalog.add_variants({"brainmae_corpus": "brainmae"})
    plan = check_plan(read_config(raw), builtin_modalities(), catalog, scan_roots=False)
    assert not plan.errors and plan.run_methods["brainmae_corpus"] == ["finetune"]


def test_a_method_on_the_demo_corpus_is_skipped_outside_the_demo(tmp_path):
    """A config that extends the checkout's config.yaml keeps its brainmass_corpus: on the
    user's own data it is skipped with the reason, not an error."""
    from brainfuse.check import PlanCheck, _skip_demo_corpus_methods

    method = {"stages": ["pretrain", "finetune"], "pretrain_on": "demo_corpus"}
    raw = _demo_config(tmp_path, method)
    raw["input"] = {"demo": False, "fmriprep_dir": str(tmp_path)}
    check = PlanCheck()
    check.run_methods = {"logreg_fc": ["fit"], "brainmae": ["finetune"]}
    _skip_demo_corpus_methods(check, read_config(raw))
    assert list(check.run_methods) == ["logreg_fc"]
    assert "pre-trains on the demo's corpus" in check.skipped_methods["brainmae"]
    with pytest.raises(ConfigError, match="demo_corpus is the demo's corpus"):
        method_corpus(CATALOG["brainmae"], "demo_corpus", None)
