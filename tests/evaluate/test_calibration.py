"""Calibration numbers against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lungcancer.evaluate.calibration import ECE_BINS
from lungcancer.evaluate.metrics import compute_metrics

# Small two-class tables often lack a class or a prediction; those warnings are tested elsewhere.
pytestmark = pytest.mark.filterwarnings(
    "ignore::lungcancer.evaluate.metrics.UndefinedMetricWarning"
)


def _two_class(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([[c, 1 - c] for c in confidences])
    y = np.array([0 if ok else 1 for ok in correct])
    return y, probs


@pytest.mark.parametrize(
    ("confidences", "correct", "expected_ece"),
    [
        # 90% confident and right 9 times in 10: perfectly calibrated.
        ([0.9] * 10, [True] * 9 + [False], 0.0),
        # 90% confident and always wrong: off by 0.9.
        ([0.9] * 10, [False] * 10, 0.9),
        # Half the samples at 0.7 (right 3 of 5: gap 0.1), half at 0.95 (all right: gap 0.05).
        ([0.7] * 5 + [0.95] * 5, [True, True, True, False, False] + [True] * 5, 0.075),
    ],
)
def test_ece_is_the_sample_weighted_gap_per_bin(
    confidences: list[float], correct: list[bool], expected_ece: float
) -> None:
    y, probs = _two_class(confidences, correct)
    calibration = compute_metrics(y, probs, ["a", "b"])["calibration"]
    assert calibration["ece"] == pytest.approx(expected_ece)
    assert calibration["n_bins"] == ECE_BINS == 15
    assert sum(b["count"] for b in calibration["bins"]) == len(y)


def test_reliability_bins_report_accuracy_and_confidence() -> None:
    y, probs = _two_class([0.7] * 4, [True, True, True, False])
    bins = compute_metrics(y, probs, ["a", "b"])["calibration"]["bins"]
    filled = [b for b in bins if b["count"]]
    assert len(filled) == 1
    assert filled[0]["lower"] < 0.7 <= filled[0]["upper"]
    assert filled[0]["accuracy"] == pytest.approx(0.75)
    assert filled[0]["confidence"] == pytest.approx(0.7)
    assert all(b["accuracy"] is None for b in bins if not b["count"])


def test_brier_and_log_loss_of_a_confident_model() -> None:
    y, probs = _two_class([0.9, 0.9], [True, False])
    calibration = compute_metrics(y, probs, ["a", "b"])["calibration"]
    # Right: 2 x 0.1^2; wrong: 2 x 0.9^2.
    assert calibration["brier"] == pytest.approx((0.02 + 1.62) / 2)
    assert calibration["log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.1)) / 2)


def test_zero_probability_on_the_true_class_gives_a_finite_log_loss() -> None:
    y, probs = _two_class([1.0], [False])
    log_loss = compute_metrics(y, probs, ["a", "b"])["calibration"]["log_loss"]
    assert log_loss == pytest.approx(-np.log(1e-15))
