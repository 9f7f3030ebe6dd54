"""Class sampling and labelling by the AJCC 8th rules (no rendering: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from lungcancer.errors import ConfigError
from lungcancer.staging import M_DESCRIPTORS, N_DESCRIPTORS, T_DESCRIPTORS, t_from_diameter
from lungcancer.synth.truth import (
    CLASS_SETS,
    T_BANDS_MM,
    Difficulty,
    class_counts,
    labels_for,
    sample_truth,
)

# The AJCC 8th table of shared/DESIGN.md, written out independently of lungcancer.staging:
# coarse stage per T row and N column (M0); any M1a/M1b is IV.
_COARSE_M0 = {
    "T1a": ("I", "II", "III", "III"),
    "T1b": ("I", "II", "III", "III"),
    "T1c": ("I", "II", "III", "III"),
    "T2a": ("I", "II", "III", "III"),
    "T2b": ("II", "II", "III", "III"),
    "T3": ("II", "III", "III", "III"),
    "T4": ("III", "III", "III", "III"),
}


@pytest.mark.parametrize("t", T_DESCRIPTORS)
@pytest.mark.parametrize("n", N_DESCRIPTORS)
@pytest.mark.parametrize("m", M_DESCRIPTORS)
def test_every_tnm_cell_gets_the_ajcc_stage_class(t: str, n: str, m: str) -> None:
    expected = "IV" if m != "M0" else _COARSE_M0[t][N_DESCRIPTORS.index(n)]
    labels = labels_for("stage", "malignant", t, n, m)
    assert labels["stage"] == expected
    assert labels["label"] == f"stage_{expected}"
    assert labels_for("t", "malignant", t, n, m)["label"] == t[:2]
    assert labels_for("binary", "malignant", t, n, m)["label"] == "malignant"


@pytest.mark.parametrize(
    ("classes", "category", "label"),
    [
        ("stage", "normal", "normal"),
        ("stage", "benign", "benign"),
        ("t", "normal", "normal"),
        ("t", "benign", "benign"),
        ("binary", "benign", "benign"),
    ],
)
def test_non_malignant_cases_have_no_tnm(classes: str, category: str, label: str) -> None:
    labels = labels_for(classes, category)
    assert labels["label"] == label
    assert labels["t"] == labels["n"] == labels["m"] == labels["stage_group"] == ""


@pytest.mark.parametrize(
    ("patients", "weights", "expected"),
    [
        (12, (), [2, 2, 2, 2, 2, 2]),
        (8, (), [2, 2, 1, 1, 1, 1]),
        (10, (5, 1, 1, 1, 1, 1), [5, 1, 1, 1, 1, 1]),
        (7, (1, 0, 0, 0, 0, 1), [4, 0, 0, 0, 0, 3]),
    ],
)
def test_class_counts_are_balanced_or_weighted(
    patients: int, weights: tuple[float, ...], expected: list[int]
) -> None:
    counts = class_counts(CLASS_SETS["stage"], patients, weights)
    assert list(counts.values()) == expected
    assert sum(counts.values()) == patients


@pytest.mark.parametrize("weights", [(1.0, 2.0), (-1, 1, 1, 1, 1, 1), (0, 0, 0, 0, 0, 0)])
def test_bad_class_weights_are_config_errors(weights: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError):
        class_counts(CLASS_SETS["stage"], 6, weights)


def test_binary_has_no_normal_class() -> None:
    assert "normal" not in CLASS_SETS["binary"]


@pytest.mark.parametrize("requested", CLASS_SETS["stage"][2:])
def test_sampled_stage_truth_is_consistent_with_its_class(requested: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        truth = sample_truth(requested, "stage", rng, Difficulty())
        t = t_from_diameter(truth.diameter_mm, truth.invasion)  # type: ignore[arg-type]
        assert labels_for("stage", "malignant", t, truth.n, truth.m)["label"] == requested


@pytest.mark.parametrize("requested", CLASS_SETS["t"][2:])
def test_sampled_t_truth_has_the_requested_t(requested: str) -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        truth = sample_truth(requested, "t", rng, Difficulty())
        assert t_from_diameter(truth.diameter_mm, truth.invasion).startswith(requested)  # type: ignore[arg-type]


def test_near_threshold_knob_moves_sizes_to_band_edges() -> None:
    rng = np.random.default_rng(2)

    def edge_share(fraction: float) -> float:
        near = 0
        total = 0
        for _ in range(400):
            truth = sample_truth("T2", "t", rng, Difficulty(fraction, 2.0))
            lo, hi = T_BANDS_MM[t_from_diameter(truth.diameter_mm)]
            near += min(truth.diameter_mm - lo, hi - truth.diameter_mm) <= 2.0
            total += 1
        return near / total

    assert edge_share(1.0) > 0.95
    assert edge_share(0.0) < 0.6


def test_benign_truth_is_small_and_never_staged() -> None:
    rng = np.random.default_rng(3)
    truths = [sample_truth("benign", "stage", rng, Difficulty()) for _ in range(200)]
    assert all(5.0 <= t.diameter_mm <= 24.0 for t in truths)
    assert all(t.n == t.m == "" for t in truths)
    assert {t.calcification for t in truths} >= {"none", "central", "popcorn"}
