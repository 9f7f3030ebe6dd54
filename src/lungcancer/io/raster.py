"""2D raster images (PNG, JPEG, TIFF) -> `Scan` with intensities in [0, 1].

Slice datasets such as "Chest CT-Scan images" or IQ-OTH/NCCD ship screenshots of CT windows,
not Hounsfield units, so they are kept as unit-range grey levels and say so
(`intensity == "unit"`). Colour is converted to luminance (ITU-R BT.601 weights, as Pillow's
own "L" conversion) in float so 16-bit grey keeps its precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lungcancer.errors import ImageReadError
from lungcancer.io.record import MetaValue, Scan

# Pillow mode -> full-scale value of its samples (what maps to 1.0).
_FULL_SCALE = {
    "1": 1.0,
    "L": 255.0,
    "LA": 255.0,
    "P": 255.0,
    "PA": 255.0,
    "RGB": 255.0,
    "RGBA": 255.0,
    "RGBX": 255.0,
    "CMYK": 255.0,
    "YCbCr": 255.0,
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
}
_LUMA_WEIGHTS = np.asarray([0.299, 0.587, 0.114], dtype=np.float64)
# Image editors stamp these densities on everything; they say nothing about the anatomy.
_SCREEN_DEFAULT_DPI = (72.0, 96.0)
_MM_PER_INCH = 25.4
_TIFF_RESOLUTION_UNIT = 296


def _frame_to_unit_gray(frame: Image.Image, path: Path) -> np.ndarray:
    mode = frame.mode
    if mode in ("P", "PA", "CMYK", "YCbCr"):
        frame = frame.convert("RGBA" if mode == "PA" else "RGB")
        mode = frame.mode
    if mode in ("I", "F"):
        values = np.asarray(frame, dtype=np.float64)
        # 32-bit integer or float rasters have no implied full scale: accept them only when
        # they already hold unit-range or 16-bit grey levels.
        if values.size and values.min() >= 0.0 and values.max() <= 1.0 and mode == "F":
            return values.astype(np.float32)
        if values.size and values.min() >= 0.0 and values.max() <= 65535.0 and mode == "I":
            return (values / 65535.0).astype(np.float32)
        raise ImageReadError(
            "this raster holds values without a known full scale",
            path=path,
            expected="8- or 16-bit grey or RGB(A), or float in [0, 1]",
            found=f"Pillow mode {mode} with values {values.min():g}..{values.max():g}",
            hint="save the slice as 8/16-bit PNG, or as NIfTI/NRRD if the values are HU",
        )
    full_scale = _FULL_SCALE.get(mode)
    if full_scale is None:
        raise ImageReadError(
            "unsupported raster pixel format",
            path=path,
            expected="8- or 16-bit grey, grey+alpha, palette, RGB or RGBA",
            found=f"Pillow mode {mode}",
            hint="convert the image to 8- or 16-bit PNG",
        )
    values = np.asarray(frame, dtype=np.float64)
    if values.ndim == 3:
        # Alpha (and RGBX padding) is dropped: a slice's grey level is its colour, not its
        # transparency.
        values = values[..., :3] @ _LUMA_WEIGHTS if values.shape[-1] >= 3 else values[..., 0]
    return (values / full_scale).astype(np.float32)


def _spacing_from_resolution(
    image: Image.Image,
) -> tuple[tuple[float, float], dict[str, MetaValue]]:
    dpi = image.info.get("dpi")
    meta: dict[str, MetaValue] = {}
    tags = getattr(image, "tag_v2", None)
    if tags is not None and tags.get(_TIFF_RESOLUTION_UNIT) not in (2, 3):
        # Pillow reports a TIFF's bare XResolution as dpi even when the unit is "none".
        dpi = None
    try:
        dpi_x, dpi_y = (float(v) for v in dpi) if dpi is not None else (0.0, 0.0)
    except (TypeError, ValueError):
        dpi_x, dpi_y = 0.0, 0.0
    if dpi_x <= 0.0 or dpi_y <= 0.0:
        meta["spacing_from"] = "none in file; 1 mm assumed"
        return (1.0, 1.0), meta
    # PNG stores pixels per metre as integers, so 72 dpi comes back as 72.009.
    if any(abs(dpi_x - d) < 0.5 and abs(dpi_y - d) < 0.5 for d in _SCREEN_DEFAULT_DPI):
        meta["spacing_from"] = f"screen default {dpi_x:.0f} dpi ignored; 1 mm assumed"
        return (1.0, 1.0), meta
    meta["spacing_from"] = f"file resolution {dpi_x:g}x{dpi_y:g} dpi"
    return (_MM_PER_INCH / dpi_y, _MM_PER_INCH / dpi_x), meta


def read_raster(path: str | Path) -> Scan:
    """Read a PNG, JPEG or TIFF image as grey levels in [0, 1].

    8-bit images are divided by 255, 16-bit by 65535; RGB(A) becomes luminance. Multi-page
    TIFFs become a z-stack. Pixel spacing comes from the file's physical resolution when it
    carries one (other than the 72/96 dpi screen defaults), else 1 mm; `meta["spacing_from"]`
    says which.

    Args:
        path: the image file.

    Returns:
        A `Scan` with modality "OT" and intensity "unit".

    Raises:
        ImageReadError: the file is not a readable raster image (truncated, corrupt, or of an
            unsupported pixel format).
    """
    file_path = Path(path)
    try:
        with Image.open(file_path) as image:
            image_format = str(image.format or "unknown")
            (spacing_y, spacing_x), meta = _spacing_from_resolution(image)
            frames: list[np.ndarray] = []
            for index in range(int(getattr(image, "n_frames", 1))):
                image.seek(index)
                image.load()
                frames.append(_frame_to_unit_gray(image, file_path))
            source_mode = image.mode
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            "the raster image is too large to decode safely",
            path=file_path,
            found=str(exc),
            hint="downsample the image before using it",
        ) from exc
    except Exception as exc:
        # Pillow signals damaged files with many exception types (OSError, SyntaxError,
        # TypeError "Missing dimensions", struct.error...); all mean the same to the user.
        raise ImageReadError(
            "the raster image is corrupt or truncated",
            path=file_path,
            expected="a complete PNG, JPEG or TIFF file",
            found=f"{type(exc).__name__}: {exc}",
            hint="re-export or re-download the image; if only a few files are broken, "
            "remove them from the dataset",
        ) from exc
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise ImageReadError(
            "the pages of this TIFF differ in size",
            path=file_path,
            expected="pages of one size (a slice stack)",
            found=", ".join(f"{h}x{w}" for h, w in sorted(shapes)),
            hint="save each page as its own image",
        )
    meta.update({"format": image_format.lower(), "source_mode": source_mode})
    if len(frames) > 1:
        meta["frames"] = len(frames)
    return Scan(
        array=np.stack(frames).astype(np.float32, copy=False),
        spacing_mm=(1.0, spacing_y, spacing_x),
        modality="OT",
        intensity="unit",
        meta=meta,
        source=str(file_path),
    )
