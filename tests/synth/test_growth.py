"""The growth model: doubling times, Gompertz calibration, monotone spread."""

from __future__ import annotations

import numpy as np
import pytest

from lungcancer.errors import LungCancerError
from lungcancer.synth import growth


@pytest.mark.parametrize(
    ("histology", "expected_median_days"),
    [
        ("adenocarcinoma", 260.0),
        ("squamous", 130.0),
        ("large_cell", 100.0),
        ("ground_glass", 850.0),
    ],
)
def test_vdt_draws_centre_on_the_histology_median(
    histology: str, expected_median_days: float
) -> None:
    rng = np.random.default_rng(0)
    draws = np.array([growth.sample_vdt_days(histology, rng) for _ in range(2000)])
    prior = growth.HISTOLOGY_VDT_DAYS[histology]
    assert np.median(draws) == pytest.approx(expected_median_days, rel=0.08)
    assert draws.min() >= prior.min_days and draws.max() <= prior.max_days


def test_squamous_grows_faster_than_adenocarcinoma_than_ground_glass() -> None:
    rng = np.random.default_rng(1)

    def median(h: str) -> float:
        return float(np.median([growth.sample_vdt_days(h, rng) for _ in range(500)]))

    assert median("squamous") < median("adenocarcinoma") < median("ground_glass")


def test_unknown_histology_is_an_actionable_error() -> None:
    with pytest.raises(LungCancerError, match="adenocarcinoma"):
        growth.sample_vdt_days("carcinoid-ish", np.random.default_rng(0))


@pytest.mark.parametrize("diameter_mm", [4.0, 12.5, 30.0, 71.0])
def test_volume_and_diameter_are_inverse(diameter_mm: float) -> None:
    volume = growth.volume_ml_from_diameter(diameter_mm)
    assert growth.diameter_mm_from_volume(volume) == pytest.approx(diameter_mm)
    assert isinstance(volume, float)


def test_sphere_of_10_mm_is_half_a_millilitre() -> None:
    assert growth.volume_ml_from_diameter(10.0) == pytest.approx(0.5236, rel=1e-3)


@pytest.mark.parametrize("vdt_days", [60.0, 130.0, 260.0, 850.0])
def test_gompertz_initial_doubling_time_equals_vdt(vdt_days: float) -> None:
    v0 = 0.5
    # Over a small step the local doubling time is the calibrated VDT.
    step_months = 0.01
    v1 = growth.gompertz_volume_ml(v0, step_months, vdt_days)
    local_vdt_days = step_months * growth.DAYS_PER_MONTH * np.log(2.0) / np.log(v1 / v0)
    assert local_vdt_days == pytest.approx(vdt_days, rel=1e-3)


def test_gompertz_slows_down_and_never_passes_the_plateau() -> None:
    months = np.linspace(0.0, 240.0, 200)
    volume = growth.gompertz_volume_ml(1.0, months, 100.0, vmax_ml=500.0)
    assert np.all(np.diff(volume) > 0)
    assert volume[-1] < 500.0
    # Later doublings take longer than the first one.
    assert np.all(np.diff(np.log(volume)) <= np.diff(np.log(volume))[0] + 1e-12)


def test_diameter_at_months_matches_the_volume_curve_and_keeps_scalars_scalar() -> None:
    d = growth.diameter_at_months(15.0, 12.0, 200.0)
    v = growth.gompertz_volume_ml(growth.volume_ml_from_diameter(15.0), 12.0, 200.0)
    assert isinstance(d, float)
    assert d == pytest.approx(growth.diameter_mm_from_volume(v))
    series = growth.diameter_at_months(15.0, np.array([0.0, 6.0, 12.0]), 200.0)
    assert series.shape == (3,)
    assert series[0] == pytest.approx(15.0)
    assert series[2] == pytest.approx(d)


def test_impossible_growth_parameters_are_rejected() -> None:
    with pytest.raises(LungCancerError, match="vmax_ml"):
        growth.gompertz_volume_ml(2000.0, 1.0, 100.0, vmax_ml=1000.0)


def test_spread_probabilities_rise_with_size_and_are_nested() -> None:
    sizes = np.linspace(3.0, 120.0, 60)
    probs = [growth.spread_probabilities(float(d)) for d in sizes]
    for name in ("n1_plus", "n2_plus", "n3", "m1a"):
        values = np.array([getattr(p, name) for p in probs])
        assert np.all(np.diff(values) > 0), name
    assert all(p.n3 <= p.n2_plus <= p.n1_plus for p in probs)
    assert probs[0].n1_plus < 0.1 < 0.5 < probs[-1].n1_plus


def test_spread_is_monotone_for_a_growing_tumour() -> None:
    rng = np.random.default_rng(3)
    order = ["N0", "N1", "N2", "N3"]
    for _ in range(200):
        draw = float(rng.random())
        ranks = [order.index(growth.n_from_draw(d, draw)) for d in np.linspace(5, 110, 30)]
        assert ranks == sorted(ranks)
        ms = [growth.m_from_draw(d, draw) for d in np.linspace(5, 110, 30)]
        assert ms == sorted(ms, key=["M0", "M1a"].index)


@pytest.mark.parametrize(
    ("current", "pathway"), [("N0", "n"), ("N1", "n"), ("N2", "n"), ("M0", "m"), ("M1a", "m")]
)
def test_consistent_draw_never_exceeds_the_fixed_baseline(current: str, pathway: str) -> None:
    rng = np.random.default_rng(4)
    order = ["N0", "N1", "N2", "N3"] if pathway == "n" else ["M0", "M1a"]
    for diameter_mm in (8.0, 35.0, 80.0):
        for _ in range(50):
            draw = growth.draw_consistent_with(current, diameter_mm, rng, pathway)
            found = (growth.n_from_draw if pathway == "n" else growth.m_from_draw)(
                diameter_mm, draw
            )
            assert order.index(found) <= order.index(current)
