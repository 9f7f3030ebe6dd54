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
    """z-independent fields of a slice grid, shared by every slice of a volume.

    Attributes:
        rho: distance from the body centre (mm).
        sin_theta: sine of the angle about the body centre (1 straight back, -1 front).
        r_body, r_fat, r_muscle, r_inner: radii at each point's angle of the skin surface, the
            fat-muscle boundary, the muscle-rib boundary and the inner rib-cage surface.
        rib_phase: the rib height term of each point's angle (mm), NaN where there is no rib.
    """

    rho: np.ndarray
    sin_theta: np.ndarray
    r_body: np.ndarray
    r_fat: np.ndarray
    r_muscle: np.ndarray
    r_inner: np.ndarray
    rib_phase: np.ndarray


def polar_fields(anat: Anatomy, x: np.ndarray, y: np.ndarray) -> Polar:
    """Outline radii and rib geometry at points (x, y) (broadcastable arrays, mm)."""
    hab = anat.habitus
    theta = np.arctan2(y, x)
    rho = np.hypot(x, y)
    r_body = hab.body_radius(theta)
    fat, muscle = hab.wall_depths(theta)
    r_fat = r_body - hab.skin_mm
    r_muscle = r_fat - fat
    r_inner = r_muscle - muscle - hab.rib_layer_mm
    # Angle from the posterior midline; ribs descend from back to front.
    phi = np.arccos(np.clip(np.sin(theta), -1.0, 1.0))
    in_range = (phi > _RIB_PHI_RANGE[0]) & (phi < _RIB_PHI_RANGE[1])
    phase = anat.rib_z0_mm - anat.rib_drop_mm * (phi / np.pi) ** 1.3
    return Polar(
        rho=np.asarray(rho),
        sin_theta=np.asarray(np.sin(theta)),
        r_body=r_body,
        r_fat=np.asarray(r_fat),
        r_muscle=np.asarray(r_muscle),
        r_inner=np.asarray(r_inner),
        rib_phase=np.where(in_range, phase, np.nan),
    )


def _base_labels(
    anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray | float, polar: Polar
) -> np.ndarray:
    """Body layers, ribs, lungs with apices and domes, vertebral bodies and the table."""
    hab = anat.habitus
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
    labels = np.zeros(shape, dtype=np.uint8)
    rho = polar.rho
    labels[np.broadcast_to(rho < polar.r_body, shape)] = an.SKIN
    labels[np.broadcast_to(rho < polar.r_fat, shape)] = an.FAT
    labels[np.broadcast_to(rho < polar.r_muscle, shape)] = an.MUSCLE
    lung = np.broadcast_to(rho < polar.r_inner, shape)
    right = np.broadcast_to(x < anat.x_mid_mm, shape)
    labels[lung & right] = an.LUNG_R
    labels[lung & ~right] = an.LUNG_L

    # Ribs: oval cross-sections in the rib layer, one per `rib_spacing_mm` of height.
    band = (rho >= polar.r_inner) & (rho < polar.r_inner + hab.rib_layer_mm)
    band = np.broadcast_to(band, shape) & np.broadcast_to(np.isfinite(polar.rib_phase), shape)
    if band.any():
        phase = np.broadcast_to(polar.rib_phase, shape)[band]
        zz = np.broadcast_to(z, shape)[band]
        q = (phase - zz) / anat.rib_spacing_mm
        k = np.rint(q)
        dz = (q - k) * anat.rib_spacing_mm / anat.rib_half_height_mm
        radial = np.broadcast_to(rho - polar.r_inner, shape)[band]
        dr = (radial - 0.5 * hab.rib_layer_mm) / (0.42 * hab.rib_layer_mm)
        norm = dz * dz + dr * dr
        bone = (norm < 1.0) & (k >= 0) & (k < _RIB_COUNT)
        values = labels[band]
        values[bone] = np.where(norm[bone] > 0.4, an.RIB_CORTEX, an.RIB_MARROW)
        labels[band] = values

    zb = np.broadcast_to(z, shape)
    is_lung = (labels == an.LUNG_R) | (labels == an.LUNG_L)
    # Apices: above the taper the lungs shrink to two domes; the rest is neck soft tissue.
    upper = is_lung & (zb > anat.z_taper_mm)
    if upper.any():
        span = anat.z_apex_mm - anat.z_taper_mm
        s = np.sqrt(np.clip(1.0 - ((zb[upper] - anat.z_taper_mm) / span) ** 2, 0.0, 1.0))
        xu = np.broadcast_to(x, shape)[upper]
        yu = np.broadcast_to(y, shape)[upper]
        ax, ay = anat.apex_semi_mm
        cx = anat.x_mid_mm + np.where(xu < anat.x_mid_mm, -1.0, 1.0) * (ax + 15.0)
        out = ((xu - cx) / (ax * s + 1e-6)) ** 2 + (
            (yu - anat.apex_center_y_mm) / (ay * s + 1e-6)
        ) ** 2 >= 1.0
        values = labels[upper]
        values[out] = an.MUSCLE
        labels[upper] = values
        is_lung = (labels == an.LUNG_R) | (labels == an.LUNG_L)
    # Diaphragm: below the domes lie the liver (right) and spleen/stomach (left).
    if is_lung.any():
        xl = np.broadcast_to(x, shape)[is_lung]
        yl = np.broadcast_to(y, shape)[is_lung]
        below = zb[is_lung] < anat.dome_z(xl, yl)
        if below.any():
            values = labels[is_lung]
            values[below] = np.where(xl[below] < anat.x_mid_mm + 20, an.ABDOMEN_R, an.ABDOMEN_L)
            labels[is_lung] = values

    # CT table under the patient, in the air only.
    xt = np.broadcast_to(x, shape)
    yt = np.broadcast_to(y, shape)
    top = anat.table_y_mm - 20.0 * (xt / _TABLE_HALF_WIDTH_MM) ** 2
    in_table = (labels == an.AIR) & (np.abs(xt) < _TABLE_HALF_WIDTH_MM) & (yt >= top)
    depth = yt - top
    labels[in_table & (depth < 2.5)] = an.TABLE_SHELL
    labels[in_table & (depth >= 2.5) & (depth < 28.0)] = an.TABLE_CORE
    labels[in_table & (depth >= 28.0) & (depth < 30.5)] = an.TABLE_SHELL
    return labels


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
        zb = np.broadcast_to(z, shape)
        disc = np.mod(zb - anat.disc_phase_mm, anat.disc_period_mm) < anat.disc_mm
        labels[outer] = an.SPINE_CORTEX
        labels[outer & inner] = an.SPINE_MARROW
        labels[outer & disc] = an.DISC
    canal_y = anat.spine_y_mm + ry + anat.canal_r_mm + 1.5
    canal = dx**2 + (np.broadcast_to(y, shape) - canal_y) ** 2 < anat.canal_r_mm**2
    labels[canal] = an.CANAL


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
    labels = _base_labels(anat, x2, y2, z, polar)
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
    _spine(anat, x2, y2, z, labels)
    return labels


def label_points(anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue labels at scattered points (1-D arrays of equal length, mm)."""
    labels = _base_labels(anat, x, y, z, polar_fields(anat, x, y))
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
    hab = anat.habitus
    z_lo, z_hi = z_range_mm or (min(anat.dome_z_mm) - anat.recess_mm - 40.0, anat.z_apex_mm)
    lo = (anat.x_mid_mm - hab.body_a_mm, anat.y_sternum_mm - 20.0, z_lo)
    hi = (anat.x_mid_mm + hab.body_a_mm, anat.spine_y_mm + 60.0, z_hi)
    found: dict[int, list[np.ndarray]] = {an.LUNG_R: [], an.LUNG_L: []}
    for _ in range(50):
        pts = rng.uniform(lo, hi, size=(6 * count, 3))
        labels = label_points(anat, pts[:, 0], pts[:, 1], pts[:, 2])
        for label, kept in found.items():
            kept.append(pts[labels == label])
        if min(sum(len(a) for a in v) for v in found.values()) >= count:
            break
    return {label: np.concatenate(kept)[:count] for label, kept in found.items()}
