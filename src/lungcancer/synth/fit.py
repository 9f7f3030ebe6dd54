"""The scanner grid of a patient, and a lesion sized and measured on it.

`fit_lesion` scales a lesion so that the greatest diameter measured on its drawn mask (by
`lungcancer.data.measure`, as `lungcancer measure` does) equals a target, and reads from the
anatomy under the mask what the lesion invades. Labels are computed from these measurements,
so a label always matches its mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcancer.data.measure import measure_lesion
from lungcancer.synth import anatomy as an
from lungcancer.synth.acquisition import Acquisition, Pose
from lungcancer.synth.anatomy import Anatomy
from lungcancer.synth.lesion import LesionShape, body_fraction
from lungcancer.synth.paint import label_points
from lungcancer.synth.render import to_patient, to_world

_WALL = np.array(an.CHEST_WALL_LABELS)
_DEEP = np.array(an.MEDIASTINUM_LABELS + an.SPINE_LABELS + an.DIAPHRAGM_LABELS)
_INVASION_FRACTION = 0.02  # share of the lesion mask beyond the pleura that counts as invasion


@dataclass(frozen=True)
class RenderSettings:
    """What every visit of every patient shares (from `SynthConfig`).

    Attributes:
        size: in-plane matrix.
        dims: 2 (slices) or 3 (volumes).
        depth: slices per volume (dims 3).
        classes: "stage", "t" or "binary".
        off_centre_slices: extra slices per visit through the lesion (dims 2).
        slice_offset_max_mm: how far off-centre those slices go.
        dose: relative dose.
        thickness_mm: fixed slice thickness, or None to vary per patient.
        slab_mm: 2D only: when > 0, each sample is three slices (its own, and one this far
            below and above it) so a 2.5D classifier sees its neighbours.
    """

    size: int = 256
    dims: int = 2
    depth: int = 64
    classes: str = "stage"
    off_centre_slices: int = 2
    slice_offset_max_mm: float = 6.0
    dose: float = 1.0
    thickness_mm: float | None = None
    slab_mm: float = 0.0


def grid_centre_y(anat: Anatomy) -> float:
    """y of the image centre: a little below the body's centre so the table shows."""
    hab = anat.habitus
    return 0.5 * (hab.body_b_post_mm - hab.body_b_ant_mm) + 12.0


def min_fov_mm(anat: Anatomy) -> float:
    """Diameter of the smallest reconstruction circle around the image centre that holds the
    body with room for a few millimetres of table shift."""
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    r = anat.habitus.body_radius(theta)
    dist = np.hypot(r * np.cos(theta), r * np.sin(theta) - grid_centre_y(anat))
    return float(2.0 * (dist.max() + 10.0))


@dataclass(frozen=True)
class Grid:
    """The scanner's pixel grid for one patient (world mm)."""

    xs_w: np.ndarray
    ys_w: np.ndarray
    pixel_mm: float


def patient_grid(anat: Anatomy, acq: Acquisition, size: int) -> Grid:
    """The FOV (512 x native spacing) resampled to `size` pixels, centred on the body."""
    fov = acq.fov_mm
    px = fov / size
    yc = grid_centre_y(anat)
    centres = (np.arange(size) + 0.5) * px - fov / 2
    # float32 grids: every per-pixel computation downstream runs in single precision.
    return Grid(
        xs_w=centres.astype(np.float32), ys_w=(centres + yc).astype(np.float32), pixel_mm=px
    )


def slice_zs(
    center_mm: tuple[float, float, float],
    settings: RenderSettings,
    pose: Pose,
    thickness_mm: float,
    offsets_mm: tuple[float, ...],
) -> np.ndarray:
    """World z of every slice of a visit: lesion-centred first (2D) or the volume (3D)."""
    z_c = to_world(pose, center_mm)[2]
    if settings.dims == 2:
        return np.array([z_c, *(z_c + o for o in offsets_mm)])
    return z_c + (np.arange(settings.depth) - (settings.depth - 1) / 2) * thickness_mm


def _lesion_mask(
    shape: LesionShape, pose: Pose, grid: Grid, zs_w: np.ndarray, thick: float
) -> np.ndarray:
    """Mask (z, y, x) of a lesion body on the scanner grid: body fraction >= 0.5."""
    mask = np.zeros((len(zs_w), len(grid.ys_w), len(grid.xs_w)), dtype=bool)
    for k, z_w in enumerate(zs_w):
        xs, ys, z = to_patient(pose, grid.xs_w, grid.ys_w, float(z_w))
        mask[k] = body_fraction(shape, xs, ys, z, thick / pose.scale) >= 0.5
    return mask


def _invasion(anat: Anatomy, pose: Pose, grid: Grid, zs_w: np.ndarray, mask: np.ndarray) -> str:
    """What a drawn lesion invades, read from the anatomy under its mask."""
    k, r, c = np.nonzero(mask)
    if len(k) == 0:
        return "none"
    sx, sy, sz = pose.shift_mm
    x = (grid.xs_w[c] - sx) / pose.scale
    y = (grid.ys_w[r] - sy) / pose.scale
    z = (zs_w[k] - sz) / pose.scale
    labels = label_points(anat, x, y, z)
    need = max(3, int(np.ceil(_INVASION_FRACTION * len(k))))
    if np.isin(labels, _DEEP).sum() >= need:
        return "mediastinum"
    if np.isin(labels, _WALL).sum() >= need:
        return "chest_wall"
    return "none"


def _measure(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Greatest diameter of a mask, measured on its bounding box (same result, far faster)."""
    box = tuple(
        slice(int(idx.min()), int(idx.max()) + 1)
        for idx in (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    )
    return measure_lesion(mask[box], spacing).diameter_mm


def _nearest_voxel(
    center_mm: tuple[float, float, float], pose: Pose, grid: Grid, zs_w: np.ndarray
) -> tuple[int, int, int]:
    x, y, z = to_world(pose, center_mm)
    return (
        int(np.argmin(np.abs(zs_w - z))),
        int(np.argmin(np.abs(grid.ys_w - y))),
        int(np.argmin(np.abs(grid.xs_w - x))),
    )


@dataclass(frozen=True)
class Fit:
    """A lesion scaled to a target diameter on a visit's grid, as measured on its mask."""

    shape: LesionShape
    mask: np.ndarray
    diameter_mm: float
    invasion: str


def fit_lesion(
    anat: Anatomy,
    unit_shape: LesionShape,
    unit_diameter_mm: float,
    target_mm: float,
    settings: RenderSettings,
    pose: Pose,
    acq: Acquisition,
    grid: Grid,
) -> Fit:
    """Scale a lesion so the greatest diameter measured on its drawn mask is `target_mm`.

    The continuous shape gives the first scale; one or two corrections by the ratio of target
    to measured diameter absorb the voxelisation, so the mask measures within a voxel of the
    growth model's diameter. The mask is the lesion-centred slice (2D) or the volume (3D).
    """
    thick = acq.thickness_mm
    zs = slice_zs(unit_shape.center_mm, settings, pose, thick, ())
    spacing = (thick, grid.pixel_mm, grid.pixel_mm)
    radius = target_mm / unit_diameter_mm
    shape = unit_shape.scaled(radius)
    mask = _lesion_mask(shape, pose, grid, zs, thick)
    # Only a lesion a few pixels wide can be tuned by whole-voxel measurements; a smaller one
    # keeps its true size and is measured for what it is.
    tunable = target_mm >= 3.0 * grid.pixel_mm
    for _ in range(2):
        if not tunable or not mask.any():
            break
        measured = _measure(mask, spacing)
        if abs(measured - target_mm) <= 0.3 * grid.pixel_mm:
            break
        radius *= float(np.clip(target_mm / measured, 0.8, 1.25))
        shape = unit_shape.scaled(radius)
        mask = _lesion_mask(shape, pose, grid, zs, thick)
    if not mask.any():
        # Smaller than a voxel: mark the voxel holding its centre, so it is found and measured.
        mask[_nearest_voxel(shape.center_mm, pose, grid, zs)] = True
    measured = _measure(mask, spacing)
    invasion = _invasion(anat, pose, grid, zs, mask)
    return Fit(shape=shape, mask=mask, diameter_mm=float(measured), invasion=invasion)
