"""Pointing game and energy share on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungcancer.errors import GeometryMismatchError
from lungcancer.explain.scores import energy_share, pointing_game_hit, summarise


def _mask() -> np.ndarray:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:10, 5:10] = 1
    return mask


def test_energy_share_is_the_exact_fraction_inside() -> None:
    cam = np.zeros((20, 20), dtype=np.float32)
    cam[5:10, 5:10] = 1.0  # 25 units inside
    cam[15:20, 15:20] = 3.0  # 75 units outside
    assert energy_share(cam, _mask()) == pytest.approx(0.25)
    assert energy_share(np.zeros((20, 20)), _mask()) == 0.0
    assert energy_share(np.ones((20, 20)), np.ones((20, 20))) == pytest.approx(1.0)


def test_energy_share_stays_in_unit_interval_for_random_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        cam = rng.normal(size=(8, 9, 10))  # negatives are clipped, never counted
        mask = rng.random((8, 9, 10)) > 0.7
        share = energy_share(cam, mask)
        assert 0.0 <= share <= 1.0


def test_pointing_game_tolerance_in_pixels() -> None:
    cam = np.zeros((20, 20), dtype=np.float32)
    cam[12, 7] = 1.0  # 3 px below the lesion's last row (row 9)
    assert not pointing_game_hit(cam, _mask(), tolerance_px=2)
    assert pointing_game_hit(cam, _mask(), tolerance_px=3)
    cam[7, 7] = 2.0
    assert pointing_game_hit(cam, _mask(), tolerance_px=0)


def test_pointing_game_misses_without_evidence_or_lesion() -> None:
    assert not pointing_game_hit(np.zeros((20, 20)), _mask())
    assert not pointing_game_hit(np.ones((20, 20)), np.zeros((20, 20)))


def test_pointing_game_in_3d() -> None:
    cam = np.zeros((6, 20, 20))
    mask = np.zeros((6, 20, 20))
    mask[2, 5:10, 5:10] = 1
    cam[2, 6, 6] = 1
    assert pointing_game_hit(cam, mask, tolerance_px=0)
    cam[5, 6, 6] = 2  # same in-plane spot, 3 slices away
    assert not pointing_game_hit(cam, mask, tolerance_px=2)


def test_shape_mismatch_is_a_geometry_error() -> None:
    with pytest.raises(GeometryMismatchError, match="different shapes"):
        energy_share(np.zeros((4, 4)), np.zeros((5, 5)))


def test_summary_over_pairs() -> None:
    mask = _mask()
    hit = np.zeros((20, 20))
    hit[6, 6] = 1.0
    miss = np.zeros((20, 20))
    miss[18, 18] = 1.0
    summary = summarise([(hit, mask), (miss, mask)], tolerance_px=1)
    assert summary.n == 2
    assert summary.hit_rate == pytest.approx(0.5)
    assert summary.mean_energy_share == pytest.approx(0.5)
    assert summary.as_dict()["pointing_game_hit_rate"] == pytest.approx(0.5)
    empty = summarise([])
    assert empty.n == 0 and math.isnan(empty.hit_rate)
