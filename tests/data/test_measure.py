"""measure: greatest diameter in physical space, volume, T descriptor and Lung-RADS band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_builders import sphere_volume

from lungcancer.data.measure import measure_file, measure_lesion, measure_lesions
from lungcancer.errors import LungCancerError


def _ellipsoid(
    semi_axes_mm: tuple[float, float, float],
    spacing_mm: tuple[float, float, float],
    rotation_deg: float = 0.0,
    offset_vox: tuple[float, float, float] = (0.3, -0.2, 0.1),
) -> np.ndarray:
    spacing = np.asarray(spacing_mm)
    shape = np.ceil((2 * max(semi_axes_mm) + 8) / spacing).astype(int)
    centre = ((shape - 1) / 2 + np.asarray(offset_vox)) * spacing
    grid = np.indices(shape).transpose(1, 2, 3, 0) * spacing - centre
    angle = np.deg2rad(rotation_deg)
    # Rotate in the y-x plane, so a tilted lesion is measured along a diagonal.
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    local = grid @ rotation
    return ((local / np.asarray(semi_axes_mm)) ** 2).sum(axis=-1) <= 1.0


@pytest.mark.parametrize(
    ("semi_axes_mm", "spacing_mm", "rotation_deg"),
    [
        ((5.0, 5.0, 5.0), (1.0, 1.0, 1.0), 0.0),  # 10 mm sphere, isotropic
        ((12.0, 12.0, 12.0), (2.5, 0.7, 0.7), 0.0),  # 24 mm sphere, thick slices
        ((16.0, 16.0, 16.0), (5.0, 0.6, 0.6), 0.0),  # 32 mm sphere, 5 mm slices
        ((4.0, 9.0, 5.0), (1.25, 0.8, 0.8), 30.0),  # 18 mm ellipsoid, tilted in-plane
        ((14.0, 6.0, 6.0), (1.0, 0.7, 0.7), 0.0),  # 28 mm ellipsoid along z
    ],
)
def test_diameter_of_known_shapes_within_one_voxel(
    semi_axes_mm: tuple[float, float, float],
    spacing_mm: tuple[float, float, float],
    rotation_deg: float,
) -> None:
    mask = _ellipsoid(semi_axes_mm, spacing_mm, rotation_deg)
    measured = measure_lesion(mask, spacing_mm)
    true_diameter = 2 * max(semi_axes_mm)
    # One voxel along the measured axis: the largest spacing bounds it.
    assert abs(measured.diameter_mm - true_diameter) <= max(spacing_mm)
    true_volume_ml = 4 / 3 * np.pi * np.prod(semi_axes_mm) / 1000
    assert measured.volume_ml == pytest.approx(true_volume_ml, rel=0.12)


@pytest.mark.parametrize(
    ("diameter_mm", "t_descriptor", "band"),
    [(9.0, "T1a", "4A"), (25.0, "T1c", "4B"), (45.0, "T2b", "4B")],
)
def test_t_descriptor_and_lung_rads_follow_the_size(
    diameter_mm: float, t_descriptor: str, band: str
) -> None:
    radius = diameter_mm / 2
    measured = measure_lesion(_ellipsoid((radius,) * 3, (1.0, 1.0, 1.0)), (1.0, 1.0, 1.0))
    assert measured.t_descriptor == t_descriptor
    assert measured.lung_rads_band == band


def test_components_are_measured_separately_largest_first() -> None:
    mask = np.zeros((20, 40, 40), dtype=bool)
    zz, yy, xx = np.indices(mask.shape)
    mask |= (zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 <= 3**2
    mask |= (zz - 10) ** 2 + (yy - 28) ** 2 + (xx - 28) ** 2 <= 6**2
    lesions = measure_lesions(mask, (1.0, 1.0, 1.0))
    assert len(lesions) == 2
    assert lesions[0].diameter_mm > lesions[1].diameter_mm
    assert lesions[0].center_zyx == pytest.approx((10, 28, 28), abs=0.01)
    assert lesions[1].center_zyx == pytest.approx((10, 10, 10), abs=0.01)


def test_single_slice_mask_measures_in_plane() -> None:
    yy, xx = np.mgrid[0:40, 0:40]
    disk = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    measured = measure_lesion(disk, (0.5, 0.5))
    assert measured.in_plane_only
    assert abs(measured.diameter_mm - 15.0) <= 0.5


def test_empty_mask_is_a_clear_error() -> None:
    with pytest.raises(LungCancerError) as raised:
        measure_lesions(np.zeros((3, 8, 8), dtype=bool), (1.0, 1.0, 1.0), source="m.nrrd")
    message = str(raised.value)
    assert "empty" in message and "m.nrrd" in message and "what to do" in message


def test_measure_file_uses_the_image_spacing(tmp_path: Path) -> None:
    image, mask = sphere_volume(
        tmp_path,
        "case",
        shape=(10, 30, 30),
        spacing_mm=(3.0, 0.5, 0.5),
        centres_zyx=((5, 15, 15),),
        radius_mm=6.0,
    )
    lesions = measure_file(str(image), str(mask))
    # A 12 mm sphere: 24 voxels across in-plane, only 5 slices of 3 mm tall.
    assert len(lesions) == 1
    assert abs(lesions[0].diameter_mm - 12.0) <= 3.0
    assert lesions[0].volume_ml == pytest.approx(4 / 3 * np.pi * 6.0**3 / 1000, rel=0.2)
    assert lesions[0].voxel_count > 0
