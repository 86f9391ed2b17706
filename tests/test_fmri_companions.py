"""A BOLD run's missing companions and TR disagreements are recorded outcomes of that run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_fmri_step import N_VOLUMES, TR, _run, _write_run

from brainfuse.modalities.fmri.denoise import repetition_time


@pytest.fixture(autouse=True)
def _same_atlas(monkeypatch, atlas):
    monkeypatch.setattr("brainfuse.modalities.fmri.run.atlas_from_config", lambda cfg: atlas)


def _companion(bold: Path, suffix: str) -> Path:
    return Path(str(bold).replace("_desc-preproc_bold.nii.gz", suffix))


def _outcome(outputs: dict[str, str]) -> dict:
    """The run's QC record, after checking that every output was written."""
    assert all(Path(p).exists() for p in outputs.values())
    return json.loads(Path(outputs["ts.json"]).read_text())


def test_missing_confounds_excludes_the_run_naming_the_file(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    confounds.unlink()
    qc = _outcome(_run(tmp_path, atlas, bold, confounds))
    assert qc["status"] == "excluded"
    assert qc["reason"].startswith(f"{confounds.name}: confounds file is missing")


def test_missing_mask_excludes_the_run_naming_the_file(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    mask = _companion(bold, "_desc-brain_mask.nii.gz")
    mask.unlink()
    out = _run(tmp_path, atlas, bold, confounds)
    qc = _outcome(out)
    assert qc["status"] == "excluded"
    assert qc["reason"].startswith(f"{mask.name}: brain mask is missing")
    assert len(pd.read_csv(out["ts.tsv"], sep="\t")) == 0


def _disagreeing_sidecar(bold: Path, seconds: float) -> Path:
    sidecar = _companion(bold, "_desc-preproc_bold.json")
    sidecar.write_text(json.dumps({"RepetitionTime": seconds}))
    return sidecar


def test_tr_disagreement_excludes_with_both_values_by_default(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    sidecar = _disagreeing_sidecar(bold, 2.5)
    qc = _outcome(_run(tmp_path, atlas, bold, confounds))
    assert qc["status"] == "excluded"
    assert qc["reason"].startswith(f"{sidecar.name}: RepetitionTime 2.5 s in {sidecar.name}")
    assert f"{TR:g} s in the NIfTI header of {bold.name}" in qc["reason"]


def test_tr_disagreement_uses_the_header_when_configured(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    _disagreeing_sidecar(bold, 2.5)
    qc = _outcome(_run(tmp_path, atlas, bold, confounds, tr_source="header"))
    assert qc["status"] == "included"
    assert qc["tr"] == TR and qc["tr_source"] == "header"
    assert any("2.5 s" in w and "used the header" in w for w in qc["warnings"])
    # the TR used sets the clean time: every volume kept at the header's TR
    assert qc["clean_seconds"] == pytest.approx(qc["n_kept"] * TR)


def test_difference_within_tolerance_keeps_the_sidecar_tr_without_warning(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    _disagreeing_sidecar(bold, TR + 0.005)
    qc = _outcome(_run(tmp_path, atlas, bold, confounds))
    assert qc["status"] == "included" and qc["tr_source"] == "sidecar"
    assert qc["tr"] == TR + 0.005
    assert not any("RepetitionTime" in w for w in qc["warnings"])


def test_missing_sidecar_takes_the_header_tr_and_says_so(tmp_path, atlas):
    bold, confounds, _ = _write_run(tmp_path, atlas)
    sidecar = _companion(bold, "_desc-preproc_bold.json")
    sidecar.unlink()
    qc = _outcome(_run(tmp_path, atlas, bold, confounds))
    assert qc["status"] == "included" and qc["n_volumes"] == N_VOLUMES
    assert qc["tr"] == TR and qc["tr_source"] == "header"
    assert any(sidecar.name in w for w in qc["warnings"])


def test_repetition_time_sidecar_choice_and_headerless_runs(tmp_path):
    sidecar = tmp_path / "run_bold.json"
    sidecar.write_text(json.dumps({"RepetitionTime": 0.8}))
    chosen = repetition_time(sidecar, 2.0, bold="run_bold.nii.gz", tr_source="sidecar", tolerance=0)
    assert (chosen.seconds, chosen.source) == (0.8, "sidecar") and "2 s" in chosen.warning
    # a header without a TR (3D or zero zoom) never counts as a disagreement
    for header in (None, float("nan"), 0.0):
        agreed = repetition_time(sidecar, header, bold="b.nii", tr_source="exclude", tolerance=0)
        assert (agreed.seconds, agreed.source, agreed.warning) == (0.8, "sidecar", "")


def test_companions_are_declared_only_where_they_exist_outside_the_demo(tmp_path):
    from brainfuse.modalities.fmri.modality import FMRI, bold_companions

    bold = tmp_path / "sub-01_task-rest_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    expected = bold_companions(str(bold))
    Path(expected["confounds"]).write_text("trans_x\n0\n")
    row = pd.Series({"source": "bold", "path": str(bold)})
    real = FMRI().sample_inputs(row, {"input": {"demo": False}})
    assert real == {
        "bold": str(bold),
        "confounds": expected["confounds"],
        "mask": [],
        "sidecar": [],
    }
    # the demo writes every companion in an earlier job, so they are planned files there
    demo = FMRI().sample_inputs(row, {"input": {"demo": True}})
    assert demo == {"bold": str(bold), **expected}
