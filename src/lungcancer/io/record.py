"""The one record every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

IntensityKind = Literal["HU", "unit"]
MetaValue = str | int | float | bool


@dataclass(frozen=True)
class Scan:
    """An image in physical space, from any reader.

    Attributes:
        array: float32, z-y-x. A 2D image has z == 1. CT in Hounsfield units; raster slices
            (PNG/JPG/TIFF) as intensities in [0, 1] (`intensity == "unit"`).
        spacing_mm: voxel size (z, y, x) in millimetres.
        origin_xyz_mm: world position of voxel (0, 0, 0), patient (LPS) x-y-z order as in
            DICOM and ITK, in millimetres.
        direction_xyz: 3x3 direction cosines, row-major, ITK convention (columns are the
            world directions of the i, j, k = x, y, z voxel axes).
        modality: DICOM modality code ("CT", "MR", ...) or "OT" for raster images.
        intensity: "HU" or "unit".
        meta: de-identified metadata. Never holds names, birth dates, IDs, institutions or
            dates; `patient_key` is a salted hash.
        source: where the image came from (a path), for error messages.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_xyz: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str = "CT"
    intensity: IntensityKind = "HU"
    meta: dict[str, MetaValue] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Scan.array must be z-y-x (3 dims), got shape {self.array.shape}")
        if self.array.dtype != np.float32:
            raise ValueError(f"Scan.array must be float32, got {self.array.dtype}")

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (z, y, x)

    @property
    def is_volume(self) -> bool:
        return self.array.shape[0] > 1

    def world_to_voxel(self, xyz_mm: tuple[float, float, float]) -> tuple[float, float, float]:
        """Continuous voxel index (z, y, x) of a world point (x, y, z) in mm."""
        z, y, x = self.world_to_voxels(np.asarray([xyz_mm], dtype=np.float64))[0]
        return (float(z), float(y), float(x))

    def world_to_voxels(self, points_xyz_mm: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (N, 3) in z-y-x order of world points (N, 3) x-y-z in mm."""
        direction = np.asarray(self.direction_xyz, dtype=np.float64).reshape(3, 3)
        spacing_xyz = np.asarray(self.spacing_mm[::-1], dtype=np.float64)
        offsets = np.asarray(points_xyz_mm, dtype=np.float64) - np.asarray(self.origin_xyz_mm)
        ijk = np.linalg.solve(direction * spacing_xyz, offsets.T).T
        return ijk[:, ::-1]

    def voxel_to_world(self, zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """World point (x, y, z) in mm of a (possibly fractional) voxel index (z, y, x)."""
        direction = np.asarray(self.direction_xyz, dtype=np.float64).reshape(3, 3)
        spacing_xyz = np.asarray(self.spacing_mm[::-1], dtype=np.float64)
        ijk = np.asarray(zyx[::-1], dtype=np.float64)
        xyz = np.asarray(self.origin_xyz_mm) + (direction * spacing_xyz) @ ijk
        return (float(xyz[0]), float(xyz[1]), float(xyz[2]))
