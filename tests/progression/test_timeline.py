"""The growth timeline: diameters from synth.growth, T and stage from staging, no regression."""

from __future__ import annotations

import numpy as np
import pytest

from lungcancer.progression.timeline import (
    SimulationError,
    check_no_regression,
    default_vdt_days,
    growth_timeline,
    resolve_histology,
    resolve_invasion,
)
from lungcancer.staging import coarse_stage, stage_group, t_from_diameter
from lungcancer.synth.growth import HISTOLOGY_VDT_DAYS, diameter_at_months


def test_timeline_follows_the_growth_model_and_the_staging_table() -> None:
    months = [0, 3, 6, 12, 18, 24]
    frames = growth_timeline(12.0, months, 130.0, n="N1", m="M0")
    expected = diameter_at_months(12.0, np.asarray(months, float), 130.0)
    assert [f.diameter_mm for f in frames] == pytest.approx(expected.tolist())
    for f in frames:
        assert f.t == t_from_diameter(f.diameter_mm)
        assert f.stage_group == stage_group(f.t, "N1", "M0")
        assert f.stage == coarse_stage(f.stage_group)
        assert (f.n, f.m) == ("N1", "M0")
    assert frames[0].diameter_mm == pytest.approx(12.0)
    assert frames[-1].diameter_mm > frames[0].diameter_mm


def test_histology_flags_map_to_growth_model_keys_and_medians() -> None:
    assert resolve_histology("adeno") == "adenocarcinoma"
    assert resolve_histology("large-cell") == "large_cell"
    assert default_vdt_days("squamous") == HISTOLOGY_VDT_DAYS["squamous"].median_days
    with pytest.raises(SimulationError, match="unknown histology"):
        resolve_histology("carcinoid")


def test_a_stage_earlier_than_the_current_one_is_refused_unless_allowed() -> None:
    shrinking = growth_timeline(45.0, [-24, 0], 100.0)
    assert (shrinking[0].stage, shrinking[1].stage) == ("I", "II")
    with pytest.raises(SimulationError, match="--allow-regression") as info:
        check_no_regression(shrinking, shrinking[1].stage, allow_regression=False)
    assert "month -24" in str(info.value)
    check_no_regression(shrinking, "II", allow_regression=True)
    # A known current stage above what the size gives (nodes) is also a regression.
    with pytest.raises(SimulationError):
        check_no_regression(growth_timeline(12.0, [0, 6], 200.0), "III", allow_regression=False)


def test_bad_timeline_requests_fail_clearly() -> None:
    with pytest.raises(SimulationError, match="positive"):
        growth_timeline(0.0, [0, 6], 100.0)
    with pytest.raises(SimulationError, match="no time points"):
        growth_timeline(10.0, [], 100.0)


def test_invasion_and_nodes_held_from_baseline_keep_the_stage() -> None:
    frames = growth_timeline(12.0, [0, 6], 200.0, n="N0", m="M0", invasion="chest_wall")
    assert [(f.t, f.stage) for f in frames] == [("T3", "II"), ("T3", "II")]
    check_no_regression(frames, "II", allow_regression=False)
    with pytest.raises(SimulationError, match="unknown invasion"):
        resolve_invasion("pleura")
