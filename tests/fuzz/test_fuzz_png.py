"""Mutated PNG images and masks end in a read or a `LungCancerError`, never a crash or a hang."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from fuzz_tools import EDGE_INTS, ends_cleanly, fuzz_settings, mutated, png_chunk
from hypothesis import given
from hypothesis import strategies as st

from lungcancer.io import Scan, read_image, read_mask

# Mutated files make pydicom, Pillow and ITK warn on every example; the outcome is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a valid PNG."""
    found, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        found.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return found


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIGNATURE + b"".join(png_chunk(kind, payload) for kind, payload in parts)


@st.composite
def garbage_chunks(draw: st.DrawFn, data: bytes) -> bytes:
    """A PNG whose IHDR fields or ancillary chunks hold garbage, with valid CRCs throughout.

    The CRC is what stops most damaged PNGs at the door; recomputing it lets the garbage reach
    the decoder and the reader's own arithmetic (sizes, bit depth, physical resolution).
    """
    parts = chunks(data)
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", parts[0][1]
    )
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(("size", "depth", "colour", "flags", "phys", "chunk")))
        if target == "size":
            width = draw(st.sampled_from((*EDGE_INTS, 9000, width)))
            height = draw(st.sampled_from((*EDGE_INTS, 9000, height)))
        elif target == "depth":
            depth = draw(st.sampled_from((0, 1, 2, 4, 8, 16, 32, 255)))
        elif target == "colour":
            colour = draw(st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 255)))
        elif target == "flags":
            compression, filtering, interlace = draw(st.tuples(*[st.integers(0, 255)] * 3))
        elif target == "phys":
            x, y = draw(st.tuples(*[st.sampled_from(EDGE_INTS)] * 2))
            unit = draw(st.integers(0, 2))
            parts.insert(1, (b"pHYs", struct.pack(">IIB", x, y, unit)))
        else:
            kind = draw(st.sampled_from((b"tEXt", b"zTXt", b"iCCP", b"PLTE", b"tRNS", b"IDAT")))
            parts.insert(1, (kind, draw(st.binary(max_size=64))))
    header = struct.pack(
        ">IIBBBBB", width, height, depth, colour, compression, filtering, interlace
    )
    parts[0] = (b"IHDR", header)
    return assemble(parts)


def _source(valid_files: dict[str, Path], kind: int) -> bytes:
    return valid_files[("png", "png_rgb", "png16")[kind]].read_bytes()


@fuzz_settings(150)
@given(data=st.data(), kind=st.integers(0, 2))
def test_mutated_png(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, kind: int
) -> None:
    valid = _source(valid_files, kind)
    path = tmp_path / "fuzzed.png"
    path.write_bytes(data.draw(mutated(valid, hot_bytes=64)))
    ends_cleanly(lambda: read_image(path))


@fuzz_settings(150)
@given(data=st.data(), kind=st.integers(0, 2), as_mask=st.booleans())
def test_png_chunks_hold_garbage_with_valid_crcs(
    valid_files: dict[str, Path], tmp_path: Path, data: st.DataObject, kind: int, as_mask: bool
) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(data.draw(garbage_chunks(_source(valid_files, kind))))
    if as_mask:
        like = Scan(array=np.zeros((1, 8, 8), dtype=np.float32), spacing_mm=(1.0, 1.0, 1.0))
        ends_cleanly(lambda: read_mask(path, like=like))
    else:
        ends_cleanly(lambda: read_image(path))
