"""Subgroup analysis: bins, groups by value, missing cells, refused columns, per-group metrics."""

from __future__ import annotations

import numpy as np
import pytest

from lungcancer.evaluate.metrics import EvaluationError
from lungcancer.evaluate.subgroups import (
    MAX_CATEGORIES,
    NOT_RECORDED,
    GroupSpec,
    group_labels,
    subgroup_metrics,
)


def test_a_spec_is_a_column_and_increasing_edges() -> None:
    assert GroupSpec.parse("diameter_mm:10,20,30") == GroupSpec("diameter_mm", (10.0, 20.0, 30.0))
    assert GroupSpec.parse(" histology ") == GroupSpec("histology")
    for bad in ("", ":10", "d:20,10", "d:10,10", "d:ten"):
        with pytest.raises(EvaluationError):
            GroupSpec.parse(bad)


def test_numeric_bins_take_the_edge_into_the_upper_group_and_keep_missing_cells() -> None:
    labels, order, edges = group_labels(
        ["5", "10", "19.9", "20", "", "nan"], GroupSpec("d", (10, 20))
    )
    assert labels == ["< 10", "10 to < 20", "10 to < 20", ">= 20", NOT_RECORDED, NOT_RECORDED]
    assert order == ["< 10", "10 to < 20", ">= 20", NOT_RECORDED]
    assert edges == (10, 20)


def test_numeric_without_edges_is_cut_at_its_quartiles() -> None:
    values = [str(v) for v in range(1, 101)]
    labels, order, edges = group_labels(values, GroupSpec("d"))
    assert edges == pytest.approx((25.8, 50.5, 75.2))
    assert len(order) == 4
    assert [labels.count(name) for name in order] == [25, 25, 25, 25]


def test_categories_group_by_value_and_none_is_a_finding_not_a_gap() -> None:
    labels, order, edges = group_labels(["none", "chest_wall", "", "none"], GroupSpec("invasion"))
    assert order == ["chest_wall", "none", NOT_RECORDED]
    assert labels == ["none", "chest_wall", NOT_RECORDED, "none"]
    assert edges == ()


def test_refused_columns_say_why() -> None:
    with pytest.raises(EvaluationError, match="not numeric"):
        group_labels(["solid", "3"], GroupSpec("nodule_type", (1.0,)))
    ids = [f"patient-{i}" for i in range(MAX_CATEGORIES + 1)]
    with pytest.raises(EvaluationError, match="distinct values"):
        group_labels(ids, GroupSpec("patient_name"))


def test_each_group_is_scored_on_its_own_samples_with_patient_intervals() -> None:
    rng = np.random.default_rng(0)
    names = ["benign", "normal", "stage_I"]
    n = 120
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    patients = [f"p{i // 2}" for i in range(n)]  # two slices per patient, same size
    big = (np.arange(n) // 2) % 2 == 0
    values = np.where(big, "30", "5").astype(str)
    probs[big] = np.eye(3)[y[big]] * 0.85 + 0.05  # always right on the big lesions
    out = subgroup_metrics(
        y, probs, names, patients, list(values), GroupSpec("d", (10.0,)), n_boot=50, seed=0
    )
    small, large = out["groups"]
    assert (small["group"], large["group"]) == ("< 10", ">= 10")
    assert large["metrics"]["accuracy"] == 1.0 and large["metrics"]["macro_roc_auc"] == 1.0
    expected = float(np.mean(probs[~big].argmax(1) == y[~big]))
    assert small["metrics"]["accuracy"] == pytest.approx(expected)
    assert small["n_samples"] + large["n_samples"] == n
    assert small["n_patients"] == small["n_samples"] // 2
    low, high = small["ci"]["accuracy"]["low"], small["ci"]["accuracy"]["high"]
    assert low <= expected <= high and high - low > 0.05
    assert out["edges"] == [10.0] and out["edges_from"] == "given"
