"""Tiny images, volumes and dataset layouts for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lungcancer.io import Scan, write_mask, write_volume


def pattern(seed: int, size: int = 32) -> np.ndarray:
    """A distinct smooth grey image in [0, 1] (blobs at seeded places), y-x."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size))
    for _ in range(4):
        cy, cx, radius = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.2)
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    return image / image.max()


def write_png(path: Path, image: np.ndarray) -> Path:
    """Save a [0, 1] image as 8-bit grey PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8)).save(path)
    return path


def chest_slice_hu(size: int = 64, lungs: bool = True) -> np.ndarray:
    """A cartoon axial chest slice in HU: air, an elliptic body, two dark lungs."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.full((size, size), -1024.0)
    body = ((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - size / 2) / (0.45 * size)) ** 2 < 1
    image[body] = 40.0
    if lungs:
        for cx in (0.3 * size, 0.7 * size):
            lung = ((yy - size / 2) / (0.28 * size)) ** 2 + ((xx - cx) / (0.13 * size)) ** 2 < 1
            image[lung] = -850.0
    return image


def sphere_volume(
    folder: Path,
    name: str,
    *,
    shape: tuple[int, int, int] = (12, 24, 24),
    spacing_mm: tuple[float, float, float] = (2.0, 1.0, 1.0),
    centres_zyx: tuple[tuple[int, int, int], ...] = ((6, 12, 12),),
    radius_mm: float = 4.0,
) -> tuple[Path, Path]:
    """A small NRRD volume with spherical lesions (radius in mm) and its mask.

    Written as NAME.nrrd and NAME_mask.nrrd in `folder`.
    """
    array = np.full(shape, -800.0, dtype=np.float32)
    mask = np.zeros(shape, dtype=bool)
    zz, yy, xx = np.indices(shape)
    dz, dy, dx = spacing_mm
    for cz, cy, cx in centres_zyx:
        distance_sq = ((zz - cz) * dz) ** 2 + ((yy - cy) * dy) ** 2 + ((xx - cx) * dx) ** 2
        inside = distance_sq <= radius_mm**2
        mask |= inside
        array[inside] = 30.0
    scan = Scan(array=array, spacing_mm=spacing_mm)
    folder.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = folder / f"{name}.nrrd", folder / f"{name}_mask.nrrd"
    write_volume(scan, image_path)
    write_mask(mask, scan, mask_path)
    return image_path, mask_path


def class_folders(
    root: Path, counts: dict[str, int], *, seed: int = 0, split: str = ""
) -> list[Path]:
    """ROOT/[split/]<class>/<class>_<i>.png with distinct images; returns the paths."""
    paths = []
    for offset, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            folder = root / split / name if split else root / name
            image = pattern(seed * 1000 + offset * 100 + i)
            paths.append(write_png(folder / f"img_{i:03d}.png", image))
    return paths
