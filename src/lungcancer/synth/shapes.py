"""Solid primitives in patient space (mm) that LungSim's anatomy is built from.

Every primitive answers one question, `inside(x, y, z)`, for arrays of points (any broadcastable
shapes), and gives a bounding box so a slice painter evaluates it only where it can be. The same
test labels a slice, a volume or a scattered set of points (vessel-tree attractors, lesion
surfaces), so what LungSim places and what it draws never disagree.

Coordinates are DICOM patient (LPS) millimetres: x toward the patient's left, y toward the back,
z toward the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Box = tuple[float, float, float, float, float, float]  # x0, x1, y0, y1, z0, z1


@dataclass(frozen=True)
class Capsule:
    """A cylinder with rounded ends between two points, radius tapering linearly.

    Attributes:
        p0: start point (x, y, z) mm.
        p1: end point (x, y, z) mm.
        r0_mm: radius at p0.
        r1_mm: radius at p1.
    """

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0_mm: float
    r1_mm: float

    @cached_property
    def box(self) -> Box:
        r = max(self.r0_mm, self.r1_mm)
        lo = np.minimum(self.p0, self.p1) - r
        hi = np.maximum(self.p0, self.p1) + r
        return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        d = np.subtract(self.p1, self.p0)
        length_sq = float(d @ d) or 1e-9
        rx, ry, rz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / length_sq, 0.0, 1.0)
        ex, ey, ez = rx - t * d[0], ry - t * d[1], rz - t * d[2]
        radius = self.r0_mm + (self.r1_mm - self.r0_mm) * t
        return np.asarray(ex * ex + ey * ey + ez * ez < radius * radius)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with semi-axes along the columns of a rotation matrix.

    Attributes:
        center: (x, y, z) mm.
        semi_axes_mm: lengths along the three rotated axes.
        rotation: 3x3 row-major matrix whose columns are the axes in patient space.
    """

    center: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @cached_property
    def box(self) -> Box:
        rot = np.asarray(self.rotation).reshape(3, 3)
        # Half-extent along each patient axis of a rotated ellipsoid.
        half = np.sqrt(((rot * np.asarray(self.semi_axes_mm)) ** 2).sum(axis=1))
        c = np.asarray(self.center)
        return (c[0] - half[0], c[0] + half[0], c[1] - half[1], c[1] + half[1], c[2] - half[2],
                c[2] + half[2])  # fmt: skip

    def normalized_radius_sq(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float
    ) -> np.ndarray:
        """Squared normalised radius: < 1 inside, 1 on the surface."""
        rot = self.rotation
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        total = np.zeros(np.broadcast_shapes(np.shape(dx), np.shape(dy), np.shape(dz)))
        for axis in range(3):
            along = dx * rot[axis] + dy * rot[3 + axis] + dz * rot[6 + axis]
            total = total + (along / self.semi_axes_mm[axis]) ** 2
        return total

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        return np.asarray(self.normalized_radius_sq(x, y, z) < 1.0)


@dataclass(frozen=True)
class ZTube:
    """A tube along z whose elliptic cross-section moves and changes size with z.

    Between the knots the centre and half-axes are linearly interpolated; outside [z0, z1]
    the tube is absent, and within `round_mm` of either end its cross-section shrinks like a
    sphere's so the ends are domes, not cut faces.

    Attributes:
        z_knots: increasing z positions (mm).
        cx_knots, cy_knots: centre per knot.
        ax_knots, ay_knots: half-axes (x, y) per knot.
        round_mm: length of the domed ends.
    """

    z_knots: tuple[float, ...]
    cx_knots: tuple[float, ...]
    cy_knots: tuple[float, ...]
    ax_knots: tuple[float, ...]
    ay_knots: tuple[float, ...]
    round_mm: float = 0.0

    @cached_property
    def box(self) -> Box:
        cx, cy = np.asarray(self.cx_knots), np.asarray(self.cy_knots)
        ax, ay = np.asarray(self.ax_knots), np.asarray(self.ay_knots)
        return (float((cx - ax).min()), float((cx + ax).max()), float((cy - ay).min()),
                float((cy + ay).max()), self.z_knots[0], self.z_knots[-1])  # fmt: skip

    def _scale(self, z: np.ndarray) -> np.ndarray:
        z0, z1 = self.z_knots[0], self.z_knots[-1]
        if self.round_mm <= 0:
            return np.where((z >= z0) & (z <= z1), 1.0, 0.0)
        edge = np.minimum(z - z0, z1 - z) / self.round_mm
        return np.sqrt(np.clip(1.0 - (1.0 - np.clip(edge, 0.0, 1.0)) ** 2, 0.0, 1.0)) * (edge >= 0)

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        zz = np.asarray(z, dtype=np.float64)
        scale = self._scale(zz)
        cx = np.interp(zz, self.z_knots, self.cx_knots)
        cy = np.interp(zz, self.z_knots, self.cy_knots)
        ax = np.interp(zz, self.z_knots, self.ax_knots) * scale + 1e-9
        ay = np.interp(zz, self.z_knots, self.ay_knots) * scale + 1e-9
        return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1.0)


Shape = Capsule | Ellipsoid | ZTube


def rotation_z(angle_rad: float) -> tuple[float, ...]:
    """Row-major rotation about z by `angle_rad` (x toward y)."""
    c, s = float(np.cos(angle_rad)), float(np.sin(angle_rad))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def rotation_zx(angle_z_rad: float, tilt_x_rad: float) -> tuple[float, ...]:
    """Rotation about x by `tilt_x_rad`, then about z by `angle_z_rad` (row-major)."""
    cz, sz = np.cos(angle_z_rad), np.sin(angle_z_rad)
    cx, sx = np.cos(tilt_x_rad), np.sin(tilt_x_rad)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return tuple(float(v) for v in (rz @ rx).ravel())
