"""Format detection by content, and what a user sees for files that are not images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from io_builders import write_ct_series
from PIL import Image

from lungcancer.errors import ImageReadError
from lungcancer.io import Scan, detect_format, read_image, read_mask, write_volume


def _png(path: Path) -> Path:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    return path


def _jpeg(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="JPEG")
    return path


def _tiff(path: Path) -> Path:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="TIFF")
    return path


def _volume(suffix: str):  # type: ignore[no-untyped-def]
    def write(path: Path) -> Path:
        real = path.with_name("real" + suffix)
        write_volume(Scan(array=np.zeros((2, 3, 4), np.float32), spacing_mm=(1, 1, 1)), real)
        if suffix in (".mhd", ".nhdr"):
            return real
        shutil.move(real, path)
        return path

    return write


def _dicom(path: Path) -> Path:
    truth = write_ct_series(path.parent / "series", n_slices=1)
    shutil.move(truth.paths[0], path)
    return path


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        (_png, "png"),
        (_jpeg, "jpeg"),
        (_tiff, "tiff"),
        (_volume(".nrrd"), "nrrd"),
        (_volume(".nii"), "nifti"),
        (_volume(".nii.gz"), "nifti"),
        (_volume(".mha"), "metaimage"),
        (_volume(".mhd"), "metaimage"),
        (_volume(".nhdr"), "nrrd"),
        (_dicom, "dicom"),
    ],
    ids=["png", "jpeg", "tiff", "nrrd", "nii", "nii.gz", "mha", "mhd", "nhdr", "dicom"],
)
def test_format_comes_from_content_not_extension(tmp_path: Path, writer, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = writer(tmp_path / "misnamed.png.dat")
    assert detect_format(path) == expected
    scan = read_image(path)
    assert scan.meta["format"] == expected


def test_a_folder_is_a_dicom_series(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", n_slices=2)
    assert detect_format(tmp_path / "s") == "dicom-series"


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("notes.txt", b"patient list\nnothing to see\n", "content starting with 70 61"),
        ("scan.dcm", b"", "an empty file"),
        ("scan.raw", bytes(range(256)) * 4, "raw voxel data without a header"),
        ("data.gz", b"\x1f\x8b\x08\x00" + bytes(40), "content starting with 1f 8b"),
    ],
    ids=["text", "empty", "raw-half", "other-gzip"],
)
def test_unknown_content_names_file_and_supported_formats(
    tmp_path: Path, name: str, content: bytes, found: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="not a supported image format") as info:
        read_image(path)
    assert info.value.path == str(path)
    assert info.value.expected is not None and "NIfTI" in info.value.expected
    assert found in str(info.value.found)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file or folder"):
        read_image(tmp_path / "nowhere.nii.gz")


def test_a_dicom_image_cannot_serve_as_a_mask(tmp_path: Path) -> None:
    # DICOM masks are segmentations (RTSTRUCT, SEG: tests/io/test_dicom_masks.py); an image or
    # a series folder is not one.
    truth = write_ct_series(tmp_path / "s", n_slices=1)
    image = read_image(truth.paths[0])
    with pytest.raises(ImageReadError, match="not a segmentation"):
        read_mask(truth.paths[0], image)
    with pytest.raises(ImageReadError, match="cannot be read as a mask"):
        read_mask(truth.folder, image)
