import numpy as np
import pandas as pd
import pytest

from brainfuse.core.metrics import binary_metrics, summarise


def test_binary_metrics_known_values():
    y_true = np.array([1, 1, 1, 0, 0])
    y_pred = np.array([1, 1, 0, 0, 1])
    m = binary_metrics(y_true, y_pred, y_score=np.array([0.9, 0.8, 0.4, 0.1, 0.6]))
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["auc"] == pytest.approx(5 / 6)


def test_auc_undefined_for_one_class():
    assert np.isnan(binary_metrics([1, 1], [1, 0], [0.2, 0.1])["auc"])


def test_summary_columns():
    predictions = pd.DataFrame(
        {
            "method": ["a"] * 6 + ["b"] * 6,
            "subject": [f"{i}" for i in range(6)] * 2,
            "y_true": [0, 1] * 6,
            "y_pred": [0, 1, 1, 1, 0, 0] * 2,
            "y_score": [0.2, 0.9, 0.7, 0.6, 0.4, 0.3] * 2,
        }
    )
    per_fold = pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3,
            "fold": [0, 1, 2] * 2,
            **{
                m: [0.5, 0.6, 0.7] * 2
                for m in (
                    "accuracy",
                    "balanced_accuracy",
                    "auc",
                    "sensitivity",
                    "specificity",
                    "f1",
                )
            },
        }
    )
    s = summarise(per_fold, predictions, n_resamples=200)
    assert s["method"].tolist() == ["a", "b"]
    assert s["balanced_accuracy_mean"].iloc[0] == pytest.approx(0.6)
    assert s["auc_sd"].iloc[0] == pytest.approx(0.1)
    # the interval is a bootstrap of the pooled predictions, not of the fold means
    assert 0 <= s["auc_ci_low"].iloc[0] <= s["auc_ci_high"].iloc[0] <= 1
    assert s["ci_method"].iloc[0].startswith("subject bootstrap")


def test_validation_threshold_moves_only_when_validation_says_so():
    from brainfuse.core.metrics import validation_threshold

    y = np.array([0, 0, 1, 1])
    # ranked right, all above 0.5 (a network fitted to zero loss): the threshold moves between
    # the classes
    shifted = np.array([0.90, 0.93, 0.97, 0.99])
    t = validation_threshold(y, shifted)
    assert 0.93 < t < 0.97 and (shifted >= t).tolist() == [False, False, True, True]
    # already separated at 0.5: unchanged
    assert validation_threshold(y, np.array([0.2, 0.4, 0.6, 0.9])) == 0.5
    # no threshold does better than 0.5 (ranking wrong): unchanged
    assert validation_threshold(y, np.array([0.9, 0.6, 0.4, 0.2])) == 0.5
    # one class among the validation subjects: unchanged
    assert validation_threshold(np.array([1, 1]), np.array([0.9, 0.95])) == 0.5
    # of the equally good thresholds, the one closest to 0.5
    assert validation_threshold(y, np.array([0.05, 0.1, 0.3, 0.45])) == pytest.approx(0.2)
