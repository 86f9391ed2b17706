"""Methods run on the modalities a dataset has; labels from participants.tsv or a BIDS entity."""

import pandas as pd

from brainfuse.core.samples import attach_labels
from brainfuse.methods.catalog import modalities_of, plan


def test_plan_skips_methods_without_their_modality():
    methods = {m: {"stages": ["fit"]} for m in ("majority", "logreg_fc", "logreg_eeg", "logreg_sc")}
    run, skipped = plan(methods, {"eeg"})
    assert set(run) == {"majority", "logreg_eeg"}
    assert "fmri" in skipped["logreg_fc"] and "sc" in skipped["logreg_sc"]
    assert modalities_of("majority", {"eeg"}) == ("eeg",)
    assert modalities_of("majority", {"sc", "fmri"}) == ("fmri",)


def test_fusion_needs_both_modalities():
    run, skipped = plan({"m3d_bfs": {"stages": ["encoders", "pretrain", "finetune"]}}, {"fmri"})
    assert not run and "sc" in skipped["m3d_bfs"]


def test_labels_from_column_or_entity():
    participants = pd.DataFrame(
        {"group": ["patient", "control"], "site": ["A", "B"]},
        index=pd.Index(["01", "02"], name="subject"),
    )
    samples = pd.DataFrame(
        {"subject": ["01", "01", "02", "03"], "task": ["rest", "nback", "rest", "rest"]}
    )
    by_column = attach_labels(samples, participants, {"column": "group"})
    assert by_column["label"].tolist()[:3] == ["patient", "patient", "control"]
    assert pd.isna(by_column["label"].iloc[3])  # unknown subject: excluded later with a reason
    by_task = attach_labels(samples, participants, {"column": "group", "entity": "task"})
    assert by_task["label"].tolist() == ["rest", "nback", "rest", "rest"]
    assert by_task["site"].tolist() == ["A", "A", "B", "n/a"]
