"""Cross-validation folds: grouped by subject, stratified, with an inner validation split."""

import numpy as np
import pandas as pd
import pytest

from brainfuse.folds import make_folds, subjects_of


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
