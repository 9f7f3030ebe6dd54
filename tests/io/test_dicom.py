"""DICOM reading: HU, geometry, series choice, and every bad input a user may bring."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_builders import ct_dataset, write_ct_series, write_dataset, write_enhanced_ct
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import JPEGLSLossless

from lungcancer.errors import ImageReadError, MissingDependencyError, UnsupportedModalityError
from lungcancer.io import list_dicom_series, read_image

OBLIQUE = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # row and column directions of a tilted plane


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {},
        {"shuffle": True, "n_slices": 5},
        {"orientation": OBLIQUE, "shuffle": True, "n_slices": 4},
        {"slope": 0.5, "intercept": -1000.0, "spacing_mm": (1.25, 0.5, 0.6)},
        {"origin_xyz_mm": (12.5, -7.0, -300.0), "spacing_mm": (5.0, 0.9, 0.9)},
    ],
    ids=["axial", "shuffled", "oblique", "slope", "origin"],
)
def test_series_hu_and_geometry_match_what_was_written(tmp_path: Path, kwargs: dict) -> None:
    truth = write_ct_series(tmp_path / "series", **kwargs)
    scan = read_image(tmp_path / "series")
    np.testing.assert_array_equal(scan.array, truth.hu_volume)
    np.testing.assert_allclose(scan.spacing_mm, truth.spacing_mm, rtol=1e-5)
    np.testing.assert_allclose(scan.origin_xyz_mm, truth.origin_xyz_mm, atol=1e-5)
    np.testing.assert_allclose(scan.direction_xyz, truth.direction_xyz, atol=1e-6)
    assert (scan.modality, scan.intensity) == ("CT", "HU")
    assert scan.meta["slice_order"] == "ImagePositionPatient"
    assert scan.meta["n_slices"] == len(truth.paths)


def test_world_positions_of_voxels_are_the_dicom_slice_positions(tmp_path: Path) -> None:
    truth = write_ct_series(tmp_path / "s", orientation=OBLIQUE, shuffle=True, n_slices=4)
    scan = read_image(tmp_path / "s")
    for z, path in enumerate(truth.paths):
        position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
        np.testing.assert_allclose(scan.voxel_to_world((z, 0, 0)), position, atol=1e-4)


def test_pydicom_bundled_ct_matches_pydicoms_own_values() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None, "pydicom's bundled test data must be available offline"
    reference = pydicom.dcmread(path)
    scan = read_image(path)
    assert scan.shape == (1, int(reference.Rows), int(reference.Columns))
    expected_hu = apply_modality_lut(reference.pixel_array, reference).astype(np.float32)
    np.testing.assert_allclose(scan.array[0], expected_hu, atol=1e-3)
    assert scan.spacing_mm[1:] == pytest.approx([float(v) for v in reference.PixelSpacing])
    assert scan.origin_xyz_mm == pytest.approx([float(v) for v in reference.ImagePositionPatient])


def test_single_file_is_a_one_slice_scan_with_thickness_as_z(tmp_path: Path) -> None:
    truth = write_ct_series(tmp_path / "s", n_slices=3)
    scan = read_image(truth.paths[1])
    assert scan.shape == (1, 16, 16)
    np.testing.assert_array_equal(scan.array[0], truth.hu_volume[1])
    assert scan.spacing_mm[0] == pytest.approx(2.5)
    assert "SliceThickness" in str(scan.meta["z_spacing_from"])


def test_file_without_preamble_is_read_by_content(tmp_path: Path) -> None:
    stored = np.arange(256, dtype=np.int16).reshape(16, 16)
    ds = ct_dataset(stored, position_xyz_mm=(0.0, 0.0, 0.0))
    path = write_dataset(ds, tmp_path / "image.bin", preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    scan = read_image(path)
    np.testing.assert_array_equal(scan.array[0], stored - 1024.0)


def test_several_series_picks_largest_ct_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "study"
    big = write_ct_series(folder, n_slices=4, prefix="a", seed=1)
    write_ct_series(folder, n_slices=2, prefix="b", seed=2)
    write_ct_series(folder, n_slices=6, prefix="c", modality="MR", seed=3)
    with caplog.at_level(logging.INFO, logger="lungcancer.io"):
        scan = read_image(folder)
    np.testing.assert_array_equal(scan.array, big.hu_volume)
    choice = str(scan.meta["series_choice"])
    assert choice.startswith(f"chose {scan.meta['series_key']} (CT, 4 files)")
    assert "(CT, 2 files)" in choice and "(MR, 6 files)" in choice
    assert choice in caplog.text


def test_series_can_be_chosen_by_uid_or_short_key(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_ct_series(folder, n_slices=4, prefix="a", seed=1)
    small = write_ct_series(folder, n_slices=2, prefix="b", seed=2)
    infos = list_dicom_series(folder)
    assert [(i.modality, i.n_files) for i in infos] == [("CT", 4), ("CT", 2)]
    assert small.series_uid not in repr(infos)
    by_uid = read_image(folder, series_uid=small.series_uid)
    by_key = read_image(folder, series_uid=infos[1].key)
    np.testing.assert_array_equal(by_uid.array, small.hu_volume)
    np.testing.assert_array_equal(by_key.array, small.hu_volume)
    with pytest.raises(ImageReadError, match="requested series is not in this folder"):
        read_image(folder, series_uid="nope")


def test_mr_where_ct_is_expected_is_refused_and_read_on_request(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "mr", modality="MR", n_slices=3)
    with pytest.raises(UnsupportedModalityError) as info:
        read_image(tmp_path / "mr")
    assert info.value.found is not None and "MR" in info.value.found
    assert info.value.hint is not None and "expect_ct=False" in info.value.hint
    scan = read_image(tmp_path / "mr", expect_ct=False)
    assert (scan.modality, scan.intensity) == ("MR", "unit")
    assert scan.array.min() >= 0.0 and scan.array.max() <= 1.0


def test_missing_rescale_tags_on_ct_is_an_error_explaining_hu(tmp_path: Path) -> None:
    stored = np.zeros((16, 16), dtype=np.int16)
    for z in range(3):
        ds = ct_dataset(stored, position_xyz_mm=(0.0, 0.0, 2.0 * z), slope=None, intercept=None)
        write_dataset(ds, tmp_path / "s" / f"{z}.dcm")
    with pytest.raises(ImageReadError, match="Hounsfield units cannot be trusted") as info:
        read_image(tmp_path / "s")
    assert "3 of 3 slices" in str(info.value.found)


def test_uneven_spacing_names_the_gap_and_can_be_accepted(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", z_offsets_mm=[0.0, 2.5, 5.0, 10.0, 12.5])
    with pytest.raises(ImageReadError, match="unevenly spaced") as info:
        read_image(tmp_path / "s")
    found = str(info.value.found)
    assert "gap of 5 mm between slices 2 and 3" in found and "median gap 2.5 mm" in found
    assert "allow_uneven=True" in str(info.value.hint)
    scan = read_image(tmp_path / "s", allow_uneven=True)
    assert scan.spacing_mm[0] == pytest.approx(2.5)
    assert "5 mm" in str(scan.meta["uneven_spacing"])


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", z_offsets_mm=[0.0, 2.5, 2.5, 5.0])
    with pytest.raises(ImageReadError, match="same position"):
        read_image(tmp_path / "s")


def test_missing_positions_fall_back_to_instance_number_and_say_so(tmp_path: Path) -> None:
    slices = [np.full((16, 16), 100 * z, dtype=np.int16) for z in range(3)]
    for z, stored in enumerate(slices):
        ds = ct_dataset(stored, position_xyz_mm=None, instance_number=z + 1)
        write_dataset(ds, tmp_path / "s" / f"file{2 - z}.dcm")
    scan = read_image(tmp_path / "s")
    np.testing.assert_array_equal(scan.array[:, 0, 0], [-1024.0, -924.0, -824.0])
    assert "InstanceNumber" in str(scan.meta["slice_order"])
    assert scan.spacing_mm[0] == pytest.approx(2.5)


def _truncate(path: Path, keep_bytes: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    return path


@pytest.mark.parametrize(
    ("keep_bytes", "words"),
    [(-100, "truncated"), (200, "truncated or corrupt"), (0, "empty file")],
    ids=["pixels-cut", "header-cut", "empty"],
)
def test_broken_single_file_names_file_and_problem(
    tmp_path: Path, keep_bytes: int, words: str
) -> None:
    truth = write_ct_series(tmp_path / "s", n_slices=1)
    path = truth.paths[0]
    _truncate(path, keep_bytes if keep_bytes >= 0 else path.stat().st_size + keep_bytes)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)
    assert words in str(info.value)


def test_broken_and_foreign_files_beside_a_series_are_skipped_and_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    truth = write_ct_series(folder, n_slices=3)
    shutil.copy(truth.paths[0], folder / "broken.dcm")
    _truncate(folder / "broken.dcm", 1000)
    (folder / "notes.txt").write_text("exported by PACS\n")
    with caplog.at_level(logging.WARNING, logger="lungcancer.io"):
        scan = read_image(folder)
    np.testing.assert_array_equal(scan.array, truth.hu_volume)
    skipped = str(scan.meta["skipped_files"])
    assert "broken.dcm: truncated" in skipped and "notes.txt: not a DICOM file" in skipped
    assert scan.meta["n_skipped_files"] == 2
    assert "broken.dcm" in caplog.text


def test_folder_without_any_dicom_lists_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="no readable DICOM") as info:
        read_image(tmp_path)
    assert "a.txt: not a DICOM file" in str(info.value.found)


def test_compressed_pixels_without_decoder_name_the_extra(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here; the missing-decoder path is moot")
    ds = ct_dataset(np.zeros((16, 16), dtype=np.int16), position_xyz_mm=(0.0, 0.0, 0.0))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7not-really-jpeg-ls\xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "compressed.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(MissingDependencyError) as info:
        read_image(path)
    assert 'pip install "lungcancer[jpeg]"' in str(info.value)
    assert "JPEG-LS" in str(info.value.found)


def test_localizer_sharing_the_series_uid_is_set_aside(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    truth = write_ct_series(folder, n_slices=3)
    localizer = ct_dataset(
        np.zeros((8, 16), dtype=np.int16),
        position_xyz_mm=(0.0, 0.0, 0.0),
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        series_uid=truth.series_uid,
    )
    write_dataset(localizer, folder / "scout.dcm")
    scan = read_image(folder)
    np.testing.assert_array_equal(scan.array, truth.hu_volume)
    assert "scout.dcm: size or orientation differs" in str(scan.meta["skipped_files"])


def test_enhanced_multiframe_ct_uses_functional_group_geometry(tmp_path: Path) -> None:
    truth = write_enhanced_ct(tmp_path / "enhanced.dcm", n_frames=4)
    scan = read_image(truth.paths[0])
    np.testing.assert_array_equal(scan.array, truth.hu_volume)
    np.testing.assert_allclose(scan.spacing_mm, truth.spacing_mm, rtol=1e-6)
    np.testing.assert_allclose(scan.origin_xyz_mm, truth.origin_xyz_mm, atol=1e-6)
    assert scan.meta["slice_order"] == "ImagePositionPatient"


def test_gap_left_by_a_broken_file_names_that_file(tmp_path: Path) -> None:
    truth = write_ct_series(tmp_path / "s", n_slices=5)
    _truncate(truth.paths[2], 1000)
    with pytest.raises(ImageReadError, match="unevenly spaced") as info:
        read_image(tmp_path / "s")
    assert f"skipped files: {truth.paths[2].name}: truncated" in str(info.value.found)
