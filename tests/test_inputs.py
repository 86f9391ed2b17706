"""Input discovery with snakebids on real BIDS names, and the demo layout."""

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from brainfuse.inputs import demo_runs, discover
from brainfuse.modalities import builtin_modalities
from brainfuse.modalities.eeg.modality import eeg_companions
from brainfuse.modalities.fmri.modality import bold_companions


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


@pytest.fixture
def dataset(tmp_path):
    fmriprep = tmp_path / "fmriprep"
    (fmriprep).mkdir()
    (fmriprep / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "x",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep"}],
            }
        )
    )
    for sub, ses, runs in (("01", "1", [1, 2]), ("02", "1", [1]), ("02", "2", [1])):
        for run in runs:
            func = fmriprep / f"sub-{sub}" / f"ses-{ses}" / "func"
            stem = f"sub-{sub}_ses-{ses}_task-rest_run-{run}"
            _touch(func / f"{stem}_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz")
            _touch(func / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
            _touch(func / f"{stem}_desc-confounds_timeseries.tsv")
    eeg_root = tmp_path / "eeg"
    (eeg_root / "dataset_description.json").parent.mkdir()
    (eeg_root / "dataset_description.json").write_text(
        json.dumps({"Name": "e", "BIDSVersion": "1.9.0"})
    )
    _touch(eeg_root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf")
    _touch(eeg_root / "sub-02" / "eeg" / "sub-02_task-rest_eeg.vhdr")
    (tmp_path / "participants.tsv").write_text("participant_id\tgroup\nsub-01\ta\nsub-02\tb\n")
    return tmp_path


def test_snakebids_discovery(dataset, tmp_path):
    from pathlib import Path

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    config["input"].update(
        demo=False,
        fmriprep_dir=str(dataset / "fmriprep"),
        eeg_dir=str(dataset / "eeg"),
        participants=str(dataset / "participants.tsv"),
        pybids_db_dir=str(tmp_path / "db"),
    )
    inputs = discover(config, builtin_modalities())
    bold = inputs.tables["fmri"]
    assert len(bold) == 4  # the other space is filtered out
    assert set(bold["source"]) == {"bold"}
    assert inputs.entities("fmri") == ["subject", "session", "task", "run"]
    assert all("MNI152NLin6Asym" in p for p in bold["path"])
    eeg = inputs.tables["eeg"]
    assert sorted(p.rsplit(".", 1)[1] for p in eeg["path"]) == ["edf", "vhdr"]
    assert inputs.tables["sc"].empty
    assert list((tmp_path / "db" / "bold").glob("*/layout_index.sqlite"))  # index kept


def test_companions():
    bold = (
        "d/sub-01/func/sub-01_task-rest_run-1_space-MNI152NLin6Asym_res-2_desc-preproc_bold.nii.gz"
    )
    comp = bold_companions(bold)
    assert comp["confounds"] == "d/sub-01/func/sub-01_task-rest_run-1_desc-confounds_timeseries.tsv"
    assert comp["mask"].endswith("run-1_space-MNI152NLin6Asym_res-2_desc-brain_mask.nii.gz")
    assert comp["sidecar"].endswith("desc-preproc_bold.json")
    eeg = eeg_companions("e/sub-01/eeg/sub-01_task-rest_run-2_eeg.vhdr")
    assert eeg["channels"].endswith("sub-01_task-rest_run-2_channels.tsv")
    assert eeg["electrodes"].endswith("sub-01_electrodes.tsv")


def test_demo_runs():
    runs = demo_runs(24, seed=0)
    assert len(runs) == 24 and sum(len(r) == 2 for r in runs.values()) == 6
    assert runs == demo_runs(24, seed=0)


def test_demo_layout(tmp_path):
    """The demo tables: XCP-D tables for the last subjects, one EEG and one SC file each."""
    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    config.update(results_dir=str(tmp_path))
    config["input"].update(demo_subjects=8, demo_xcpd_subjects=2)
    inputs = discover(config, builtin_modalities())
    fmri = inputs.tables["fmri"]
    xcpd = fmri.loc[fmri["source"] == "timeseries", "subject"].unique().tolist()
    assert xcpd == list(demo_runs(8, seed=0))[-2:]
    assert len(inputs.tables["eeg"]) == len(inputs.tables["sc"]) == 8
    assert inputs.participants == tmp_path / "demo_bids" / "participants.tsv"


def test_no_input_folder_names_the_modalities():
    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    config["input"]["demo"] = False
    with pytest.raises(ValueError, match="fmri, eeg, sc"):
        discover(config, builtin_modalities())


def _xcpd_tree(root: Path, table: str = "seg-4S156Parcels_stat-mean") -> Path:
    """A tiny XCP-D derivatives tree: two subjects' parcellated tables beside motion tables."""
    root.mkdir()
    description = {
        "Name": "x",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "XCP-D"}],
    }
    (root / "dataset_description.json").write_text(json.dumps(description))
    for sub in ("01", "02"):
        func = root / f"sub-{sub}" / "func"
        _touch(func / f"sub-{sub}_task-rest_space-MNI152NLin2009cAsym_{table}_timeseries.tsv")
        _touch(func / f"sub-{sub}_task-rest_desc-motion_timeseries.tsv")
    return root


# XCP-D names parcellated tables seg-<atlas>_stat-mean (0.7+) or atlas-<atlas> (earlier)
@pytest.mark.parametrize("naming", ["seg-4S156Parcels_stat-mean", "atlas-Glasser"])
def test_timeseries_filter_skips_motion_tables(tmp_path, naming):
    from brainfuse.core.bids import snakebids_table

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    config["input"]["pybids_db_dir"] = None
    table = snakebids_table(_xcpd_tree(tmp_path / "xcpd", naming), "timeseries", config, True)
    assert table["subject"].tolist() == ["01", "02"]
    assert all(p.endswith(f"{naming}_timeseries.tsv") for p in table["path"])


def test_pybids_index_written_once_and_reused(tmp_path, monkeypatch, caplog):
    from brainfuse.core.bids import pybids_db_path, snakebids_table

    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    config["input"]["pybids_db_dir"] = "db"  # relative, as in config.yaml
    root = _xcpd_tree(tmp_path / "xcpd")
    monkeypatch.chdir(tmp_path)
    db = pybids_db_path("db", "timeseries", root)
    assert db.is_absolute() and db.is_relative_to(tmp_path / "db" / "timeseries")
    assert not db.exists()

    with caplog.at_level(logging.DEBUG, logger="brainfuse"):
        first = snakebids_table(root, "timeseries", config, derivatives=True)
        index = db / "layout_index.sqlite"
        built = index.stat()
        second = snakebids_table(root, "timeseries", config, derivatives=True)
    assert index.stat().st_ino == built.st_ino  # not rebuilt
    assert index.stat().st_mtime_ns == built.st_mtime_ns  # not rewritten
    pd.testing.assert_frame_equal(first, second)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Absolute path must be provided" in m for m in messages)
    # the root has no derivatives/ folder: pybids' warning about it is one line per query, and
    # only at debug level (the root is itself the derivative dataset); the second call read the
    # table kept beside the index and did not query pybids at all
    pybids = [r for r in caplog.records if r.getMessage().startswith("pybids (timeseries)")]
    assert len(pybids) == 1 and "Derivative indexing" in pybids[0].getMessage()
    assert {r.levelno for r in pybids} == {logging.DEBUG}
    assert len(list(db.glob("brainfuse-table-*.tsv"))) == 1

    # another query of the same index is its own table; deleting the folder re-indexes
    config["input"]["participant_label"] = ["02"]
    only = snakebids_table(root, "timeseries", config, derivatives=True)
    assert only["subject"].tolist() == ["02"] and len(list(db.glob("brainfuse-table-*.tsv"))) == 2
    config["input"]["participant_label"] = []
    shutil.rmtree(tmp_path / "db")
    shutil.rmtree(root / "sub-01")
    assert snakebids_table(root, "timeseries", config, derivatives=True)["subject"].tolist() == [
        "02"
    ]

    other = _xcpd_tree(tmp_path / "other")
    assert pybids_db_path("db", "timeseries", other) != db  # another root, its own index
