"""Spread through a volume (`plan_spread_volume`, `draw_spread_volume`, the 3D tumour guard).

The volume is a stack of hand-made chest slices (`test_spread._chest`): the lungs are ellipses
that narrow toward the apex, the tumour a ball in one lung, so every finding's expected place
in z is known.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_spread import SPACING, _chest

from lungcancer.progression.spread import (
    VolumeSpreadPlan,
    draw_spread,
    draw_spread_volume,
    plan_spread,
    plan_spread_volume,
    slice_plan,
    tumour_guard,
)
from lungcancer.progression.timeline import SimulationError

DEPTH = 41
SLICE_MM = 3.0
LESION_SLICE = 20
# The stack: slice k is the chest slice with its lungs' row extent scaled by LUNG_SCALE[k];
# above the lesion slice (cranial +1) they shrink toward an apex at the top.
LUNG_SCALE = np.clip(1.0 - np.maximum(np.arange(DEPTH) - LESION_SLICE, 0) / 26.0, 0.3, 1.0)


def _volume(tumour_side: int = -1) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A chest volume (z, y, x), its tumour mask and the tumour's centre (voxels)."""
    base = _chest(tumour_side, lesion_radius_px=0.0)
    yy, xx = np.indices(base.image.shape)
    volume = np.empty((DEPTH, *base.image.shape), np.float32)
    rng = np.random.default_rng(5)
    for k in range(DEPTH):
        lungs = base.tumour_lung | base.other_lung
        # Shrink the lungs' height about row 62 by LUNG_SCALE[k]: outside it is soft tissue.
        keep = np.abs(yy - 62) <= 34 * LUNG_SCALE[k]
        tissue = 40.0 + 20.0 * rng.standard_normal(base.image.shape)
        volume[k] = np.where(lungs & ~keep, tissue, base.image)
    center = (float(LESION_SLICE), *base.lesion_center)
    zz = np.arange(DEPTH)[:, None, None]
    ball = np.sqrt(
        ((zz - center[0]) * SLICE_MM) ** 2
        + ((yy - center[1]) * SPACING[0]) ** 2
        + ((xx - center[2]) * SPACING[1]) ** 2
    )
    mask = ball <= 8.0  # a 16 mm tumour
    volume[mask] = 30.0
    return volume, mask, center


@pytest.fixture(scope="module")
def chest_volume() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    return _volume()


@pytest.fixture(scope="module")
def vplan(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
) -> VolumeSpreadPlan:
    volume, _, center = chest_volume
    return plan_spread_volume(volume, (SLICE_MM, *SPACING), center, cranial=1, seed=3)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(after - before) > 1e-3


def test_the_lesion_slice_gets_the_plan_of_that_slice_alone(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
    vplan: VolumeSpreadPlan,
) -> None:
    volume, _, center = chest_volume
    alone = plan_spread(volume[LESION_SLICE], SPACING, center[1:], seed=3)
    assert vplan.lesion_slice == LESION_SLICE and vplan.cranial == 1
    assert vplan.plan.nodes == alone.nodes and vplan.plan.nodule == alone.nodule
    np.testing.assert_array_equal(vplan.plan.effusion_depth_mm, alone.effusion_depth_mm)
    assert slice_plan(vplan, volume[LESION_SLICE], LESION_SLICE) is vplan.plan
    assert 40.0 <= vplan.effusion_top_mm <= 90.0


def test_nodes_are_ellipsoids_centred_on_the_lesion_slice(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
    vplan: VolumeSpreadPlan,
) -> None:
    volume, _, _ = chest_volume
    (drawn,), (what,) = draw_spread_volume(
        [volume], vplan, baseline=("N0", "M0"), targets=[("N2", "M0")]
    )
    assert what and all(w.startswith("N2 node") for w in what)
    changed = _changed(volume, drawn)
    slices = np.nonzero(changed.any(axis=(1, 2)))[0]
    half_mm = max(n.semi_axes_mm[1] for n in vplan.plan.nodes if n.level == "N2")
    reach = int(half_mm // SLICE_MM)
    assert LESION_SLICE in slices
    assert slices.min() >= LESION_SLICE - reach and slices.max() <= LESION_SLICE + reach
    assert slices.size >= 3  # a 14-27 mm node spans more than one 3 mm slice
    # The section shrinks away from the centre.
    area = changed.sum(axis=(1, 2))
    assert area[LESION_SLICE] >= area[slices.min()] and area[LESION_SLICE] >= area[slices.max()]
    # The lesion slice is what draw_spread draws on that slice alone.
    alone, _ = draw_spread(
        volume[LESION_SLICE], vplan.plan, baseline=("N0", "M0"), target=("N2", "M0")
    )
    np.testing.assert_array_equal(drawn[LESION_SLICE], alone)


@pytest.mark.parametrize("cranial", [1, -1])
def test_the_effusion_fills_the_slices_below_its_top_and_thins_toward_it(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]], cranial: int
) -> None:
    volume, _, center = chest_volume
    vplan = plan_spread_volume(volume, (SLICE_MM, *SPACING), center, cranial=cranial, seed=3)
    (drawn,), (what,) = draw_spread_volume(
        [volume], vplan, baseline=("N0", "M0"), targets=[("N0", "M1a")]
    )
    assert any(w.startswith("M1a effusion") for w in what)
    fluid = (drawn > -100) & (volume < -400)  # lung turned to fluid
    area = fluid.sum(axis=(1, 2))
    height_mm = (np.arange(DEPTH) - LESION_SLICE) * SLICE_MM * cranial
    # Nothing above the top; every slice well below it (all of them, toward the feet) has fluid.
    assert not area[height_mm >= vplan.effusion_top_mm].any()
    below = height_mm <= min(vplan.effusion_top_mm - 40.0, 0.0)
    assert (area[below] > 0).all()
    # Thinner in the 40 mm under the top than at full depth (where the lungs are as wide).
    tapering = (height_mm > vplan.effusion_top_mm - 40.0) & (height_mm < vplan.effusion_top_mm)
    tapering &= LUNG_SCALE == 1.0
    if tapering.any():
        assert area[tapering].max() < area[LESION_SLICE]
    # Only in the fluid's lung, on every slice: the side of the plan's effusion lung.
    side_cols = np.nonzero(vplan.plan.effusion_lung)[1].mean()
    other = np.nonzero(fluid)[2]
    assert ((other - vplan.plan.midline_x) * (side_cols - vplan.plan.midline_x) > 0).all()


def test_protected_voxels_and_frames_without_new_spread_are_left_alone(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
    vplan: VolumeSpreadPlan,
) -> None:
    volume, mask, center = chest_volume
    guard = tumour_guard(mask, center, 1.5, (SLICE_MM, *SPACING))
    frames, whats = draw_spread_volume(
        [volume, volume],
        vplan,
        baseline=("N0", "M0"),
        targets=[("N0", "M0"), ("N3", "M1a")],
        m1a_kind="both",
        protect=[guard, guard],
    )
    np.testing.assert_array_equal(frames[0], volume)
    assert whats[0] == []
    changed = _changed(volume, frames[1])
    assert changed.sum() > 500 and not (changed & guard).any()
    assert any("M1a nodule" in w for w in whats[1]) and any("N3" in w for w in whats[1])


def test_the_3d_tumour_guard_is_the_ball_grown_to_the_frame_s_size() -> None:
    spacing = (2.0, 1.0, 1.0)
    zz, yy, xx = np.indices((30, 64, 64))
    distance = np.sqrt(((zz - 15) * 2.0) ** 2 + (yy - 32) ** 2 + (xx - 20) ** 2)
    mask = distance <= 6.0
    guard = tumour_guard(mask, (15.0, 32.0, 20.0), 2.0, spacing, margin_mm=2.0)
    assert guard[distance <= 13.0].all()  # radius 6 x 2, plus the 2 mm margin, less a voxel
    assert not guard[distance >= 17.0].any()  # plus up to one 2 mm voxel of interpolation
    # The box it computes in gives what the whole grid gives.
    factor = 0.5
    coords = [
        c + (g - c) * factor
        for g, c in zip(np.indices(mask.shape), (15.0, 32.0, 20.0), strict=True)
    ]
    grown = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1)
    reference = ndimage.distance_transform_edt(grown < 0.5, sampling=spacing) <= 2.0
    np.testing.assert_array_equal(guard, reference)
    assert not tumour_guard(np.zeros_like(mask), (15.0, 32.0, 20.0), 2.0, spacing).any()


def test_a_volume_plan_needs_a_3d_axial_stack(
    chest_volume: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
) -> None:
    volume, _, center = chest_volume
    with pytest.raises(SimulationError, match="axial slices"):
        plan_spread_volume(volume[0], (SLICE_MM, *SPACING), center, cranial=1)
    with pytest.raises(SimulationError, match="axial slices"):
        plan_spread_volume(volume, (SLICE_MM, *SPACING), center, cranial=0)
    vplan = plan_spread_volume(volume, (SLICE_MM, *SPACING), center, cranial=1)
    with pytest.raises(ValueError, match="targets"):
        draw_spread_volume([volume], vplan, baseline=("N0", "M0"), targets=[])
