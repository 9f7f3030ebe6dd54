"""Lesion-centred patches: HU window, resampling to the GAN's grid, and feathered paste-back.

Every patch the GAN sees is resampled to a square grid of `patch_size` pixels whose field of
view scales with the lesion (`PatchGeometry`): `fov_per_diameter` times the larger of the input
and target diameters, never finer than `min_spacing_mm`. Tumours from 5 to 120 mm then occupy
the patch alike, one network serves scans of any pixel size, and the generator is told the
spacing so texture keeps its physical scale. Outputs go back to the scan's own grid as a *residual*
(generated minus input, in HU) added with a feathered radial weight: pixels far from the lesion
keep their original values exactly, including values outside the window (bone, metal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class HUWindow:
    """Linear map between HU in [low_hu, high_hu] and network units in [-1, 1]."""

    low_hu: float = -1000.0
    high_hu: float = 400.0

    def to_unit(self, hu: np.ndarray) -> np.ndarray:
        """HU -> [-1, 1]; values outside the window are clipped."""
        clipped = np.clip(hu, self.low_hu, self.high_hu)
        return (2.0 * (clipped - self.low_hu) / (self.high_hu - self.low_hu) - 1.0).astype(
            np.float32
        )

    def to_hu(self, unit: np.ndarray) -> np.ndarray:
        """[-1, 1] -> HU (the inverse of `to_unit` inside the window)."""
        return ((unit + 1.0) * 0.5 * (self.high_hu - self.low_hu) + self.low_hu).astype(np.float32)

    def unit_threshold(self, hu: float) -> float:
        """A HU level expressed in network units."""
        return float(2.0 * (hu - self.low_hu) / (self.high_hu - self.low_hu) - 1.0)


@dataclass(frozen=True)
class PatchGeometry:
    """How big a patch is and how its pixel size follows the lesion.

    Attributes:
        patch_size: pixels per side.
        min_spacing_mm: the finest patch pixel (small lesions are not upsampled beyond it).
        fov_per_diameter: field of view / largest lesion diameter of the pair.
    """

    patch_size: int = 64
    min_spacing_mm: float = 1.0
    fov_per_diameter: float = 2.0

    def spacing_for(self, diameter_mm: float) -> float:
        """Patch pixel size (mm) for a pair whose larger lesion diameter is `diameter_mm`."""
        return max(self.min_spacing_mm, self.fov_per_diameter * diameter_mm / self.patch_size)


@dataclass(frozen=True)
class PatchGrid:
    """Where a patch lies in an image: centre (voxels), image spacing and the patch geometry.

    Attributes:
        center: lesion centre in voxel indices of the image, (y, x) or (z, y, x).
        image_spacing_mm: spacing of the image axes, same order as `center`.
        patch_size: pixels per side of the (square or cubic) patch.
        patch_spacing_mm: physical size of one patch pixel.
    """

    center: tuple[float, ...]
    image_spacing_mm: tuple[float, ...]
    patch_size: int
    patch_spacing_mm: float

    @property
    def fov_mm(self) -> float:
        """Side length of the patch in millimetres."""
        return self.patch_size * self.patch_spacing_mm

    def _patch_coords(self) -> list[np.ndarray]:
        """Image voxel coordinates of every patch pixel centre, one array per axis."""
        offsets_mm = (
            np.arange(self.patch_size) - (self.patch_size - 1) / 2
        ) * self.patch_spacing_mm
        axes = [c + offsets_mm / s for c, s in zip(self.center, self.image_spacing_mm, strict=True)]
        return list(np.meshgrid(*axes, indexing="ij"))

    def needs_padding(self, image_shape: tuple[int, ...]) -> bool:
        """True when part of the patch lies outside the image (it is then edge-padded)."""
        for coords, n in zip(self._patch_coords(), image_shape, strict=True):
            if coords.min() < -0.5 or coords.max() > n - 0.5:
                return True
        return False

    def extract(self, image: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample the patch from `image` (edge values continue past the border).

        Args:
            image: array with the same number of axes as `center`.
            order: spline order (1 = linear for images, 0 = nearest for masks).

        Returns:
            float32 array of shape (patch_size,) * ndim.
        """
        coords = np.stack(self._patch_coords())
        return ndimage.map_coordinates(
            image.astype(np.float32, copy=False), coords, order=order, mode="nearest"
        ).astype(np.float32)

    def footprint(self, image_shape: tuple[int, ...]) -> tuple[slice, ...]:
        """The image region the patch covers, clipped to the image."""
        region = []
        for c, s, n in zip(self.center, self.image_spacing_mm, image_shape, strict=True):
            half = self.fov_mm / 2 / s
            region.append(
                slice(max(0, int(np.floor(c - half))), min(n, int(np.ceil(c + half)) + 1))
            )
        return tuple(region)

    def paste_residual(
        self, image_hu: np.ndarray, residual_hu: np.ndarray, feather: float = 0.15
    ) -> np.ndarray:
        """Add a patch-grid residual back onto the image with a feathered radial weight.

        The weight is 1 inside 0.5 - `feather` of the field of view (radius, as a fraction of
        the patch width) and falls to 0 with a cosine at the inscribed circle, so no seam shows
        and the image outside the inscribed circle is untouched.

        Args:
            image_hu: the full image in HU.
            residual_hu: generated minus input patch, in HU, on the patch grid.
            feather: width of the fall-off, as a fraction of the patch width.

        Returns:
            A new float32 image.
        """
        out = image_hu.astype(np.float32, copy=True)
        region = self.footprint(image_hu.shape)
        axes = [np.arange(r.start, r.stop, dtype=np.float64) for r in region]
        mesh = np.meshgrid(*axes, indexing="ij")
        patch_coords = [
            (m - c) * s / self.patch_spacing_mm + (self.patch_size - 1) / 2
            for m, c, s in zip(mesh, self.center, self.image_spacing_mm, strict=True)
        ]
        values = ndimage.map_coordinates(
            residual_hu.astype(np.float32),
            np.stack(patch_coords),
            order=1,
            mode="constant",
            cval=0.0,
        )
        radius = np.sqrt(
            sum(
                ((m - c) * s / self.fov_mm) ** 2
                for m, c, s in zip(mesh, self.center, self.image_spacing_mm, strict=True)
            )
        )
        inner = 0.5 - feather
        ramp = np.clip((radius - inner) / feather, 0.0, 1.0)
        weight = 0.5 * (1.0 + np.cos(np.pi * ramp))
        out[region] += (weight * values).astype(np.float32)
        return out


def mask_center(mask: np.ndarray) -> tuple[float, ...]:
    """Centroid (voxel indices) of a non-empty binary mask."""
    return tuple(float(c) for c in ndimage.center_of_mass(mask > 0))


def greatest_diameter_mm(mask: np.ndarray, spacing_mm: tuple[float, ...]) -> float:
    """Greatest diameter of the largest lesion in a mask, as LungSim and `measure` report it.

    The distance between the two farthest voxel centres (data.measure), so the GAN, its
    evaluation and the T descriptor all use one definition of "diameter". 0 for an empty mask.
    """
    from lungcancer.data.measure import measure_lesion

    if not np.any(mask):
        return 0.0
    return float(
        measure_lesion(np.asarray(mask, bool), tuple(float(s) for s in spacing_mm)).diameter_mm
    )


def disc_mask(
    shape: tuple[int, ...],
    center: tuple[float, ...],
    diameter_mm: float,
    spacing_mm: tuple[float, ...],
) -> np.ndarray:
    """A filled disc (2D) or ball (3D) of the given diameter, as a boolean array."""
    mesh = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    dist2 = sum(((m - c) * s) ** 2 for m, c, s in zip(mesh, center, spacing_mm, strict=True))
    return np.asarray(dist2 <= (diameter_mm / 2) ** 2)
