"""NIfTI / NRRD / MetaImage round trips, masks and their geometry checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the usual name)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lungcancer.errors import GeometryMismatchError, ImageReadError, LungCancerError
from lungcancer.io import Scan, read_image, read_mask, write_mask, write_volume

# A rotation about z by 30 degrees: columns are the world directions of the voxel axes.
_C, _S = float(np.cos(np.pi / 6)), float(np.sin(np.pi / 6))
ROTATED = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)
SUFFIXES = [".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd"]


def _ct(shape: tuple[int, int, int] = (3, 5, 4), *, integer: bool = True) -> Scan:
    rng = np.random.default_rng(0)
    values = rng.integers(-1024, 3000, size=shape).astype(np.float32)
    if not integer:
        values += 0.25
    return Scan(
        array=values,
        spacing_mm=(2.5, 0.7, 0.8),
        origin_xyz_mm=(-120.5, 33.0, 410.25),
        direction_xyz=ROTATED,
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_volume_round_trip_keeps_values_and_geometry(tmp_path: Path, suffix: str) -> None:
    scan = _ct()
    path = tmp_path / f"ct{suffix}"
    write_volume(scan, path)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, scan.array)
    np.testing.assert_allclose(back.spacing_mm, scan.spacing_mm, rtol=1e-6)
    np.testing.assert_allclose(back.origin_xyz_mm, scan.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(back.direction_xyz, scan.direction_xyz, atol=1e-6)
    assert (back.modality, back.intensity) == ("CT", "HU")
    assert back.meta["source_dtype"] == "int16"


@pytest.mark.parametrize(
    ("scan", "stored"),
    [
        (_ct(integer=True), sitk.sitkInt16),
        (_ct(integer=False), sitk.sitkFloat32),
        (dataclasses.replace(_ct(), array=np.full((3, 5, 4), 40000.0, np.float32)), 8),
    ],
    ids=["integer-hu", "fractional-hu", "out-of-int16"],
)
def test_storage_type_keeps_hu_exact(tmp_path: Path, scan: Scan, stored: int) -> None:
    path = tmp_path / "ct.nrrd"
    write_volume(scan, path)
    assert sitk.ReadImage(str(path)).GetPixelID() == stored
    np.testing.assert_array_equal(read_image(path).array, scan.array)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_unit_intensity_and_modality_survive_a_round_trip(tmp_path: Path, suffix: str) -> None:
    scan = Scan(
        array=np.linspace(0, 1, 20, dtype=np.float32).reshape(1, 4, 5),
        spacing_mm=(1.0, 0.5, 0.5),
        modality="OT",
        intensity="unit",
    )
    write_volume(scan, tmp_path / f"slice{suffix}")
    back = read_image(tmp_path / f"slice{suffix}")
    assert (back.modality, back.intensity) == ("OT", "unit")
    np.testing.assert_array_equal(back.array, scan.array)


def test_write_is_atomic_and_overwrites_without_leftovers(tmp_path: Path) -> None:
    write_volume(_ct(), tmp_path / "ct.mhd")
    replacement = dataclasses.replace(_ct(), array=np.zeros((3, 5, 4), np.float32))
    write_volume(replacement, tmp_path / "ct.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.mhd", "ct.zraw"]
    assert read_image(tmp_path / "ct.mhd").array.max() == 0.0


def test_unknown_extension_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(LungCancerError, match="unknown volume file extension"):
        write_volume(_ct(), tmp_path / "ct.vol")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_mask_round_trip_is_compressed_uint8(tmp_path: Path, suffix: str) -> None:
    scan = _ct((4, 16, 16))
    mask = np.zeros(scan.shape, dtype=bool)
    mask[1:3, 4:9, 5:12] = True
    path = tmp_path / f"mask{suffix}"
    write_mask(mask, scan, path)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    assert path.stat().st_size < mask.size  # compressed below one byte per voxel
    np.testing.assert_array_equal(read_mask(path, scan), mask)


def test_mask_geometry_mismatch_lists_each_property(tmp_path: Path) -> None:
    scan = _ct()
    shifted = dataclasses.replace(scan, spacing_mm=(5.0, 0.7, 0.8), origin_xyz_mm=(0.0, 0.0, 0.0))
    write_mask(np.ones(scan.shape, dtype=bool), shifted, tmp_path / "mask.nrrd")
    with pytest.raises(GeometryMismatchError) as info:
        read_mask(tmp_path / "mask.nrrd", scan)
    found = str(info.value.found)
    assert "spacing_mm (z, y, x): image (2.5, 0.7, 0.8) vs mask (5, 0.7, 0.8)" in found
    assert "origin_xyz_mm: image (-120.5, 33, 410.25) vs mask (0, 0, 0)" in found
    assert "size" not in found and "direction" not in found
    assert info.value.path == str(tmp_path / "mask.nrrd")


def test_mask_of_another_size_is_a_mismatch(tmp_path: Path) -> None:
    other = _ct((3, 6, 4))
    write_mask(np.ones(other.shape, dtype=bool), other, tmp_path / "mask.nii.gz")
    with pytest.raises(GeometryMismatchError, match=r"size \(z, y, x\): image \(3, 5, 4\)"):
        read_mask(tmp_path / "mask.nii.gz", _ct())


def test_mask_within_float_tolerance_is_accepted(tmp_path: Path) -> None:
    scan = _ct()
    nudged = dataclasses.replace(
        scan,
        spacing_mm=(2.5 * (1 + 1e-6), 0.7, 0.8),
        origin_xyz_mm=(-120.5 + 1e-5, 33.0, 410.25),
    )
    write_mask(np.ones(scan.shape, dtype=bool), nudged, tmp_path / "mask.nrrd")
    assert read_mask(tmp_path / "mask.nrrd", scan).all()


def test_write_mask_refuses_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(GeometryMismatchError, match="shape"):
        write_mask(np.ones((2, 5, 4), dtype=bool), _ct(), tmp_path / "mask.nrrd")


def test_truncated_volume_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ct.nrrd"
    write_volume(_ct((8, 32, 32)), path, compress=False)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(ImageReadError, match="corrupt, truncated or incomplete") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_detached_header_without_its_data_file(tmp_path: Path) -> None:
    write_volume(_ct(), tmp_path / "ct.mhd")
    (tmp_path / "ct.zraw").unlink()
    with pytest.raises(ImageReadError, match="corrupt, truncated or incomplete"):
        read_image(tmp_path / "ct.mhd")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
    spacing=st.tuples(*[st.floats(0.1, 10.0) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-500.0, 500.0) for _ in range(3)]),
    seed=st.integers(0, 2**16),
    suffix=st.sampled_from([".nrrd", ".mha", ".nii.gz"]),
)
def test_any_small_volume_round_trips(
    tmp_path: Path,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    seed: int,
    suffix: str,
) -> None:
    values = np.random.default_rng(seed).normal(0, 500, size=shape).astype(np.float32)
    scan = Scan(array=values, spacing_mm=spacing, origin_xyz_mm=origin)
    path = tmp_path / f"v{suffix}"
    write_volume(scan, path)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, values)
    np.testing.assert_allclose(back.spacing_mm, spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin_xyz_mm, origin, atol=1e-3)
