"""Heat maps drawn over the lung-window image, as RGB arrays and PNG files.

The grey image is the network input (already lung-windowed by the preprocessing), so the
picture shows exactly what the model saw. The colour is blended in proportion to the heat, so
regions without evidence keep the plain CT look a reader is used to. Volumes are shown as three
orthogonal slices (axial, coronal, sagittal) through the map's maximum.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from lungcancer.io.atomic import atomic_write_bytes

# Small network inputs (64-128 px) are hard to read on screen; overlays are scaled up to at least
# this many pixels on their longer side.
MIN_DISPLAY_PX = 256
_GAP_PX = 4


def _display_grey(image: np.ndarray) -> np.ndarray:
    """Image intensities for display in [0, 1]; windowed inputs already are."""
    img = np.nan_to_num(image.astype(np.float32))
    low, high = float(img.min()), float(img.max())
    if low >= -1e-3 and high <= 1.0 + 1e-3:
        return np.clip(img, 0.0, 1.0)
    # Standardised (z-scored) inputs: stretch to the full range so anatomy stays visible.
    return (img - low) / (high - low) if high > low else np.zeros_like(img)


def overlay_rgb(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """Blend a 2D heat map over a 2D grey image.

    Args:
        image: (H, W) grey image (the lung-windowed network input).
        cam: (H, W) heat map in [0, 1].
        alpha: colour weight at the map's maximum.

    Returns:
        uint8 (H', W', 3), scaled up so the longer side is at least `MIN_DISPLAY_PX`.
    """
    if image.shape != cam.shape or image.ndim != 2:
        raise ValueError(f"image {image.shape} and map {cam.shape} must be the same 2D shape")
    grey = _display_grey(image)[..., None].repeat(3, axis=2)
    heat = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    colour = colormaps["jet"](heat)[..., :3].astype(np.float32)
    weight = alpha * heat[..., None]
    blended = (1.0 - weight) * grey + weight * colour
    rgb = (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    scale = max(1, math.ceil(MIN_DISPLAY_PX / max(rgb.shape[:2])))
    if scale > 1:
        size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return rgb


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + _GAP_PX * (len(panels) - 1)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    x = 0
    for panel in panels:
        top = (height - panel.shape[0]) // 2
        canvas[top : top + panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + _GAP_PX
    return canvas


def slice_views(volume: np.ndarray, cam: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """Axial, coronal and sagittal overlays through the maximum of a 3D map, side by side.

    Args:
        volume: (D, H, W) grey volume (z-y-x).
        cam: (D, H, W) heat map in [0, 1].
        alpha: colour weight at the map's maximum.

    Returns:
        uint8 (H', W', 3) image of the three views.
    """
    if volume.shape != cam.shape or volume.ndim != 3:
        raise ValueError(f"volume {volume.shape} and map {cam.shape} must be the same 3D shape")
    z, y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    views = [
        (volume[z], cam[z]),
        (volume[:, y, :], cam[:, y, :]),
        (volume[:, :, x], cam[:, :, x]),
    ]
    return _side_by_side([overlay_rgb(img, heat, alpha=alpha) for img, heat in views])


def render_overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """2D overlay or 3D slice views, whichever fits the map's dimensionality."""
    if cam.ndim == 3:
        return slice_views(image, cam, alpha=alpha)
    return overlay_rgb(image, cam, alpha=alpha)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 image as a PNG file atomically and return its path."""
    target = Path(path)
    atomic_write_bytes(target, png_bytes(rgb))
    return target
