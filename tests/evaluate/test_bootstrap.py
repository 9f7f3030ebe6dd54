"""Patient-level bootstrap intervals."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from lungcancer.errors import LungCancerError
from lungcancer.evaluate.bootstrap import (
    bootstrap_metrics,
    cluster_ids,
    paired_difference,
    resample_weights,
)
from lungcancer.evaluate.metrics import UndefinedMetricWarning, compute_metrics

MakePredictions = Callable[..., tuple[np.ndarray, np.ndarray, list[str]]]
NAMES = ["adeno", "squamous", "normal"]


def _width(ci: dict[str, float]) -> float:
    return ci["high"] - ci["low"]


def test_interval_contains_the_point_estimate(make_predictions: MakePredictions) -> None:
    y, probs, keys = make_predictions(n_patients=40, per_patient=3, seed=1)
    point = compute_metrics(y, probs, NAMES)["headline"]
    ci = bootstrap_metrics(y, probs, keys, NAMES, n_boot=60, seed=0)["headline"]
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_roc_auc", "macro_pr_auc"):
        assert ci[name]["low"] <= point[name] <= ci[name]["high"], name
        assert ci[name]["n_used"] == 60


def test_interval_narrows_with_more_patients(make_predictions: MakePredictions) -> None:
    few = make_predictions(n_patients=15, per_patient=3, seed=2)
    many = make_predictions(n_patients=240, per_patient=3, seed=2)
    ci_few = bootstrap_metrics(*few, NAMES, n_boot=50, seed=0)["headline"]
    ci_many = bootstrap_metrics(*many, NAMES, n_boot=50, seed=0)["headline"]
    assert _width(ci_many["macro_roc_auc"]) < _width(ci_few["macro_roc_auc"]) / 2
    assert _width(ci_many["accuracy"]) < _width(ci_few["accuracy"]) / 2


def test_resampling_draws_whole_patients_not_slices() -> None:
    # One patient with 50 slices, all right; ten patients with one slice each, all wrong.
    # A slice-level bootstrap would keep accuracy near 50/60; drawing patients leaves the big
    # patient out of about a third of the resamples, where accuracy is 0.
    y = np.zeros(60, dtype=int)
    probs = np.array([[0.9, 0.1]] * 50 + [[0.2, 0.8]] * 10)
    keys = ["big"] * 50 + [f"single-{i}" for i in range(10)]
    ci = bootstrap_metrics(y, probs, keys, ["a", "b"], n_boot=100, seed=0)
    assert ci["n_patients"] == 11
    assert ci["unit"] == "patient"
    assert ci["headline"]["accuracy"]["low"] == pytest.approx(0.0)
    slice_level = bootstrap_metrics(
        y, probs, [str(i) for i in range(60)], ["a", "b"], n_boot=100, seed=0
    )
    assert slice_level["headline"]["accuracy"]["low"] > 0.7


def test_resample_weights_move_all_samples_of_a_patient_together() -> None:
    clusters, n_clusters, _ = cluster_ids(["p1", "p1", "p2", "p3", "p3", "p3"])
    assert n_clusters == 3
    rows = np.concatenate(
        list(resample_weights(clusters, n_clusters, 20, np.random.default_rng(0)))
    )
    assert rows.shape == (20, 6)
    assert (rows[:, 0] == rows[:, 1]).all()
    assert (rows[:, 3] == rows[:, 4]).all() and (rows[:, 4] == rows[:, 5]).all()
    # Every resample draws exactly as many patients as there are.
    assert (rows[:, [0, 2, 3]].sum(axis=1) == 3).all()


def test_samples_without_patient_ids_are_resampled_one_by_one() -> None:
    clusters, n_clusters, unit = cluster_ids(["", "", ""])
    assert n_clusters == 3 and len(set(clusters.tolist())) == 3
    assert unit.startswith("sample")


def test_same_seed_same_interval_and_other_seed_differs(make_predictions: MakePredictions) -> None:
    y, probs, keys = make_predictions(n_patients=30, per_patient=2, seed=4)
    a = bootstrap_metrics(y, probs, keys, NAMES, n_boot=30, seed=7)
    b = bootstrap_metrics(y, probs, keys, NAMES, n_boot=30, seed=7)
    c = bootstrap_metrics(y, probs, keys, NAMES, n_boot=30, seed=8)
    assert a == b
    assert a["headline"] != c["headline"]


def test_resamples_missing_a_class_are_skipped_and_counted() -> None:
    # The rare class lives in one patient of twelve: resamples without it cannot average over
    # all classes, so fewer resamples are used for macro metrics than for accuracy.
    y = np.array([0] * 11 + [1] * 11 + [2])
    probs = np.full((23, 3), 0.1)
    probs[np.arange(23), y] = 0.8
    keys = [f"a{i}" for i in range(11)] + [f"b{i}" for i in range(11)] + ["rare"]
    ci = bootstrap_metrics(y, probs, keys, NAMES, n_boot=100, seed=0)["headline"]
    assert ci["accuracy"]["n_used"] == 100
    assert 0 < ci["macro_roc_auc"]["n_used"] < 100
    assert 0 < ci["balanced_accuracy"]["n_used"] < 100


def test_class_absent_from_the_split_gets_no_interval() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        ci = bootstrap_metrics(y, probs, list("abcdef"), NAMES, n_boot=20, seed=0)
    assert ci["per_class"]["normal"]["roc_auc"] == {"low": None, "high": None, "n_used": 0}
    assert ci["headline"]["macro_roc_auc"]["low"] is not None


def test_zero_resamples_means_no_intervals(make_predictions: MakePredictions) -> None:
    y, probs, keys = make_predictions(n_patients=6, per_patient=1)
    ci = bootstrap_metrics(y, probs, keys, NAMES, n_boot=0)
    assert ci["headline"]["accuracy"] == {"low": None, "high": None, "n_used": 0}


@pytest.mark.parametrize(
    ("keys", "n_boot", "message"),
    [(["a"], 10, "one patient key per sample"), (["a", "b", "c"], -1, "cannot be negative")],
)
def test_bad_settings_raise(keys: list[str], n_boot: int, message: str) -> None:
    y = np.array([0, 1, 0])
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    with pytest.raises(LungCancerError, match=message):
        bootstrap_metrics(y, probs, keys, ["a", "b"], n_boot=n_boot)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero(
    make_predictions: MakePredictions,
) -> None:
    y, probs, keys = make_predictions(n_patients=20, per_patient=2)
    diff = paired_difference(y, probs, probs, keys, NAMES, n_boot=20, seed=0)
    for entry in diff.values():
        assert entry["difference"] == 0.0
        assert entry["low"] == 0.0 and entry["high"] == 0.0


def test_paired_difference_detects_a_clearly_better_model(
    make_predictions: MakePredictions,
) -> None:
    y, weak, keys = make_predictions(n_patients=60, per_patient=2, signal=0.3, seed=5)
    _, strong, _ = make_predictions(n_patients=60, per_patient=2, signal=3.0, seed=6)
    diff = paired_difference(y, weak, strong, keys, NAMES, n_boot=50, seed=0)
    assert diff["macro_roc_auc"]["difference"] > 0
    assert diff["macro_roc_auc"]["low"] > 0
    assert diff["log_loss"]["high"] < 0
