"""Metrics against hand-computed values, scikit-learn, and inputs that break naive code."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from sklearn import metrics as skm

from lungcancer.errors import LungCancerError
from lungcancer.evaluate.metrics import UndefinedMetricWarning, compute_metrics

MakePredictions = Callable[..., tuple[np.ndarray, np.ndarray, list[str]]]
NAMES = ["adeno", "squamous", "normal"]

# Six samples, three classes; confusion rows (true) x columns (predicted):
# adeno [1 1 0], squamous [0 1 1], normal [0 0 2].
HAND_Y = np.array([0, 0, 1, 1, 2, 2])
HAND_P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.4, 0.5, 0.1],
        [0.2, 0.6, 0.2],
        [0.1, 0.3, 0.6],
        [0.1, 0.1, 0.8],
        [0.3, 0.3, 0.4],
    ]
)


def test_small_table_matches_hand_computed_values() -> None:
    m = compute_metrics(HAND_Y, HAND_P, NAMES)
    h = m["headline"]
    assert m["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert m["confusion_matrix"]["normalized"][0] == [0.5, 0.5, 0.0]
    assert h["accuracy"] == pytest.approx(4 / 6)
    assert h["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert h["macro_precision"] == pytest.approx((1.0 + 0.5 + 2 / 3) / 3)
    assert h["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.8) / 3)
    # adeno: both positives outscore all negatives; squamous: 0.3 ties one negative (half a
    # win) -> 6.5 of 8 pairs; normal: 7 of 8 pairs.
    per_class = m["per_class"]
    assert per_class["adeno"]["roc_auc"] == pytest.approx(1.0)
    assert per_class["squamous"]["roc_auc"] == pytest.approx(6.5 / 8)
    assert per_class["normal"]["roc_auc"] == pytest.approx(7 / 8)
    assert h["macro_roc_auc"] == pytest.approx((1.0 + 6.5 / 8 + 7 / 8) / 3)
    assert per_class["normal"]["precision"] == pytest.approx(2 / 3)
    assert per_class["normal"]["support"] == 2
    assert m["calibration"]["log_loss"] == pytest.approx(
        -np.mean(np.log([0.7, 0.4, 0.6, 0.3, 0.8, 0.4]))
    )


def test_perfect_classifier_scores_one_everywhere() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[y]
    h = compute_metrics(y, probs, NAMES)["headline"]
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_roc_auc", "macro_pr_auc"):
        assert h[name] == pytest.approx(1.0), name
    assert h["ece"] == pytest.approx(0.0)
    assert h["brier"] == pytest.approx(0.0)
    assert h["log_loss"] == pytest.approx(0.0, abs=1e-9)


def test_constant_classifier_has_chance_auc_and_uniform_brier() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    probs = np.full((7, 3), 1 / 3)
    with pytest.warns(UndefinedMetricWarning, match="never predicted"):
        m = compute_metrics(y, probs, NAMES)
    assert m["headline"]["macro_roc_auc"] == pytest.approx(0.5)
    # Ties resolve to the first class, so accuracy is the share of that class.
    assert m["headline"]["accuracy"] == pytest.approx(2 / 7)
    assert m["headline"]["brier"] == pytest.approx(1 - 1 / 3)


def test_random_scores_give_auc_near_one_half(make_predictions: MakePredictions) -> None:
    y, probs, _ = make_predictions(n_patients=300, per_patient=2, signal=0.0, seed=3)
    h = compute_metrics(y, probs, NAMES)["headline"]
    assert abs(h["macro_roc_auc"] - 0.5) < 0.05
    assert abs(h["accuracy"] - 1 / 3) < 0.06


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_scikit_learn_including_tied_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 200)
    logits = np.round(rng.normal(size=(200, 4)) + 1.2 * np.eye(4)[y], 1)  # rounding makes ties
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = compute_metrics(y, probs, list("abcd"))
    pred = probs.argmax(axis=1)
    h = m["headline"]
    assert h["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert h["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert h["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert h["macro_roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert h["log_loss"] == pytest.approx(skm.log_loss(y, probs))
    for k, name in enumerate("abcd"):
        expected_ap = skm.average_precision_score(y == k, probs[:, k])
        assert m["per_class"][name]["pr_auc"] == pytest.approx(expected_ap)


def test_class_missing_from_split_is_undefined_not_a_crash() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.2, 0.2],
            [0.2, 0.7, 0.1],
            [0.3, 0.3, 0.4],
            [0.5, 0.4, 0.1],
            [0.1, 0.8, 0.1],
        ]
    )
    with pytest.warns(UndefinedMetricWarning, match="'normal'"):
        m = compute_metrics(y, probs, NAMES)
    missing = m["per_class"]["normal"]
    assert missing["support"] == 0
    for key in ("precision", "recall", "f1", "roc_auc", "pr_auc"):
        assert missing[key] is None, key
    assert m["undefined_classes"] == ["normal"]
    assert m["macro_over"]["roc_auc"] == ["adeno", "squamous"]
    defined = [m["per_class"][c]["roc_auc"] for c in ("adeno", "squamous")]
    assert m["headline"]["macro_roc_auc"] == pytest.approx(sum(defined) / 2)
    assert m["confusion_matrix"]["normalized"][2] is None
    assert any("normal" in w for w in m["warnings"])
    json.dumps(m, allow_nan=False)  # raises if any NaN slipped through


def test_single_class_split_leaves_auc_undefined() -> None:
    y = np.zeros(4, dtype=int)
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        m = compute_metrics(y, probs, NAMES)
    assert m["headline"]["macro_roc_auc"] is None
    assert m["headline"]["accuracy"] == pytest.approx(0.75)
    json.dumps(m, allow_nan=False)


def test_class_never_predicted_gets_precision_zero_with_a_warning() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    with pytest.warns(UndefinedMetricWarning, match="never predicted"):
        m = compute_metrics(y, probs, NAMES)
    assert m["per_class"]["normal"]["precision"] == 0.0
    assert m["per_class"]["normal"]["recall"] == 0.0


@pytest.mark.parametrize(
    ("y", "probs", "names", "message"),
    [
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"], "do not match the class list"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "different lengths"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["a", "b"], "class ids"),
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], ["a", "b"], "negative"),
        ([0, 1], [[3.0, 1.0], [0.5, 0.5]], ["a", "b"], "do not sum to 1"),
        ([0, 1], [[np.nan, 1.0], [0.5, 0.5]], ["a", "b"], "NaN"),
        ([], np.zeros((0, 2)), ["a", "b"], "nothing to evaluate"),
        ([0], [[1.0]], ["a"], "at least two classes"),
    ],
)
def test_bad_predictions_raise_a_readable_error(
    y: list[int], probs: list[list[float]], names: list[str], message: str
) -> None:
    with pytest.raises(LungCancerError, match=message):
        compute_metrics(np.asarray(y, dtype=int), np.asarray(probs, dtype=float), names)
