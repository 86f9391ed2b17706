"""Cross-validation folds: grouped by subject, stratified, with an inner validation split."""

import json

import numpy as np
import pandas as pd
import pytest

from brainfuse.core.errors import ConfigError
from brainfuse.folds import (
    feasible_n_folds,
    make_folds,
    planned_n_folds,
    read_folds,
    subjects_of,
    write_folds,
)


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        runs = 3 if i % 3 == 0 else 1  # multi-run subjects are where leakage happens
        for run in range(runs):
            rows.append(
                {
                    "subject": f"{i:02d}",
                    "run": run,
                    "label": "patient" if i % 2 else "control",
                    "site": "A" if i < 15 else "B",
                }
            )
    return pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(100)))


def test_no_subject_in_two_roles(samples):
    folds = make_folds(samples, n_folds=5, val_fraction=0.2, seed=0)
    for fold in range(5):
        train, val, test = (subjects_of(folds, fold, r) for r in ("train", "val", "test"))
        assert not train & val and not train & test and not val & test
        assert train | val | test == set(samples["subject"])
    tests = [subjects_of(folds, f, "test") for f in range(5)]
    assert set().union(*tests) == set(samples["subject"])  # each subject tested exactly once
    assert sum(len(t) for t in tests) == samples["subject"].nunique()


def test_folds_are_stratified_and_deterministic(samples):
    a = make_folds(samples, 5, 0.2, seed=3)
    b = make_folds(samples, 5, 0.2, seed=3)
    pd.testing.assert_frame_equal(a, b)
    labels = samples.drop_duplicates("subject").set_index("subject")["label"]
    for fold in range(5):
        test = list(subjects_of(a, fold, "test"))
        assert labels[test].nunique() == 2
        assert len(subjects_of(a, fold, "val")) > 0


def test_leave_site_out(samples):
    folds = make_folds(samples, 5, 0.2, seed=0, group_by="site")
    sites = samples.drop_duplicates("subject").set_index("subject")["site"]
    assert folds["fold"].nunique() == 2
    for fold in range(2):
        assert sites[list(subjects_of(folds, fold, "test"))].nunique() == 1


def test_too_few_subjects_per_class_is_refused(samples):
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(samples.head(6), n_folds=5, val_fraction=0.2, seed=0)


def _table(sizes: dict[str, int], sites: str = "A") -> pd.DataFrame:
    """One row per subject; subjects are spread over ``sites`` in turn within each class."""
    rows = [
        {"subject": f"{label[0]}{i:02d}", "label": label, "site": sites[i % len(sites)]}
        for label, n in sizes.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def _labels_by_role(folds: pd.DataFrame, table: pd.DataFrame, fold: int) -> dict[str, set]:
    labels = table.drop_duplicates("subject").set_index("subject")["label"]
    return {
        role: set(labels[sorted(subjects_of(folds, fold, role))])
        for role in ("train", "val", "test")
    }


CV = {"n_folds": 5, "val_fraction": 0.2, "group_by": "subject"}


def test_a_class_of_three_with_five_folds_stops_with_the_counts():
    table = _table({"control": 3, "patient": 10})
    assert planned_n_folds(CV, table) == 5  # a configured number is checked by the folds job
    with pytest.raises(ConfigError) as error:
        make_folds(table, n_folds=5, val_fraction=0.2, seed=0)
    message = str(error.value)
    assert "cv.n_folds=5" in message and "control 3, patient 10" in message
    assert "largest feasible cv.n_folds is 3" in message


def test_exclusions_after_planning_stop_the_folds_job_with_the_counts(tmp_path):
    discovered = _table({"control": 5, "patient": 6})
    assert planned_n_folds(CV, discovered) == 5
    included = discovered[discovered["subject"] != "c04"]  # one control excluded by QC
    with pytest.raises(ConfigError, match="control 4, patient 6; the largest feasible cv.n_folds"):
        write_folds([included], CV, 0, 5, str(tmp_path / "f.tsv"), str(tmp_path / "f.json"))
    assert not (tmp_path / "f.tsv").exists()


def test_auto_picks_three_and_every_fold_has_both_classes_in_every_role(tmp_path):
    table = _table({"control": 3, "patient": 10})
    cv = {**CV, "n_folds": "auto"}
    n_folds = planned_n_folds(cv, table)
    assert n_folds == 3
    write_folds([table], cv, 0, n_folds, str(tmp_path / "f.tsv"), str(tmp_path / "f.json"))
    folds = read_folds(str(tmp_path / "f.tsv"))
    assert folds["fold"].nunique() == 3
    for fold in range(3):
        for role, labels in _labels_by_role(folds, table, fold).items():
            assert labels == {"control", "patient"}, (fold, role)
    summary = json.loads((tmp_path / "f.json").read_text())
    assert summary["n_folds"] == 3 and summary["requested"] == "auto"
    assert summary["subjects_per_class"] == {"control": 3, "patient": 10}
    assert "auto chose 3" in summary["reason"]


def test_auto_with_too_small_a_class_says_each_class_needs_three():
    with pytest.raises(ConfigError, match="control 2, patient 9.*at least 3 subjects"):
        planned_n_folds({**CV, "n_folds": "auto"}, _table({"control": 2, "patient": 9}))


def test_unlabelled_subjects_do_not_count_at_planning():
    table = _table({"control": 4, "patient": 6})
    table.loc[table["subject"] == "c00", "label"] = None  # QC will exclude it: no label
    assert planned_n_folds({**CV, "n_folds": "auto"}, table) == 3


@pytest.mark.parametrize("n_small", [2, 3, 4, 5])
def test_the_feasibility_rule_matches_the_folds_it_allows(n_small):
    table = _table({"control": n_small, "patient": 9})
    for n_folds in range(2, 6):
        if n_folds in feasible_n_folds({"control": n_small, "patient": 9}, upper=5):
            folds = make_folds(table, n_folds, 0.2, seed=n_folds)
            for fold in range(n_folds):
                assert all(len(v) == 2 for v in _labels_by_role(folds, table, fold).values())
        else:
            with pytest.raises(ConfigError, match=f"control {n_small}, patient 9"):
                make_folds(table, n_folds, 0.2, seed=n_folds)


def test_leave_site_out_plans_one_fold_per_site_and_checks_training_classes():
    site_cv = {**CV, "group_by": "site"}
    assert planned_n_folds(site_cv, _table({"control": 6, "patient": 6}, sites="ABC")) == 3
    # Site B holds all but one control: leaving it out trains on a single control.
    table = _table({"control": 6, "patient": 6}, sites="AB")
    table.loc[table["label"] == "control", "site"] = ["A"] + ["B"] * 5
    with pytest.raises(ConfigError, match="site A: control 1, patient 3; site B: control 5"):
        make_folds(table, 2, 0.2, seed=0, group_by="site")


#: What the code before the feasibility check wrote for the table of the test below (val and
#: test subjects of each fold; the rest train): a feasible config must give the same folds.
BEFORE = {
    "subject": {
        0: ("11 12 13 18", "01 02 05 09 14"),
        1: ("02 07 14 15", "16 17 18 19 20"),
        2: ("06 08 17 19", "03 04 10 11 12"),
        3: ("03 04 05 20", "06 07 08 13 15"),
    },
    "site": {
        0: ("12 15 19", "01 02 03 04 05 06 07 08 09 10"),
        1: ("05 06 09", "11 12 13 14 15 16 17 18 19 20"),
    },
}


@pytest.mark.parametrize("group_by", ["subject", "site"])
def test_a_feasible_config_gives_the_same_folds_as_before(tmp_path, group_by):
    rows = [
        {
            "subject": f"{i:02d}",
            "label": "patient" if i % 2 else "control",
            "site": "A" if i <= 10 else "B",
        }
        for i in range(1, 21)
        for _ in range(2 if i % 3 == 0 else 1)  # several runs of some subjects
    ]
    table = pd.DataFrame(rows)
    cv = {"n_folds": 4, "val_fraction": 0.25, "group_by": group_by}
    n_folds = planned_n_folds(cv, table)
    out = tmp_path / "folds.tsv"
    write_folds([table, table.iloc[::2]], cv, 7, n_folds, str(out), str(tmp_path / "f.json"))
    folds = read_folds(str(out))
    got = {
        fold: tuple(" ".join(g.loc[g["role"] == r, "subject"]) for r in ("val", "test"))
        for fold, g in folds.groupby("fold")
    }
    assert got == BEFORE[group_by]
    assert list(folds.columns) == ["fold", "subject", "role", "n_labels"]
    assert (folds["n_labels"] == 1).all()
