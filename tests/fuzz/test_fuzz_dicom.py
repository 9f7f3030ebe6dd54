"""Mutated DICOM files and series end in a read or a `LungCancerError`, never a crash or a hang."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from fuzz_tools import EDGE_INTS, GARBAGE_TEXT, bounded, ends_cleanly, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword

from lungcancer.errors import ImageReadError
from lungcancer.io import read_image

# Mutated files make pydicom, Pillow and ITK warn on every example; the outcome is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Attributes the reader turns into sizes, counts, geometry or HU: where garbage does harm.
FUZZED_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PlanarConfiguration",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Modality",
    "InstanceNumber",
    "SeriesInstanceUID",
    "SOPClassUID",
    "TransferSyntaxUID",
)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.1.99",
)
RLE_LOSSLESS = b"1.2.840.10008.1.2.5"
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00"
# Explicit VR elements whose length field is 4 bytes (after two reserved bytes).
_LONG_VRS = {"OB", "OD", "OF", "OL", "OW", "SQ", "UC", "UN", "UR", "UT"}


def set_element(data: bytes, keyword: str, value: bytes | None) -> bytes:
    """Rewrite one short explicit-VR element's raw value in a file (None removes it).

    A missing element is inserted just before the pixel data; a changed length is written into
    the element's own length field, so the file stays parseable up to the garbage itself.
    """
    tag = tag_for_keyword(keyword)
    assert tag is not None
    vr = dictionary_VR(tag)
    assert vr not in _LONG_VRS
    marker = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if value is not None and len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    element = b"" if value is None else marker + struct.pack("<H", len(value)) + value
    at = data.find(marker)
    if at >= 0:
        (length,) = struct.unpack("<H", data[at + 6 : at + 8])
        return data[:at] + element + data[at + 8 + length :]
    pixels = data.rfind(_PIXEL_DATA_HEADER)
    return data[:pixels] + element + data[pixels:]


@st.composite
def garbage_value(draw: st.DrawFn, keyword: str) -> bytes | None:
    """A raw value for `keyword`: absent, an edge integer, a wrong length, or garbage text."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return None
    if dictionary_VR(tag) == "US":
        if choice < 7:
            return struct.pack("<H", draw(st.sampled_from(EDGE_INTS)) & 0xFFFF)
        return draw(st.binary(min_size=1, max_size=6))
    if keyword == "TransferSyntaxUID" and choice < 6:
        return draw(st.sampled_from(TRANSFER_SYNTAXES)).encode("ascii")
    return draw(st.sampled_from(GARBAGE_TEXT)).encode("latin-1")


@st.composite
def garbage_header(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one to three image attributes replaced by garbage."""
    for keyword in draw(st.lists(st.sampled_from(FUZZED_KEYWORDS), min_size=1, max_size=3)):
        data = set_element(data, keyword, draw(garbage_value(keyword)))
    return data


@fuzz_settings(150)
@given(data=st.data(), expect_ct=st.booleans())
def test_mutated_dicom_file(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, expect_ct: bool
) -> None:
    valid = valid_files["dicom"].read_bytes()
    path = tmp_path / "fuzzed.dcm"
    path.write_bytes(data.draw(mutated(valid, hot_bytes=len(valid) - 128)))
    ends_cleanly(lambda: read_image(path, expect_ct=expect_ct))


@fuzz_settings(200)
@given(data=st.data(), expect_ct=st.booleans())
def test_dicom_header_fields_hold_garbage(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, expect_ct: bool
) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(data.draw(garbage_header(valid_files["dicom"].read_bytes())))
    ends_cleanly(lambda: read_image(path, expect_ct=expect_ct))


@fuzz_settings(60)
@given(data=st.data(), which=st.integers(0, 2), by_field=st.booleans())
def test_series_with_one_mutated_slice(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, which: int, by_field: bool
) -> None:
    folder = tmp_path / "series"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(valid_files["series"], folder)
    victim = sorted(folder.iterdir())[which]
    valid = victim.read_bytes()
    broken = data.draw(garbage_header(valid) if by_field else mutated(valid, len(valid) - 128))
    victim.write_bytes(broken)
    ends_cleanly(lambda: read_image(folder))


def test_huge_declared_size_in_a_compressed_file_is_refused_before_allocating(
    valid_files: dict[str, Path], tmp_path: Path
) -> None:
    # 65535 x 65535 x 16 bit is 8.6 GB of pixels (17 GB as float32) for 128 bytes of data.
    data = set_element(valid_files["dicom"].read_bytes(), "TransferSyntaxUID", RLE_LOSSLESS)
    for keyword in ("Rows", "Columns"):
        data = set_element(data, keyword, struct.pack("<H", 0xFFFF))
    path = tmp_path / "huge.dcm"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match="cannot be read as an image") as caught:
        bounded_read(path)
    assert "compressed data can hold" in str(caught.value.found)


@pytest.mark.parametrize("frames", [b"-5", b"0\\0", b"1e308"])
def test_nonsense_frame_count_on_an_empty_image_is_refused(
    valid_files: dict[str, Path], tmp_path: Path, frames: bytes
) -> None:
    # Rows 0 made the pixel-size check pass, and the frame count then drove a loop: a
    # negative count left no slices (a crash), 1e308 never ended.
    data = set_element(valid_files["dicom"].read_bytes(), "Rows", struct.pack("<H", 0))
    path = tmp_path / "frames.dcm"
    path.write_bytes(set_element(data, "NumberOfFrames", frames))
    with pytest.raises(ImageReadError):
        bounded_read(path)


def bounded_read(path: Path) -> None:
    """`read_image` under the fuzz guard, with its `LungCancerError` let through."""
    with bounded():
        read_image(path)
