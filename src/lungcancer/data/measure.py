"""Lesion size from a mask: greatest 3D diameter (mm), volume (ml), T descriptor, Lung-RADS band.

The diameter is measured in physical space, so anisotropic voxels (thick CT slices) count at
their true size: it is the largest distance between the centres of two lesion voxels. Measured
on voxelised spheres and ellipsoids this is within one voxel of the true diameter, and never
above it; adding a voxel's extent (edge to edge) overshoots spheres by up to a voxel diagonal,
which is why it is not added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lungcancer.errors import LungCancerError
from lungcancer.staging import lung_rads_size_band, t_from_diameter

# Full 26-connectivity: voxels touching at a corner belong to one lesion, as a reader would see.
_CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionMeasurement:
    """Size of one connected lesion.

    Attributes:
        diameter_mm: greatest diameter in physical space.
        volume_ml: voxel count times voxel volume.
        voxel_count: number of mask voxels in the lesion.
        center_zyx: centroid in voxel coordinates (z, y, x).
        t_descriptor: TNM 8th T descriptor from size alone (no invasion known).
        lung_rads_band: Lung-RADS solid-nodule size category ("2", "3", "4A", "4B").
        in_plane_only: True when the mask is a single slice, so the diameter is 2D.
    """

    diameter_mm: float
    volume_ml: float
    voxel_count: int
    center_zyx: tuple[float, float, float]
    t_descriptor: str
    lung_rads_band: str
    in_plane_only: bool


def _as_zyx(mask: np.ndarray) -> np.ndarray:
    if mask.ndim == 2:
        return mask[np.newaxis].astype(bool, copy=False)
    if mask.ndim != 3:
        raise LungCancerError(
            "a lesion mask must be 2D (y, x) or 3D (z, y, x)",
            expected="2 or 3 dimensions",
            found=f"shape {mask.shape}",
        )
    return mask.astype(bool, copy=False)


def _hull_points(points_mm: np.ndarray) -> np.ndarray:
    """The points that can be ends of the greatest diameter (convex hull vertices)."""
    spread = points_mm.max(axis=0) - points_mm.min(axis=0)
    varying = spread > 0
    if varying.sum() < 2 or len(points_mm) < 4:
        # Flat along all but one axis (or tiny): every point is a candidate, and there are few.
        return points_mm
    try:
        hull = ConvexHull(points_mm[:, varying])
    except QhullError:
        # Coplanar in 3D (a single-slice lesion in a volume is handled by `varying`), or other
        # degenerate sets: they are small, so the exact pairwise search is affordable.
        return points_mm
    return points_mm[hull.vertices]


def _greatest_diameter_mm(component: np.ndarray, spacing_mm: np.ndarray) -> float:
    # Face-connected erosion: every extreme point of the lesion keeps a face outside it, so the
    # boundary holds both ends of the greatest diameter and far fewer points than the lesion.
    boundary = component & ~ndimage.binary_erosion(component)
    points_mm = np.argwhere(boundary).astype(np.float64) * spacing_mm
    candidates = _hull_points(points_mm)
    best_sq = 0.0
    # Blocks keep memory bounded for the rare large hulls (thousands of vertices).
    for start in range(0, len(candidates), 512):
        block = candidates[start : start + 512]
        diff = block[:, np.newaxis, :] - candidates[np.newaxis, :, :]
        dist_sq = np.einsum("ijk,ijk->ij", diff, diff)
        best_sq = max(best_sq, float(dist_sq.max()))
    # A one-voxel lesion has no centre-to-centre distance; it is at least one voxel wide.
    return max(float(np.sqrt(best_sq)), float(spacing_mm.min()))


def _measure_component(
    component: np.ndarray, spacing_mm: np.ndarray, in_plane_only: bool
) -> LesionMeasurement:
    voxel_count = int(component.sum())
    diameter_mm = _greatest_diameter_mm(component, spacing_mm)
    volume_ml = voxel_count * float(np.prod(spacing_mm)) / 1000.0
    center = ndimage.center_of_mass(component)
    return LesionMeasurement(
        diameter_mm=diameter_mm,
        volume_ml=volume_ml,
        voxel_count=voxel_count,
        center_zyx=(float(center[0]), float(center[1]), float(center[2])),
        t_descriptor=t_from_diameter(diameter_mm),
        lung_rads_band=lung_rads_size_band(diameter_mm),
        in_plane_only=in_plane_only,
    )


def measure_lesions(
    mask: np.ndarray,
    spacing_mm: tuple[float, ...],
    *,
    min_voxels: int = 1,
    source: str = "",
) -> list[LesionMeasurement]:
    """Measure every connected lesion of a mask, largest (by volume) first.

    Args:
        mask: boolean (or 0/1) array, z-y-x or y-x.
        spacing_mm: voxel size in mm, (z, y, x) or (y, x) to match the mask.
        min_voxels: components smaller than this are ignored (speckle).
        source: the mask's file, named in errors.

    Returns:
        One measurement per connected component (26-connectivity), largest first.

    Raises:
        LungCancerError: the mask is empty, or spacing does not fit the mask.
    """
    zyx = _as_zyx(np.asarray(mask))
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape == (2,):
        spacing = np.concatenate([[1.0], spacing])
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise LungCancerError(
            "voxel spacing must have one positive value per mask axis",
            path=source or None,
            expected="(z, y, x) spacing in mm, all > 0",
            found=f"{tuple(spacing_mm)}",
        )
    labels, count = ndimage.label(zyx, structure=_CONNECTIVITY_3D)
    sizes = np.bincount(labels.ravel())[1:] if count else np.zeros(0, dtype=np.int64)
    kept = [int(k) + 1 for k in np.argsort(-sizes, kind="stable") if sizes[k] >= min_voxels]
    if not kept:
        raise LungCancerError(
            "the lesion mask is empty",
            path=source or None,
            expected=f"at least one lesion of {min_voxels} or more non-zero voxels",
            found=f"{int(zyx.sum())} non-zero voxels",
            hint="check that the mask file belongs to this image and marks the lesion with "
            "non-zero values",
        )
    in_plane_only = zyx.shape[0] == 1
    objects = ndimage.find_objects(labels)
    results = []
    for label in kept:
        box = objects[label - 1]
        assert box is not None
        component = labels[box] == label
        measured = _measure_component(component, spacing, in_plane_only)
        offset = [s.start for s in box]
        centre = tuple(c + o for c, o in zip(measured.center_zyx, offset, strict=True))
        results.append(
            LesionMeasurement(
                diameter_mm=measured.diameter_mm,
                volume_ml=measured.volume_ml,
                voxel_count=measured.voxel_count,
                center_zyx=(float(centre[0]), float(centre[1]), float(centre[2])),
                t_descriptor=measured.t_descriptor,
                lung_rads_band=measured.lung_rads_band,
                in_plane_only=in_plane_only,
            )
        )
    return results


def measure_lesion(
    mask: np.ndarray, spacing_mm: tuple[float, ...], *, source: str = ""
) -> LesionMeasurement:
    """Measure the largest connected lesion of a mask.

    Args:
        mask: boolean (or 0/1) array, z-y-x or y-x.
        spacing_mm: voxel size in mm, (z, y, x) or (y, x) to match the mask.
        source: the mask's file, named in errors.

    Returns:
        The measurement of the largest connected component (other components are ignored;
        use `measure_lesions` for all of them).
    """
    return measure_lesions(mask, spacing_mm, source=source)[0]


def measure_file(image_path: str, mask_path: str) -> list[LesionMeasurement]:
    """Read an image and its lesion mask (geometry checked) and measure every lesion.

    Args:
        image_path: any image `lungcancer.io.read_image` reads (its spacing is used).
        mask_path: a mask with the image's geometry.

    Returns:
        One measurement per lesion, largest first.
    """
    from lungcancer.io import read_image, read_mask

    scan = read_image(image_path, expect_ct=False)
    mask = read_mask(mask_path, like=scan)
    return measure_lesions(mask, scan.spacing_mm, source=str(mask_path))
