"""Input discovery with snakebids on real BIDS names, and the demo layout."""

import json
from pathlib import Path

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
    assert (tmp_path / "db" / "bold").exists()  # pybids index persisted for reuse


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
