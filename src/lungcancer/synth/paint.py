"""Tissue labels of an `Anatomy` on a slice grid or at scattered points.

One set of rules, two drivers: `label_slice` paints an axial plane on a regular grid, evaluating
each shape only inside its bounding box; `label_points` labels arbitrary points (vessel-tree
attractors, lesion surfaces) with exactly the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcancer.synth import anatomy as an
from lungcancer.synth.anatomy import Anatomy

_RIB_COUNT = 12
_RIB_PHI_RANGE = (0.22, 2.45)  # angle from the back (rad) where ribs are bone, not cartilage
_TABLE_HALF_WIDTH_MM = 230.0


@dataclass(frozen=True)
class Polar:
    """Everything about a set of (x, y) positions that does not depend on z.

    A volume's slices share one grid, so the body outline, chest-wall layers, table, and the
    rib and lung geometry are computed once and each slice only applies what varies with
    height (rib levels, apices, diaphragm domes).

    Attributes:
        shape: shape of the positions (a grid (H, W) or scattered points (N,)).
        rho: distance from the body centre (mm).
        sin_theta: sine of the angle about the body centre (1 straight back, -1 front).
        r_inner: radius of the inner rib-cage surface at each point's angle (mm).
        static_labels: labels before any z rule: air, skin, fat, muscle, lung, table.
        band_idx: flat indices of points in the rib layer where ribs are bone.
        band_phase: rib height term there (mm).
        band_dr: normalised radial position across the rib layer there.
        lung_idx: flat indices of lung points.
        lung_x, lung_y: their coordinates.
        lung_dome_z: the diaphragm height under each of them.
    """

    shape: tuple[int, ...]
    rho: np.ndarray
    sin_theta: np.ndarray
    r_inner: np.ndarray
    static_labels: np.ndarray
    band_idx: np.ndarray
    band_phase: np.ndarray
    band_dr: np.ndarray
    lung_idx: np.ndarray
    lung_x: np.ndarray
    lung_y: np.ndarray
    lung_dome_z: np.ndarray


def polar_fields(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> Polar:
    """The z-independent fields at points (x, y) (broadcastable arrays, mm)."""
    hab = anat.habitus
    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    xb, yb = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
    theta = np.arctan2(yb, xb)
    rho = np.hypot(xb, yb)
    r_body = hab.body_radius(theta)
    fat, muscle = hab.wall_depths(theta)
    r_fat = r_body - hab.skin_mm
    r_muscle = r_fat - fat
    r_inner = r_muscle - muscle - hab.rib_layer_mm
    labels = np.zeros(shape, dtype=np.uint8)
    labels[rho < r_body] = an.SKIN
    labels[rho < r_fat] = an.FAT
    labels[rho < r_muscle] = an.MUSCLE
    lung = rho < r_inner
    right = xb < anat.x_mid_mm
    labels[lung & right] = an.LUNG_R
    labels[lung & ~right] = an.LUNG_L
    # CT table under the patient, in the air only.
    top = anat.table_y_mm - 20.0 * (xb / _TABLE_HALF_WIDTH_MM) ** 2
    depth = yb - top
    table = (labels == an.AIR) & (np.abs(xb) < _TABLE_HALF_WIDTH_MM) & (depth >= 0)
    labels[table & (depth < 2.5)] = an.TABLE_SHELL
    labels[table & (depth >= 2.5) & (depth < 28.0)] = an.TABLE_CORE
    labels[table & (depth >= 28.0) & (depth < 30.5)] = an.TABLE_SHELL
    # Ribs lie in the rib layer; their angle from the posterior midline sets their height
    # (they descend from back to front).
    sin_theta = np.sin(theta)
    phi = np.arccos(np.clip(sin_theta, -1.0, 1.0))
    band = (rho >= r_inner) & (rho < r_inner + hab.rib_layer_mm)
    band &= (phi > _RIB_PHI_RANGE[0]) & (phi < _RIB_PHI_RANGE[1])
    band_idx = np.flatnonzero(band)
    band_phase = anat.rib_z0_mm - anat.rib_drop_mm * (phi.ravel()[band_idx] / np.pi) ** 1.3
    radial = (rho - r_inner).ravel()[band_idx]
    band_dr = (radial - 0.5 * hab.rib_layer_mm) / (0.42 * hab.rib_layer_mm)
    lung_idx = np.flatnonzero(lung)
    lung_x, lung_y = xb.ravel()[lung_idx], yb.ravel()[lung_idx]
    return Polar(
        shape=shape,
        rho=np.asarray(rho),
        sin_theta=np.asarray(sin_theta),
        r_inner=np.asarray(r_inner),
        static_labels=labels,
        band_idx=band_idx,
        band_phase=band_phase,
        band_dr=band_dr,
        lung_idx=lung_idx,
        lung_x=lung_x,
        lung_y=lung_y,
        lung_dome_z=anat.dome_z(lung_x, lung_y),
    )


def _at(z: np.ndarray | float, idx: np.ndarray) -> np.ndarray | float:
    """z at the given flat indices (a scalar z is the same everywhere)."""
    if isinstance(z, np.ndarray) and z.ndim > 0:
        return np.asarray(z.ravel()[idx])
    return float(z)


def _base_labels(anat: Anatomy, z: np.ndarray | float, polar: Polar) -> np.ndarray:
    """Body layers, ribs, lungs with apices and domes, and the table at height(s) z."""
    labels = polar.static_labels.copy().ravel()
    # Ribs: oval cross-sections in the rib layer, one per `rib_spacing_mm` of height.
    q = (polar.band_phase - _at(z, polar.band_idx)) / anat.rib_spacing_mm
    k = np.rint(q)
    dz = (q - k) * anat.rib_spacing_mm / anat.rib_half_height_mm
    norm = dz * dz + polar.band_dr * polar.band_dr
    bone = (norm < 1.0) & (k >= 0) & (k < _RIB_COUNT)
    labels[polar.band_idx[bone]] = np.where(norm[bone] > 0.4, an.RIB_CORTEX, an.RIB_MARROW)
    # Apices: above the taper the lungs shrink to two domes; the rest is neck soft tissue.
    zl = np.broadcast_to(_at(z, polar.lung_idx), polar.lung_idx.shape)
    upper = zl > anat.z_taper_mm
    if upper.any():
        span = anat.z_apex_mm - anat.z_taper_mm
        s = np.sqrt(np.clip(1.0 - ((zl[upper] - anat.z_taper_mm) / span) ** 2, 0.0, 1.0))
        xu, yu = polar.lung_x[upper], polar.lung_y[upper]
        ax, ay = anat.apex_semi_mm
        cx = anat.x_mid_mm + np.where(xu < anat.x_mid_mm, -1.0, 1.0) * (ax + 15.0)
        dy = (yu - anat.apex_center_y_mm) / (ay * s + 1e-6)
        out = ((xu - cx) / (ax * s + 1e-6)) ** 2 + dy**2 >= 1.0
        labels[polar.lung_idx[upper][out]] = an.MUSCLE
    # Diaphragm: below the domes lie the liver (right) and spleen/stomach (left).
    below = zl < polar.lung_dome_z
    if below.any():
        liver = polar.lung_x[below] < anat.x_mid_mm + 20
        labels[polar.lung_idx[below]] = np.where(liver, an.ABDOMEN_R, an.ABDOMEN_L)
    return labels.reshape(polar.shape)


def _spine(
    anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray | float, labels: np.ndarray
) -> None:
    """Vertebral bodies (cortex, marrow; discs between them) and the spinal canal, in place."""
    shape = labels.shape
    rx, ry = anat.spine_r_mm
    dx = np.broadcast_to(x - anat.spine_x_mm, shape)
    dy = np.broadcast_to(y - anat.spine_y_mm, shape)
    outer = (dx / rx) ** 2 + (dy / ry) ** 2 < 1.0
    if outer.any():
        inner = (dx / (rx - 2.5)) ** 2 + (dy / (ry - 2.5)) ** 2 < 1.0
        disc = np.mod(np.broadcast_to(z, shape) - anat.disc_phase_mm, anat.disc_period_mm)
        labels[outer] = an.SPINE_CORTEX
        labels[outer & inner] = an.SPINE_MARROW
        labels[outer & (disc < anat.disc_mm)] = an.DISC
    canal_dy = dy - (ry + anat.canal_r_mm + 1.5)
    labels[dx**2 + canal_dy**2 < anat.canal_r_mm**2] = an.CANAL


def _spine_window(anat: Anatomy, xs: np.ndarray, ys: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of a slice grid that the vertebral body and canal can touch."""
    rx, ry = anat.spine_r_mm
    x0, x1 = anat.spine_x_mm - rx, anat.spine_x_mm + rx
    y0, y1 = anat.spine_y_mm - ry, anat.spine_y_mm + ry + 2 * anat.canal_r_mm + 2.0
    return (
        slice(int(np.searchsorted(ys, y0)), int(np.searchsorted(ys, y1, side="right"))),
        slice(int(np.searchsorted(xs, x0)), int(np.searchsorted(xs, x1, side="right"))),
    )


def label_slice(
    anat: Anatomy, xs: np.ndarray, ys: np.ndarray, z: float, polar: Polar | None = None
) -> np.ndarray:
    """Tissue labels of the axial plane at height `z` on a regular grid.

    Args:
        anat: the patient.
        xs: x of each column (mm, increasing).
        ys: y of each row (mm, increasing).
        z: height of the plane (mm).
        polar: `polar_fields(anat, xs[None, :], ys[:, None])`, reused across slices.

    Returns:
        uint8 labels, shape (len(ys), len(xs)).
    """
    x2, y2 = xs[np.newaxis, :], ys[:, np.newaxis]
    if polar is None:
        polar = polar_fields(anat, x2, y2)
    labels = _base_labels(anat, z, polar)
    for layer in anat.layers:
        x0, x1, y0, y1, z0, z1 = layer.shape.box
        if not z0 <= z <= z1:
            continue
        c0, c1 = np.searchsorted(xs, x0), np.searchsorted(xs, x1, side="right")
        r0, r1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1, side="right")
        if c1 <= c0 or r1 <= r0:
            continue
        view = labels[r0:r1, c0:c1]
        hit = layer.shape.inside(xs[np.newaxis, c0:c1], ys[r0:r1, np.newaxis], z)
        if layer.over:
            hit &= layer.over_lut[view]
        view[hit] = layer.label
    rows, cols = _spine_window(anat, xs, ys)
    _spine(anat, xs[np.newaxis, cols], ys[rows, np.newaxis], z, labels[rows, cols])
    return labels


def label_points(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue labels at scattered points (1-D arrays of equal length, mm)."""
    labels = _base_labels(anat, z, polar_fields(anat, x, y))
    for layer in anat.layers:
        x0, x1, y0, y1, z0, z1 = layer.shape.box
        idx = np.nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1))[0]
        if idx.size == 0:
            continue
        hit = layer.shape.inside(x[idx], y[idx], z[idx])
        if layer.over:
            hit &= layer.over_lut[labels[idx]]
        labels[idx[hit]] = layer.label
    _spine(anat, x, y, z, labels)
    return labels


def sample_lung_points(
    anat: Anatomy,
    count: int,
    rng: np.random.Generator,
    z_range_mm: tuple[float, float] | None = None,
) -> dict[int, np.ndarray]:
    """`count` points uniformly inside each lung, keyed by lung label (rejection sampling).

    Args:
        anat: the patient.
        count: points wanted per lung.
        rng: the patient's generator.
        z_range_mm: only heights within this range (default: the whole lungs).

    Returns:
        {LUNG_R: (count, 3) array, LUNG_L: (count, 3) array}, x-y-z in mm.
    """
    lo, hi = anat.lung_box
    if z_range_mm is not None:
        lo, hi = (lo[0], lo[1], z_range_mm[0]), (hi[0], hi[1], z_range_mm[1])
    found: dict[int, list[np.ndarray]] = {an.LUNG_R: [], an.LUNG_L: []}
    for _ in range(50):
        pts = rng.uniform(lo, hi, size=(5 * count, 3))
        labels = label_points(anat, pts[:, 0], pts[:, 1], pts[:, 2])
        for label, kept in found.items():
            kept.append(pts[labels == label])
        if min(sum(len(a) for a in v) for v in found.values()) >= count:
            break
    return {label: np.concatenate(kept)[:count] for label, kept in found.items()}
