"""Mutated NRRD volumes and masks end in a read or a `LungCancerError`, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_tools import GARBAGE_TEXT, bounded, ends_cleanly, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st

from lungcancer.errors import ImageReadError
from lungcancer.io import read_image, read_mask

# Mutated files make pydicom, Pillow and ITK warn on every example; the outcome is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NRRD_FIELDS = (
    "type",
    "dimension",
    "sizes",
    "space directions",
    "space origin",
    "space",
    "kinds",
    "endian",
    "encoding",
    "data file",
    "byte skip",
    "line skip",
    "spacings",
    "space dimension",
)
NRRD_VALUES = (
    *GARBAGE_TEXT,
    "5 6 4 3",
    "5 6",
    "-5 6 4",
    "100000 100000 100000",
    "2000 2000 600",
    "(nan,nan,nan) (0,1,0) (0,0,1)",
    "(0,0,0) (0,0,0) (0,0,0)",
    "(1,2)",
    "none",
    "raw",
    "gzip",
    "bzip2",
    "ascii",
    "hex",
    "double",
    "uchar",
    "int64",
    "block",
    "big",
    "LIST",
    "%d.raw 1 5 1",
)


def split_header(data: bytes) -> tuple[list[str], bytes]:
    """The header lines of an attached NRRD and everything after the blank line."""
    head, _, body = data.partition(b"\n\n")
    return head.decode("ascii").split("\n"), body


@st.composite
def garbage_header(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one to three header fields replaced, added or removed."""
    lines, body = split_header(data)
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(NRRD_FIELDS))
        value = draw(st.sampled_from(NRRD_VALUES))
        at = [i for i, line in enumerate(lines) if line.startswith(field + ":")]
        line = f"{field}: {value}"
        if not at:
            lines.append(line)
        elif draw(st.booleans()):
            lines[at[0]] = line
        else:
            del lines[at[0]]
    return "\n".join(lines).encode("latin-1") + b"\n\n" + body


def header_size(data: bytes) -> int:
    return data.index(b"\n\n") + 2


@fuzz_settings(120)
@given(data=st.data(), raw=st.booleans())
def test_mutated_nrrd_volume(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, raw: bool
) -> None:
    valid = valid_files["nrrd_raw" if raw else "nrrd"].read_bytes()
    path = tmp_path / "fuzzed.nrrd"
    path.write_bytes(data.draw(mutated(valid, hot_bytes=header_size(valid))))
    ends_cleanly(lambda: read_image(path))


@fuzz_settings(150)
@given(data=st.data(), raw=st.booleans(), as_mask=st.booleans())
def test_nrrd_header_fields_hold_garbage(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, raw: bool, as_mask: bool
) -> None:
    like = read_image(valid_files["nrrd"])
    valid = valid_files["mask" if as_mask else ("nrrd_raw" if raw else "nrrd")].read_bytes()
    path = tmp_path / "garbage.nrrd"
    path.write_bytes(data.draw(garbage_header(valid)))
    if as_mask:
        ends_cleanly(lambda: read_mask(path, like=like))
    else:
        ends_cleanly(lambda: read_image(path))


@fuzz_settings(60)
@given(data=st.data())
def test_mutated_nrrd_mask(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    like = read_image(valid_files["nrrd"])
    valid = valid_files["mask"].read_bytes()
    path = tmp_path / "mask.nrrd"
    path.write_bytes(data.draw(mutated(valid, hot_bytes=header_size(valid))))
    ends_cleanly(lambda: read_mask(path, like=like))


def _with_field(data: bytes, field: str, value: str) -> bytes:
    lines, body = split_header(data)
    lines = [line for line in lines if not line.startswith(field + ":")] + [f"{field}: {value}"]
    return "\n".join(lines).encode("ascii") + b"\n\n" + body


@pytest.mark.parametrize(
    ("source", "changes", "refusal"),
    [
        # 2000 x 2000 x 600 int16 is 4.8 GB; the gzip stream behind the header holds 240 bytes.
        ("nrrd", {"sizes": "2000 2000 600"}, "declares more voxels"),
        ("nrrd_raw", {"sizes": "2000 2000 600"}, "declares more voxels"),
        # A detached header may name any file: /dev/zero never ends, so ITK would fill all 4.8 GB.
        (
            "nrrd_raw",
            {"sizes": "2000 2000 600", "data file": "/dev/zero"},
            "not a regular file",
        ),
        # A file list after the header: 600 slices of /dev/zero.
        ("nrrd_raw", {"sizes": "2000 2000 600", "data file": "LIST"}, "several data files"),
    ],
    ids=["gzip", "raw", "dev-zero", "file-list"],
)
def test_declared_size_beyond_the_data_is_refused_before_allocating(
    valid_files: dict[str, Path],
    tmp_path: Path,
    source: str,
    changes: dict[str, str],
    refusal: str,
) -> None:
    data = valid_files[source].read_bytes()
    for field, value in changes.items():
        data = _with_field(data, field, value)
    if changes.get("data file") == "LIST":
        data = data[: header_size(data) - 1] + b"/dev/zero\n" * 600
    path = tmp_path / "huge.nrrd"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match=refusal), bounded():
        read_image(path)


def test_detached_header_reads_its_data_file(valid_files: dict[str, Path], tmp_path: Path) -> None:
    # The size check must count the named data file, not the small header, as the data.
    lines, body = split_header(valid_files["nrrd_raw"].read_bytes())
    (tmp_path / "voxels.raw").write_bytes(body)
    header = tmp_path / "volume.nhdr"
    header.write_bytes(("\n".join([*lines, "data file: voxels.raw"]) + "\n\n").encode("ascii"))
    assert read_image(header).shape == read_image(valid_files["nrrd_raw"]).shape
