"""LungSim growth is not self-similar: spicules keep their width, lobulations deepen, a
part-solid core grows faster than the nodule, necrosis and cavitation appear past a size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lungcancer.synth.lesion import (
    LesionLook,
    LesionShape,
    render_lesion,
    sample_look,
    sample_shape,
)

_CENTRE = (0.0, 0.0, 0.0)


def _spiculated(baseline_radius_mm: float) -> LesionShape:
    shape = sample_shape(np.random.default_rng(3), "spiculated", _CENTRE)
    # One spicule along +x, in the axial plane, so its cross-section is easy to read.
    shape = replace(
        shape,
        spike_dirs=np.array([[1.0, 0.0, 0.0]]),
        spike_lengths=np.array([0.8]),
        bump_amps=np.zeros_like(shape.bump_amps),
    )
    return shape.scaled(baseline_radius_mm).with_baseline(baseline_radius_mm)


def _spicule_width_mm(shape: LesionShape) -> float:
    """Width (mm) across the spicule half-way along it, in the axial plane."""
    x = shape.radius_mm * 1.4
    ys = np.linspace(-5.0, 5.0, 2001)
    _, s_full = shape.fields(np.full_like(ys, x), ys, 0.0)
    inside = ys[s_full < 1.0]
    return float(inside.max() - inside.min())


def test_spicules_keep_their_width_in_mm_as_the_lesion_grows() -> None:
    base = _spiculated(6.0)
    grown = base.scaled(2.0)
    assert grown.growth_ratio == pytest.approx(2.0)
    assert _spicule_width_mm(grown) == pytest.approx(_spicule_width_mm(base), rel=0.1)
    # A self-similar lesion (no baseline) fattens its spicules in proportion.
    similar = replace(base, baseline_radius_mm=0.0).scaled(2.0)
    assert _spicule_width_mm(similar) > 1.7 * _spicule_width_mm(base)
    # They lengthen with the body.
    assert grown.extent_mm > 1.9 * base.extent_mm


def test_lobulations_deepen_with_size() -> None:
    shape = sample_shape(np.random.default_rng(5), "lobulated", _CENTRE).scaled(5.0)
    base = shape.with_baseline(5.0)
    u = np.column_stack([np.cos(a := np.linspace(0, 2 * np.pi, 360)), np.sin(a), 0 * a])

    def irregularity(s: LesionShape) -> float:
        r = s.body_radius(u)
        return float(r.std() / r.mean())

    assert irregularity(base) == pytest.approx(irregularity(replace(base, baseline_radius_mm=0)))
    assert irregularity(base.scaled(2.0)) > 1.2 * irregularity(base)


def _render(shape: LesionShape, look: LesionLook) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-40.0, 40.0, 161).astype(np.float32)
    layer = render_lesion(shape, look, axis, axis, 0.0, 1.0, -850.0)
    assert layer is not None
    return layer.replace_frac, layer.body_frac


def test_part_solid_core_grows_faster_than_the_nodule() -> None:
    rng = np.random.default_rng(1)
    d0 = 12.0
    look0 = sample_look(rng, "part_solid", diameter_mm=d0)
    look1 = look0.at_size(18.0, d0)
    assert look1.core_fraction == pytest.approx(min(1.0, look0.core_fraction * 1.5))
    shape = sample_shape(np.random.default_rng(2), "smooth", _CENTRE)
    r0 = d0 / shape.axial_diameter_mm()
    base = shape.scaled(r0).with_baseline(r0)
    solid0, body0 = _render(base, look0)
    solid1, body1 = _render(base.scaled(1.5), look1)
    # Share of the nodule that is solid tissue rises (spicule-free, so solid = core).
    assert solid1.sum() / body1.sum() > 1.5 * solid0.sum() / body0.sum()
    # Enough growth makes the nodule solid.
    assert look0.at_size(d0 / look0.core_fraction + 1.0, d0).core_fraction == 1.0


def test_necrosis_and_cavity_appear_past_their_onset_size() -> None:
    rng = np.random.default_rng(0)
    look = sample_look(rng, "solid", diameter_mm=20.0, squamous=True)
    look = replace(look, necrosis_onset_mm=35.0, cavity_onset_mm=float("inf"))
    assert not look.at_size(20.0, 20.0).necrosis
    assert not look.at_size(34.0, 20.0).necrosis
    grown = look.at_size(40.0, 20.0)
    assert grown.necrosis
    shape = sample_shape(np.random.default_rng(2), "smooth", _CENTRE)
    r = 40.0 / shape.axial_diameter_mm()
    shape = shape.scaled(r).with_baseline(r * 0.5)
    axis = np.linspace(-30.0, 30.0, 121).astype(np.float32)
    before = render_lesion(shape, look.at_size(34.0, 20.0), axis, axis, 0.0, 1.0, -850.0)
    after = render_lesion(shape, grown, axis, axis, 0.0, 1.0, -850.0)
    assert before is not None and after is not None
    # The centre is darker once necrotic; the rim is unchanged.
    assert after.replace_hu[60, 60] < before.replace_hu[60, 60] - 15.0
    assert after.replace_hu[60, 60 + 32] == pytest.approx(before.replace_hu[60, 60 + 32])
    cavitating = replace(look, cavity_onset_mm=30.0)
    assert not cavitating.at_size(25.0, 20.0).cavity
    assert cavitating.at_size(31.0, 20.0).cavity


def test_sample_look_sets_baseline_state_from_the_onsets() -> None:
    for seed in range(40):
        look = sample_look(np.random.default_rng(seed), "solid", diameter_mm=42.0)
        assert look.necrosis == (look.necrosis_onset_mm <= 42.0)
        assert not look.cavity  # not squamous: never cavitates
        assert look.cavity_onset_mm == float("inf")
