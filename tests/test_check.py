"""The planning check: files kept per input folder, participants, folds and methods."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainfuse.check import check_plan
from brainfuse.config import read_config
from brainfuse.input_scan import file_entities, scan_filter
from brainfuse.methods.catalog import default_catalog
from brainfuse.modalities import builtin_modalities

ROOT = Path(__file__).parents[1]
SPACE = "MNI152NLin6Asym"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def _derivative(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    description = {"Name": name, "BIDSVersion": "1.9.0", "DatasetType": "derivative"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    return root


def _xcpd(tmp_path: Path, subjects: list[str]) -> Path:
    """XCP-D-like region tables (planning reads names only), with motion tables beside them."""
    root = _derivative(tmp_path / "xcpd", "XCP-D")
    for sub in subjects:
        func = root / f"sub-{sub}" / "func"
        stem = f"sub-{sub}_task-rest_space-{SPACE}"
        _touch(func / f"{stem}_seg-Schaefer100_stat-mean_timeseries.tsv")
        _touch(func / f"sub-{sub}_task-rest_desc-motion_timeseries.tsv")
    return root


def _participants(tmp_path: Path, rows: dict[str, str], column: str = "group") -> Path:
    path = tmp_path / "participants.tsv"
    lines = [f"participant_id\t{column}"] + [f"sub-{s}\t{g}" for s, g in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, methods=("logreg_fc",), **input_keys) -> dict:
    return {
        "results_dir": str(tmp_path / "results"),
        "input": {"demo": False, "pybids_db_dir": None, **input_keys},
        "cv": {"n_folds": 2},
        "methods": {m: {"stages": list(default_catalog()[m].stages)} for m in methods},
    }


def _check(raw: dict):
    return check_plan(read_config(raw), builtin_modalities(), default_catalog())


def _groups(n_patient: int, n_control: int) -> dict[str, str]:
    labels = ["patient"] * n_patient + ["control"] * n_control
    return {f"{i + 1:02d}": g for i, g in enumerate(labels)}


def test_file_entities_reads_bids_names():
    path = "/d/sub-01/func/sub-01_task-rest_run-2_space-T1w_seg-X_desc-preproc_bold.nii.gz"
    assert file_entities(path) == {
        "subject": "01",
        "task": "rest",
        "run": "2",
        "space": "T1w",
        "segmentation": "X",
        "desc": "preproc",
        "suffix": "bold",
        "extension": ".nii.gz",
        "datatype": "func",
    }


def test_bold_only_in_another_space_is_named_at_planning(tmp_path):
    fmriprep = _derivative(tmp_path / "fmriprep", "fMRIPrep")
    for sub in ("01", "02", "03"):
        func = fmriprep / f"sub-{sub}" / "func"
        _touch(func / f"sub-{sub}_task-rest_space-T1w_desc-preproc_bold.nii.gz")
        _touch(func / f"sub-{sub}_task-rest_desc-confounds_timeseries.tsv")
    _participants(tmp_path, _groups(2, 1))
    raw = _config(
        tmp_path,
        fmriprep_dir=str(fmriprep),
        participants=str(tmp_path / "participants.tsv"),
    )
    plan = _check(raw)
    assert plan.errors == [
        f"no bold file kept under {fmriprep}; not kept: 3 files have space-T1w "
        f"(filters.bold.space is {SPACE})"
    ]
    with pytest.raises(Exception, match="space-T1w"):
        plan.raise_errors()


def test_scan_counts_kept_files_and_near_misses_by_key(tmp_path):
    root = _xcpd(tmp_path, ["01", "02"])
    _touch(root / "sub-03" / "func" / "sub-03_task-rest_space-T1w_stat-mean_timeseries.tsv")
    filters = read_config({"methods": {"majority": {"stages": ["fit"]}}}).filters["timeseries"]
    scan = scan_filter(root, "timeseries", {**filters, "space": SPACE})
    assert scan.matched == 2
    # desc-motion tables are near misses of the desc filter; the T1w table of the space filter
    assert scan.turned_away == {
        "have desc-motion (filters.timeseries.desc is absent)": 2,
        f"have space-T1w (filters.timeseries.space is {SPACE})": 1,
    }


def test_participants_rows_and_inputs_that_do_not_meet_are_listed(tmp_path):
    xcpd = _xcpd(tmp_path, [f"{i:02d}" for i in range(1, 10)])
    rows = {**_groups(4, 4), "10": "control"}  # 09 has no row, 10 no inputs
    participants = _participants(tmp_path, rows)
    plan = _check(_config(tmp_path, xcpd_dir=str(xcpd), participants=str(participants)))
    assert plan.errors == []
    assert "1 subjects have inputs but no row in participants.tsv (excluded, no label): 09" in (
        plan.warnings
    )
    assert "1 participants have no inputs: 10" in plan.warnings
    assert plan.class_sizes == {"control": 4, "patient": 4}
    assert plan.n_folds == 2 and plan.samples["fmri"] == 9


@pytest.mark.parametrize(
    ("rows", "label", "message"),
    [
        (_groups(4, 4), {"column": "diagnosis"}, "label.column 'diagnosis' is not a column"),
        (_groups(6, 0), {}, "label.column 'group' gives 1 class(es) among the subjects with"),
        (_groups(4, 4), {"positive": "asd"}, "label.positive 'asd' is not a value of"),
    ],
)
def test_label_problems_stop_planning_naming_the_key(tmp_path, rows, label, message):
    xcpd = _xcpd(tmp_path, list(rows))
    participants = _participants(tmp_path, rows)
    raw = _config(tmp_path, xcpd_dir=str(xcpd), participants=str(participants))
    raw["label"] = label
    plan = _check(raw)
    assert len(plan.errors) == 1 and message in plan.errors[0]


def test_too_many_folds_for_the_smallest_class_stops_with_counts(tmp_path):
    rows = _groups(6, 3)
    xcpd = _xcpd(tmp_path, list(rows))
    raw = _config(tmp_path, xcpd_dir=str(xcpd), participants=str(_participants(tmp_path, rows)))
    raw["cv"] = {"n_folds": 5}
    plan = _check(raw)
    assert len(plan.errors) == 1
    assert "cv.n_folds=5" in plan.errors[0] and "control 3, patient 6" in plan.errors[0]
    raw["cv"] = {"n_folds": "auto"}
    plan = _check(raw)
    assert plan.errors == [] and plan.n_folds == 3
    assert "outer folds: 3 (cv.n_folds: auto)" in plan.text()


def test_harmonise_and_confound_columns_are_checked_at_planning(tmp_path):
    rows = _groups(4, 4)
    xcpd = _xcpd(tmp_path, list(rows))
    raw = _config(tmp_path, xcpd_dir=str(xcpd), participants=str(_participants(tmp_path, rows)))
    plan = _check(raw)  # default covariates [age, sex] are not in this table: diagnostics only
    assert plan.errors == []
    (warning,) = [w for w in plan.warnings if w.startswith("harmonise.covariates")]
    assert "['age', 'sex']" in warning and "participants.tsv (group, participant_id)" in warning
    assert "diagnostics' in-fold ComBat goes without them" in warning
    raw["harmonise"] = {"method": "combat", "covariates": ["participant_id", "sex"]}
    raw["confounds"] = ["mean_fd", "AGE"]  # mean_fd: a per-sample QC field of fMRI
    plan = _check(raw)
    assert [e.split(" are ")[0] for e in plan.errors] == [
        "harmonise.covariates ['sex']",
        "confounds ['AGE']",
    ]
    raw["harmonise"]["batch"] = "scanner"
    assert "harmonise.batch 'scanner' is neither" in _check(raw).errors[0]


def test_methods_without_their_modality_are_listed_with_the_reason(tmp_path):
    rows = _groups(4, 4)
    xcpd = _xcpd(tmp_path, list(rows))
    raw = _config(
        tmp_path,
        methods=("logreg_fc", "logreg_eeg"),
        xcpd_dir=str(xcpd),
        participants=str(_participants(tmp_path, rows)),
    )
    plan = _check(raw)
    assert plan.run_methods == {"logreg_fc": ["fit"]}
    assert plan.skipped_methods == {
        "logreg_eeg": "needs eeg data, which this dataset does not have"
    }
    assert "skipped logreg_eeg: needs eeg data" in plan.text()


def test_brainfuse_check_and_a_dry_run_print_the_check_and_stop_on_errors(tmp_path):
    rows = _groups(4, 4)
    xcpd = _xcpd(tmp_path, list(rows))
    raw = _config(tmp_path, xcpd_dir=str(xcpd), participants=str(_participants(tmp_path, rows)))
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(raw))
    bad.write_text(yaml.safe_dump({**raw, "label": {"column": "diagnosis"}}))
    cli = [sys.executable, "-m", "brainfuse.cli", "check", "--configfile"]
    ok = subprocess.run([*cli, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "8 files kept in" in ok.stdout
    assert "subjects per class: control 4, patient 4" in ok.stdout
    failed = subprocess.run([*cli, str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and "label.column 'diagnosis'" in failed.stdout
    dry = subprocess.run(
        ["snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--configfile", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    output = dry.stdout + dry.stderr
    assert dry.returncode != 0
    assert "planning check failed" in output and "label.column 'diagnosis'" in output
    assert "Job stats" not in output


def test_a_folder_of_roi_tables_lists_rows_and_files_that_do_not_meet(tmp_path):
    """ABIDE's layout: tables named from a phenotype column, outside BIDS."""
    folder = tmp_path / "rois"
    folder.mkdir()
    rows = ["FILE_ID,SUB_ID,DX_GROUP,SITE_ID"]
    for i in range(1, 11):
        site = "PITT" if i % 2 else "NYU"
        rows.append(f"{site}_{i:07d},{i},{1 + i % 2},{site}")
        if i != 10:  # subject 10's table is missing
            (folder / f"{site}_{i:07d}_rois_cc200.1D").write_text("#1\t#2\n0.1\t0.2\n")
    (folder / "KKI_0000099_rois_cc200.1D").write_text("#1\t#2\n0.1\t0.2\n")  # no row
    (tmp_path / "phenotypic.csv").write_text("\n".join(rows) + "\n")
    raw = _config(
        tmp_path,
        roi_tables={"dir": str(folder), "pattern": "{FILE_ID}_rois_cc200.1D"},
        participants=str(tmp_path / "phenotypic.csv"),
        participant_column="SUB_ID",
        timeseries_tr=2.0,
    )
    raw["label"] = {"column": "DX_GROUP", "positive": "1", "site_column": "SITE_ID"}
    plan = _check(raw)
    assert plan.errors == []
    (scan,) = plan.scans
    assert (scan.kind, scan.matched) == ("roi_tables", 9)
    assert scan.lines() == ["1 files name no participants row (KKI_0000099_rois_cc200.1D)"]
    assert "1 participants have no inputs: 10" in plan.warnings
    assert plan.class_sizes == {"1": 4, "2": 5} and plan.sites == {"NYU", "PITT"}


def test_methods_pretrained_once_say_where_their_encoder_comes_from():
    from types import SimpleNamespace

    from brainfuse.check import PlanCheck, _pretrained_once

    methods = {
        "brainmass": SimpleNamespace(pretrain_on=None, init=None),
        "brainmass_corpus": SimpleNamespace(pretrain_on="demo_corpus", init=None),
        "brainmae_init": SimpleNamespace(pretrain_on=None, init="enc/encoder.bin"),
        "dfc_corpus": SimpleNamespace(pretrain_on="/data/cache", init=None),
    }
    run = {"brainmass": ["pretrain", "finetune"], "brainmass_corpus": ["finetune"]}
    run["brainmae_init"] = ["finetune"]
    once = _pretrained_once(methods, run)
    assert once == {
        "brainmass_corpus": "pretrain once on demo_corpus",
        "brainmae_init": "encoder from enc/encoder.bin",
    }  # dfc_corpus does not run
    text = " ".join(PlanCheck(run_methods=run, pretrained_once=once).text().split())
    assert "brainmass (pretrain, finetune)" in text
    assert "brainmass_corpus (pretrain once on demo_corpus, then finetune per fold)" in text
    assert "brainmae_init (encoder from enc/encoder.bin, then finetune per fold)" in text
