"""Overlays: heat drawn where the map is, plain image elsewhere, three views for volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungcancer.explain.overlay import MIN_DISPLAY_PX, overlay_rgb, render_overlay, save_png


def test_overlay_keeps_grey_where_there_is_no_heat() -> None:
    image = np.full((32, 32), 0.5, dtype=np.float32)
    cam = np.zeros((32, 32), dtype=np.float32)
    cam[:8, :8] = 1.0
    rgb = overlay_rgb(image, cam)
    assert rgb.shape == (MIN_DISPLAY_PX, MIN_DISPLAY_PX, 3) and rgb.dtype == np.uint8
    far = rgb[-20:, -20:].reshape(-1, 3)
    assert np.all(far == far[0]) and far[0][0] == far[0][1] == far[0][2]  # plain grey
    hot = rgb[10, 10].astype(int)
    assert hot.max() - hot.min() > 60  # coloured


def test_standardised_inputs_are_stretched_for_display() -> None:
    image = np.linspace(-3, 3, 64 * 64, dtype=np.float32).reshape(64, 64)
    rgb = overlay_rgb(image, np.zeros((64, 64), dtype=np.float32))
    assert rgb.min() == 0 and rgb.max() == 255


def test_volume_shows_three_views_through_the_maximum() -> None:
    volume = np.zeros((16, 32, 32), dtype=np.float32)
    cam = np.zeros_like(volume)
    cam[5, 10, 20] = 1.0
    rgb = render_overlay(volume, cam)
    # three panels of 256 px (axial 32x32, coronal 16x32 and sagittal 16x32, scaled by 8)
    assert rgb.shape[1] == 3 * MIN_DISPLAY_PX + 2 * 4
    assert rgb.shape[0] == MIN_DISPLAY_PX


def test_shape_mismatch_and_png_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same 2D shape"):
        overlay_rgb(np.zeros((4, 4)), np.zeros((5, 5)))
    rgb = overlay_rgb(np.zeros((300, 300)), np.ones((300, 300)))
    path = save_png(rgb, tmp_path / "sub" / "o.png")
    with Image.open(path) as img:
        assert img.size == (300, 300) and img.mode == "RGB"
