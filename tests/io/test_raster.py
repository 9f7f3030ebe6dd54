"""PNG / JPEG / TIFF slices: grey levels in [0, 1] by bit depth, colour to luminance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from lungcancer.errors import ImageReadError
from lungcancer.io import read_image, read_mask

GREY8 = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256
GREY16 = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 61).astype(np.uint16)
RGB = np.stack([GREY8, 255 - GREY8, np.full_like(GREY8, 40)], axis=-1).astype(np.uint8)
LUMA = (0.299 * RGB[..., 0] + 0.587 * RGB[..., 1] + 0.114 * RGB[..., 2]) / 255.0


@pytest.mark.parametrize(
    ("pixels", "mode", "fmt", "expected"),
    [
        (GREY8.astype(np.uint8), "L", "PNG", GREY8 / 255.0),
        (GREY16, "I;16", "PNG", GREY16 / 65535.0),
        (GREY16, "I;16", "TIFF", GREY16 / 65535.0),
        (GREY8.astype(np.uint8), "L", "TIFF", GREY8 / 255.0),
        (RGB, "RGB", "PNG", LUMA),
        (np.dstack([RGB, np.full((32, 32), 7, np.uint8)]), "RGBA", "PNG", LUMA),
        (RGB, "RGB", "TIFF", LUMA),
    ],
    ids=["png8", "png16", "tiff16", "tiff8", "rgb", "rgba", "tiff-rgb"],
)
def test_lossless_rasters_read_as_unit_grey(
    tmp_path: Path, pixels: np.ndarray, mode: str, fmt: str, expected: np.ndarray
) -> None:
    path = tmp_path / f"slice.{fmt.lower()}"
    Image.fromarray(pixels.astype(np.uint16) if mode == "I;16" else pixels).save(path, format=fmt)
    scan = read_image(path)
    assert scan.shape == (1, 32, 32)
    assert (scan.modality, scan.intensity) == ("OT", "unit")
    np.testing.assert_allclose(scan.array[0], expected, atol=1e-6)
    assert scan.spacing_mm == (1.0, 1.0, 1.0)
    assert "1 mm assumed" in str(scan.meta["spacing_from"])


def test_jpeg_reads_close_to_its_source(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "slice.jpg", quality=95)
    scan = read_image(tmp_path / "slice.jpg")
    assert scan.meta["format"] == "jpeg"
    np.testing.assert_allclose(scan.array[0], smooth / 255.0, atol=0.03)


def test_palette_image_becomes_luminance(tmp_path: Path) -> None:
    Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    scan = read_image(tmp_path / "p.png")
    assert scan.meta["source_mode"] == "P"
    np.testing.assert_allclose(scan.array[0], LUMA, atol=0.05)


@pytest.mark.parametrize(
    ("save_kwargs", "spacing", "says"),
    [
        ({"dpi": (254, 254)}, 0.1, "254x254 dpi"),
        ({"dpi": (72, 72)}, 1.0, "screen default 72 dpi ignored"),
    ],
    ids=["physical", "screen-default"],
)
def test_physical_resolution_sets_pixel_spacing(
    tmp_path: Path, save_kwargs: dict, spacing: float, says: str
) -> None:
    Image.fromarray(GREY8.astype(np.uint8)).save(tmp_path / "s.png", **save_kwargs)
    scan = read_image(tmp_path / "s.png")
    assert scan.spacing_mm[1:] == pytest.approx((spacing, spacing), rel=1e-3)
    assert says in str(scan.meta["spacing_from"])


def test_multipage_tiff_is_a_stack(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 51, 255)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    scan = read_image(tmp_path / "stack.tif")
    assert scan.shape == (3, 8, 8) and scan.meta["frames"] == 3
    np.testing.assert_allclose(scan.array[:, 0, 0], [0.0, 0.2, 1.0], atol=1e-6)


@pytest.mark.parametrize("keep", [60, 20], ids=["data-cut", "header-cut"])
def test_truncated_png_names_the_file(tmp_path: Path, keep: int) -> None:
    noisy = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    path = tmp_path / "broken.png"
    Image.fromarray(noisy).save(path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ImageReadError, match="corrupt or truncated") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_png_mask_pairs_with_its_slice_by_size(tmp_path: Path) -> None:
    Image.fromarray(GREY8.astype(np.uint8)).save(tmp_path / "s.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 5:20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    image = read_image(tmp_path / "s.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", image)[0], mask > 0)
    Image.fromarray(mask[:16]).save(tmp_path / "small.png")
    with pytest.raises(Exception, match="size"):
        read_mask(tmp_path / "small.png", image)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pixels=arrays(np.uint16, st.tuples(st.integers(1, 9), st.integers(1, 9))),
    sixteen_bit=st.booleans(),
)
def test_any_grey_png_round_trips_to_its_scaled_values(
    tmp_path: Path, pixels: np.ndarray, sixteen_bit: bool
) -> None:
    path = tmp_path / "p.png"
    if sixteen_bit:
        Image.fromarray(pixels).save(path)
        expected = pixels / 65535.0
    else:
        small = (pixels % 256).astype(np.uint8)
        Image.fromarray(small).save(path)
        expected = small / 255.0
    scan = read_image(path)
    np.testing.assert_allclose(scan.array[0], expected, atol=1e-7)
    assert scan.array.min() >= 0.0 and scan.array.max() <= 1.0
