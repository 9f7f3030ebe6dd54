"""Realism: FID in sample space against torchmetrics, and the paired patient bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from lungcancer.progression.realism import (
    _Precomputed,
    baseline_for,
    frechet_distance,
    paired_fid_difference,
    score_realism,
)


@pytest.mark.parametrize(("n_real", "n_fake", "width"), [(40, 30, 64), (300, 200, 16)])
def test_frechet_distance_equals_torchmetrics_fid(n_real: int, n_fake: int, width: int) -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n_real, width))
    fake = rng.normal(0.3, 1.2, size=(n_fake, width))
    metric = FrechetInceptionDistance(feature=_Precomputed(width))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(metric.compute()), rel=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift() -> None:
    real = np.random.default_rng(1).normal(size=(50, 200))  # fewer samples than features
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    shifted = real + 0.5
    assert frechet_distance(real, shifted) == pytest.approx(0.25 * 200, rel=1e-6)


def test_paired_bootstrap_separates_a_closer_method_and_not_an_equal_one() -> None:
    rng = np.random.default_rng(2)
    n, width = 60, 32
    real = rng.normal(size=(n, width))
    close = real + rng.normal(0, 0.1, size=(n, width))
    far = real + 0.6 + rng.normal(0, 0.1, size=(n, width))
    low, high = paired_fid_difference(real, close, far, n_boot=200)
    assert high < 0  # the whole interval says "closer than the baseline"
    # Two methods drawn alike: the interval holds zero and is symmetric-ish around it.
    twin_a = real + rng.normal(0, 0.3, size=(n, width))
    twin_b = real + rng.normal(0, 0.3, size=(n, width))
    low, high = paired_fid_difference(real, twin_a, twin_b, n_boot=200)
    assert low < 0 < high
    # Seeded: the same draw gives the same interval.
    assert paired_fid_difference(real, twin_a, twin_b, n_boot=50, seed=3) == (
        paired_fid_difference(real, twin_a, twin_b, n_boot=50, seed=3)
    )


def test_lesion_only_frames_are_compared_with_geometric_growths_lesion_only_frames() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 8))
    # The spread rows share one large shift (the same drawing on both methods); without it the
    # GAN's lesion is the closer one.
    spread = np.full(8, 3.0)
    methods = {
        "gan": real + spread + 0.3,
        "geometric_growth": real + spread + 0.2,
        "gan_lesion_only": real + 0.1,
        "geometric_growth_lesion_only": real + 0.6,
    }
    names = list(methods)
    assert baseline_for("gan", names) == "geometric_growth"
    assert baseline_for("gan_lesion_only", names) == "geometric_growth_lesion_only"
    assert baseline_for("geometric_growth", names) is None
    assert baseline_for("geometric_growth_lesion_only", names) is None
    # Without geometric growth's lesion-only frames there is nothing like to compare with.
    assert baseline_for("gan_lesion_only", ["gan_lesion_only", "geometric_growth"]) == (
        "geometric_growth"
    )
    out = score_realism(real, methods, n_boot=50)
    assert out["gan_lesion_only"]["fid_baseline"] == "geometric_growth_lesion_only"
    assert out["gan_lesion_only"]["fid_minus_geometric"] < 0
    assert out["gan_lesion_only"]["fid_minus_geometric_ci95"][1] < 0
    assert out["gan"]["fid_minus_geometric"] > 0
    assert "fid_minus_geometric" not in out["geometric_growth_lesion_only"]
