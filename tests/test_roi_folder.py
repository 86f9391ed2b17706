"""A non-BIDS folder of ROI tables (ABIDE-like: AFNI .1D named by FILE_ID, phenotypes in a CSV,
a TR per site): discovery, TR and motion per subject, exclusions, and the fMRI cache."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfuse.config import SCHEMA_PATH, validate
from brainfuse.core.errors import ConfigError
from brainfuse.core.samples import attach_labels, read_participants
from brainfuse.modalities.fmri.modality import FMRI
from brainfuse.modalities.fmri.roi_folder import unmatched_roi_tables

N_PARCELS = 6
#: FILE_ID, SUB_ID, SITE_ID, DX_GROUP, func_mean_fd; site C has no TR, 0050005 has no file
ROWS = [
    ("SiteA_0050001", "50001", "A", "1", 0.10),
    ("SiteA_0050002", "50002", "A", "2", 0.25),
    ("SiteB_0050003", "50003", "B", "1", 0.05),
    ("SiteB_0050004", "50004", "B", "2", 0.40),
    ("SiteC_0050005", "50005", "C", "1", 0.20),
    ("SiteC_0050006", "50006", "C", "2", 0.30),
]


@pytest.fixture
def abide_like(tmp_path) -> dict:
    """The folder, its phenotypes, a site TR table and a 6-parcel atlas with a label table."""
    image = np.zeros((3, 3, 4), dtype=np.int16)
    image.flat[: 6 * 6] = np.repeat(np.arange(1, N_PARCELS + 1), 6)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "atlas.nii.gz")
    labels = pd.DataFrame({"index": range(1, N_PARCELS + 1)})
    labels["name"] = [f"roi{k}" for k in labels["index"]]
    labels.to_csv(tmp_path / "atlas_labels.tsv", sep="\t", index=False)

    rois = tmp_path / "rois_cc6"
    rois.mkdir()
    rng = np.random.default_rng(0)
    for file_id, *_ in ROWS[:4] + ROWS[5:]:
        data = rng.normal(size=(150, N_PARCELS))
        data[:, 3] = 0.0  # no coverage, as some ABIDE sites have
        header = "\t".join(f"#{k}" for k in range(1, N_PARCELS + 1))
        lines = ["\t".join(f"{v:.5f}" for v in row) for row in data]
        (rois / f"{file_id}_rois_cc6.1D").write_text("\n".join([header, *lines]) + "\n")
    (rois / "Stray_0059999_rois_cc6.1D").write_text("#1\n0\n")
    (rois / "notes.txt").write_text("not a table\n")

    columns = ["FILE_ID", "SUB_ID", "SITE_ID", "DX_GROUP", "func_mean_fd"]
    pd.DataFrame(ROWS, columns=columns).to_csv(tmp_path / "phenotypic.csv", index=False)
    pd.DataFrame({"site": ["A", "B"], "tr": [2.0, 2.5]}).to_csv(
        tmp_path / "site_tr.tsv", sep="\t", index=False
    )
    config = validate(
        {
            "methods": {"logreg_fc": {"stages": ["fit"]}},
            "input": {
                "demo": False,
                "roi_tables": {"dir": str(rois), "pattern": "{FILE_ID}_rois_cc6.1D"},
                "participants": str(tmp_path / "phenotypic.csv"),
                "participant_column": "SUB_ID",
                "timeseries_tr": str(tmp_path / "site_tr.tsv"),
                "mean_fd_column": "func_mean_fd",
            },
            "label": {"column": "DX_GROUP", "positive": "1", "site_column": "SITE_ID"},
            "atlas": {
                "name": "CC6",
                "path": str(tmp_path / "atlas.nii.gz"),
                "labels": str(tmp_path / "atlas_labels.tsv"),
            },
            "fmri": {"min_clean_seconds": 100},
        },
        SCHEMA_PATH,
    )
    return {"root": tmp_path, "rois": rois, "config": config}


def test_discovery_gives_tr_per_site_and_mean_fd_from_the_column(abide_like):
    table = FMRI().discover(abide_like["config"])
    assert table["subject"].tolist() == ["50001", "50002", "50003", "50004", "50006"]
    assert set(table["source"]) == {"timeseries"}
    assert Path(table["path"].iloc[0]).name == "SiteA_0050001_rois_cc6.1D"
    params = {
        row["subject"]: FMRI().sample_params(row, abide_like["config"])
        for _, row in table.iterrows()
    }
    assert [params[s]["default_tr"] for s in ("50001", "50003", "50006")] == [2.0, 2.5, None]
    assert params["50006"]["tr_missing"] == "no TR for SITE_ID 'C' in site_tr.tsv"
    assert params["50001"]["tr_missing"] == ""
    assert params["50004"]["mean_fd"] == pytest.approx(0.40)


def test_rows_without_a_file_and_files_without_a_row_are_listed(abide_like):
    rows, files = unmatched_roi_tables(abide_like["config"])
    assert rows == ["50005"]
    assert files == ["Stray_0059999_rois_cc6.1D"]


def _run(fmri: FMRI, config: dict, row: pd.Series, out: Path) -> dict[str, str]:
    outputs = {
        name: str(out / f"sub-{row['subject']}_{name}_{entities['suffix']}")
        for name, (_, entities) in fmri.sample_outputs(config["atlas"]["name"]).items()
    }
    params = {
        "entities": {"subject": row["subject"]},
        "atlas": config["atlas"],
        "section": fmri.run_params(config),
        **fmri.sample_params(row, config),
    }
    fmri.run_sample(fmri.sample_inputs(row, config), params, outputs)
    return outputs


def test_runs_record_tr_motion_and_exclude_a_site_without_tr(abide_like, tmp_path):
    fmri, config = FMRI(), abide_like["config"]
    table = fmri.discover(config)
    outputs = [_run(fmri, config, row, tmp_path) for _, row in table.iterrows()]
    qc = {
        s: json.loads(Path(o["sidecar"]).read_text())
        for s, o in zip(table["subject"], outputs, strict=True)
    }
    assert qc["50006"]["status"] == "excluded"
    assert "SiteC_0050006_rois_cc6.1D" in qc["50006"]["reason"]
    assert "no TR for SITE_ID 'C' in site_tr.tsv" in qc["50006"]["reason"]
    assert qc["50003"]["status"] == "included"
    assert (qc["50003"]["tr"], qc["50003"]["tr_source"]) == (2.5, "config")
    assert qc["50003"]["mean_fd"] == pytest.approx(0.05)
    assert qc["50003"]["mean_fd_source"] == "input.mean_fd_column"
    assert qc["50003"]["column_order"] == "header"
    assert qc["50003"]["n_constant_parcels"] == 1

    out = {"cache": str(tmp_path / "fmri.parquet"), "qc": str(tmp_path / "fmri_qc.tsv")}
    label = {**config["label"], "participant_column": "SUB_ID"}
    fmri.build_cache(
        {
            "sidecars": [o["sidecar"] for o in outputs],
            "data": [o["timeseries"] for o in outputs],
            "raw_fc": [o["relmat_raw"] for o in outputs],
            "participants": config["input"]["participants"],
        },
        {"label": label, "atlas": config["atlas"], "section": config["fmri"]},
        out,
    )
    from brainfuse.core.cache import read_cache

    cache = read_cache(out["cache"]).table
    assert cache["subject"].tolist() == ["50001", "50002", "50003", "50004"]
    assert cache["label"].tolist() == ["1", "2", "1", "2"]
    assert cache["site"].tolist() == ["A", "A", "B", "B"]
    assert cache["mean_fd"].tolist() == pytest.approx([0.10, 0.25, 0.05, 0.40])
    assert cache["column_order"].tolist() == ["header"] * 4
    assert cache["n_constant_parcels"].tolist() == [1.0] * 4
    # QC-FC after denoising counts the four tables (they have no raw FC to count before)
    section = fmri.report_section(out["cache"])
    after = re.search(r"<td>after denoising</td>(.*?)</tr>", section, re.S).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", after)[-1] == "4"


@pytest.mark.parametrize(
    ("tr_source", "status", "tr"), [("exclude", "excluded", None), ("sidecar", "included", 3.0)]
)
def test_sidecar_tr_disagreeing_with_the_configured_tr(abide_like, tmp_path, tr_source, status, tr):
    fmri, config = FMRI(), abide_like["config"]
    config["fmri"]["tr_source"] = tr_source
    row = fmri.discover(config).iloc[0]  # site A: configured TR 2.0 s
    Path(row["path"]).with_suffix(".json").write_text(json.dumps({"RepetitionTime": 3.0}))
    qc = json.loads(Path(_run(fmri, config, row, tmp_path)["sidecar"]).read_text())
    assert qc["status"] == status
    if tr is None:
        assert "RepetitionTime 3 s" in qc["reason"] and "configured TR 2 s" in qc["reason"]
    else:
        assert qc["tr"] == tr and "configured TR 2 s" in qc["warnings"][0]


def test_subject_labels_must_be_alphanumeric(abide_like):
    config = abide_like["config"]
    config["input"]["participant_column"] = "FILE_ID"
    with pytest.raises(ConfigError, match="column 'FILE_ID'.*not alphanumeric"):
        FMRI().discover(config)


def test_participants_tsv_or_csv_with_site_column(tmp_path):
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tgroup\tcentre\nsub-01\tpatient\tX\nsub-02\tcontrol\tY\n")
    csv = tmp_path / "phenotypes.csv"
    csv.write_text("ID,DX\n7,1\n8,2\n")
    by_tsv = read_participants(tsv)
    assert by_tsv.index.tolist() == ["01", "02"]
    samples = pd.DataFrame({"subject": ["02"]})
    labelled = attach_labels(samples, by_tsv, {"column": "group", "site_column": "centre"})
    assert labelled[["label", "site"]].values.tolist() == [["control", "Y"]]
    by_csv = read_participants(csv, "ID")
    assert by_csv.loc["7", "DX"] == "1"  # compared as written, not as a number
    with pytest.raises(ConfigError, match="no 'participant_id' column"):
        read_participants(csv)
