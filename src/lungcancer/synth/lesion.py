"""Lung lesions: shape (smooth, lobulated, spiculated), density (solid, part-solid, ground-glass,
calcified), size, and how one is drawn into a slice.

A lesion is a star-shaped solid: its radius in each direction u is
    r(u) = R * max(0.35, 1 + sum_k a_k * exp(kappa_k * (u . v_k - 1)))
with broad bumps (small kappa) for lobulation and narrow long ones (large kappa) for spicules.
Spicules are drawn in the image but are not part of the lesion's body: the mask and the greatest
diameter are measured on the body, as radiologists measure a spiculated nodule. The body is
slightly flattened in z so the greatest diameter lies in the axial plane, where a 2D slice
shows it.

Growth is not self-similar (a magnified baseline is not the future). Relative to its baseline
radius R0 (`LesionShape.baseline_radius_mm`), a lesion grown to radius R keeps its spicules'
width in millimetres (they lengthen with the body but do not thicken: kappa grows as
(R / R0)^2) and its lobulations deepen (amplitude x (R / R0)^0.5: lobulation is uneven growth
of the tumour's parts, and larger nodules are more often lobulated). `LesionLook.at_size`
changes the inside with size: the solid core of a part-solid nodule grows faster than the
whole (core diameter ~ diameter^2, so the solid fraction rises until the nodule is solid: the
GGN -> part-solid -> solid course of invasive adenocarcinoma), and necrosis and (squamous)
cavitation appear once the tumour passes a size drawn per patient.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy.spatial import ConvexHull

NODULE_TYPES = ("solid", "part_solid", "ground_glass")
MARGINS = ("smooth", "lobulated", "spiculated")
CALCIFICATIONS = ("none", "central", "diffuse", "popcorn", "laminated")
_SUBSLICES = 3  # samples across the slice thickness, for partial volume at lesion edges
LOBULATION_GROWTH_EXPONENT = 0.5  # bump amplitude x (R / R0)^this


@dataclass(frozen=True)
class LesionShape:
    """Geometry of one lesion in patient space.

    Attributes:
        center_mm: (x, y, z).
        radius_mm: base radius R.
        z_scale: extent in z relative to in-plane (< 1: the axial plane holds the greatest
            diameter).
        bump_dirs: (K, 3) unit vectors of lobulations.
        bump_amps: (K,) relative heights (negative: indentations).
        bump_kappas: (K,) sharpness (larger: narrower).
        spike_dirs: (S, 3) unit vectors of spicules.
        spike_lengths: (S,) spicule length relative to R.
        spike_kappa: sharpness of all spicules at the baseline radius.
        baseline_radius_mm: R0, the radius at which bumps and spicules are as drawn; 0 for a
            lesion that grows self-similarly (nothing changes with size).
    """

    center_mm: tuple[float, float, float]
    radius_mm: float
    z_scale: float
    bump_dirs: np.ndarray
    bump_amps: np.ndarray
    bump_kappas: np.ndarray
    spike_dirs: np.ndarray
    spike_lengths: np.ndarray
    spike_kappa: float
    baseline_radius_mm: float = 0.0

    def scaled(self, factor: float) -> LesionShape:
        """The lesion grown (or shrunk) to `factor` x its base radius.

        Self-similar when `baseline_radius_mm` is 0; otherwise spicules keep their width in mm
        and lobulations deepen with size (see the module docstring).
        """
        return replace(self, radius_mm=self.radius_mm * factor)

    def with_baseline(self, radius_mm: float) -> LesionShape:
        """The same lesion, with bumps and spicules as drawn at base radius `radius_mm`."""
        return replace(self, baseline_radius_mm=float(radius_mm))

    @property
    def growth_ratio(self) -> float:
        """R / R0 (1 for a self-similar lesion)."""
        if self.baseline_radius_mm <= 0:
            return 1.0
        return self.radius_mm / self.baseline_radius_mm

    def moved(self, center_mm: tuple[float, float, float]) -> LesionShape:
        """The same lesion centred elsewhere."""
        return replace(self, center_mm=center_mm)

    def body_radius(self, u: np.ndarray) -> np.ndarray:
        """Radius of the body (no spicules) along unit vectors u (..., 3), before z scaling."""
        rel = np.ones(u.shape[:-1])
        deepen = self.growth_ratio**LOBULATION_GROWTH_EXPONENT
        for v, a, k in zip(self.bump_dirs, self.bump_amps, self.bump_kappas, strict=True):
            rel = rel + deepen * a * np.exp(k * (u @ v - 1.0))
        return np.asarray(self.radius_mm * np.maximum(rel, 0.35))

    def full_radius(self, u: np.ndarray) -> np.ndarray:
        """Radius including spicules."""
        rel = self.body_radius(u) / self.radius_mm
        # Angular width ~ 1/sqrt(kappa): kappa x (R/R0)^2 keeps the width in mm as R grows.
        kappa = self.spike_kappa * self.growth_ratio**2
        for v, length in zip(self.spike_dirs, self.spike_lengths, strict=True):
            rel = rel + length * np.exp(kappa * (u @ v - 1.0))
        return np.asarray(self.radius_mm * rel)

    @cached_property
    def extent_mm(self) -> float:
        """Largest distance from the centre to any point of the lesion, spicules included."""
        # The spicule axes are sampled too: a thin spicule falls between the sphere's points.
        directions = np.concatenate([fibonacci_sphere(400), self.spike_dirs.reshape(-1, 3)])
        return float(self.full_radius(directions).max())

    def fields(
        self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(s_body, s_full): distance from the centre over the body / full radius there.

        Points with s < 1 are inside; s also says how deep (0 at the centre), which places
        solid cores, calcifications and necrosis.
        """
        dx = x - self.center_mm[0]
        dy = y - self.center_mm[1]
        dz = (z - self.center_mm[2]) / self.z_scale
        shape = np.broadcast_shapes(np.shape(dx), np.shape(dy), np.shape(dz))
        d = np.stack([np.broadcast_to(dx, shape), np.broadcast_to(dy, shape),
                      np.broadcast_to(dz, shape)], axis=-1)  # fmt: skip
        rho = np.sqrt((d * d).sum(axis=-1)) + 1e-9
        u = d / rho[..., None]
        body = self.body_radius(u)
        full = self.full_radius(u)
        return rho / body, rho / full

    def surface_points(self, directions: np.ndarray, spicules: bool = False) -> np.ndarray:
        """Surface points (N, 3) in patient space along the given unit directions."""
        r = self.full_radius(directions) if spicules else self.body_radius(directions)
        pts = directions * r[:, None]
        pts[:, 2] *= self.z_scale
        return pts + np.asarray(self.center_mm)

    def axial_diameter_mm(self) -> float:
        """Greatest diameter of the body's cross-section through its centre (continuous)."""
        angles = np.linspace(0.0, 2 * np.pi, 180, endpoint=False)
        u = np.column_stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)])
        pts = self.surface_points(u)[:, :2]
        return _max_pairwise(pts)

    def diameter_3d_mm(self) -> float:
        """Greatest 3D diameter of the body (continuous)."""
        return _max_pairwise(self.surface_points(fibonacci_sphere(600)))

    def volume_ml(self) -> float:
        """Volume of the body (spherical quadrature of r^3 / 3)."""
        u = fibonacci_sphere(2000)
        r = self.body_radius(u)
        return float(4 * np.pi * np.mean(r**3) / 3.0 * self.z_scale / 1000.0)


def _max_pairwise(pts: np.ndarray) -> float:
    if len(pts) > 8:
        pts = pts[ConvexHull(pts).vertices]
    diff = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((diff * diff).sum(-1).max()))


def fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly evenly spread unit vectors (n, 3)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.column_stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)])


def _random_dirs(rng: np.random.Generator, n: int, z_weight: float = 1.0) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    v[:, 2] *= z_weight
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sample_shape(
    rng: np.random.Generator, margin: str, center_mm: tuple[float, float, float]
) -> LesionShape:
    """A random lesion body of unit base radius with the given margin.

    Args:
        rng: the patient's generator.
        margin: "smooth", "lobulated" or "spiculated".
        center_mm: where it sits.

    Returns:
        The shape; scale it with `scaled` to a target diameter.
    """
    if margin == "smooth":
        k = 4
        amps = rng.normal(0.0, 0.05, k)
        kappas = rng.uniform(1.0, 2.0, k)
    elif margin == "lobulated":
        k = int(rng.integers(5, 9))
        amps = rng.uniform(0.12, 0.3, k) * rng.choice([1.0, -0.6], k)
        kappas = rng.uniform(4.0, 9.0, k)
    else:
        k = int(rng.integers(4, 8))
        amps = rng.uniform(0.08, 0.22, k) * rng.choice([1.0, -0.5], k)
        kappas = rng.uniform(3.0, 7.0, k)
    n_spikes = int(rng.integers(8, 20)) if margin == "spiculated" else 0
    return LesionShape(
        center_mm=center_mm,
        radius_mm=1.0,
        z_scale=float(rng.uniform(0.78, 0.92)),
        bump_dirs=_random_dirs(rng, k),
        bump_amps=amps,
        bump_kappas=kappas,
        # Spicules mostly radiate near the axial plane, where a reader sees them.
        spike_dirs=_random_dirs(rng, n_spikes, z_weight=0.5),
        spike_lengths=rng.uniform(0.4, 1.1, n_spikes),
        spike_kappa=float(rng.uniform(180.0, 320.0)),
    )


@dataclass(frozen=True)
class LesionLook:
    """How a lesion looks in HU.

    Attributes:
        nodule_type: "solid", "part_solid" or "ground_glass".
        solid_hu: density of solid tissue.
        ggo_hu: density of ground-glass parts.
        core_fraction: relative radius of the solid core of a part-solid lesion.
        calcification: pattern of calcium ("none", "central", "diffuse", "popcorn",
            "laminated").
        calcium_hu: density of calcified parts.
        necrosis: a lower-density centre (large tumours).
        cavity: an air-filled centre (some squamous carcinomas).
        necrosis_onset_mm: diameter from which the centre is necrotic (inf: never).
        cavity_onset_mm: diameter from which the centre cavitates (inf: never).
        texture_dirs: (3, 3) directions of the internal texture waves.
        texture_phase: (3,) their phases.
        popcorn_centers: (P, 3) centres of popcorn calcifications, in units of R from the centre.
    """

    nodule_type: str
    solid_hu: float
    ggo_hu: float
    core_fraction: float
    calcification: str
    calcium_hu: float
    necrosis: bool
    cavity: bool
    texture_dirs: np.ndarray
    texture_phase: np.ndarray
    popcorn_centers: np.ndarray
    necrosis_onset_mm: float = float("inf")
    cavity_onset_mm: float = float("inf")

    def at_size(self, diameter_mm: float, baseline_diameter_mm: float) -> LesionLook:
        """This (baseline) look once the lesion has grown from `baseline_diameter_mm`.

        The solid core of a part-solid nodule grows as diameter^2, so its relative radius
        rises in proportion to the diameter until the nodule is solid; necrosis and cavitation
        are present from their onset diameters on. Everything else is kept.
        """
        core = self.core_fraction
        if self.nodule_type == "part_solid" and baseline_diameter_mm > 0:
            core = min(1.0, core * max(diameter_mm / baseline_diameter_mm, 0.0))
        return replace(
            self,
            core_fraction=core,
            necrosis=diameter_mm >= self.necrosis_onset_mm,
            cavity=diameter_mm >= self.cavity_onset_mm,
        )


def _onset_mm(rng: np.random.Generator, chance: float, low_mm: float, high_mm: float) -> float:
    """A per-patient onset diameter: uniform in [low, high] with probability `chance`, else
    never (inf). Both draws are always made, so the stream does not depend on the outcome."""
    happens = rng.random() < chance
    onset = float(rng.uniform(low_mm, high_mm))
    return onset if happens else float("inf")


def sample_look(
    rng: np.random.Generator,
    nodule_type: str,
    calcification: str = "none",
    diameter_mm: float = 10.0,
    squamous: bool = False,
) -> LesionLook:
    """Densities and internal structure for a lesion at its baseline `diameter_mm`.

    Necrosis sets in at a per-patient diameter of 30-50 mm for about half of the tumours, and
    a squamous carcinoma cavitates from 20-40 mm in about a third; `LesionLook.at_size` gives
    the look at a later size.
    """
    look = LesionLook(
        nodule_type=nodule_type,
        solid_hu=float(rng.uniform(15.0, 50.0)),
        ggo_hu=float(rng.uniform(-680.0, -430.0)),
        core_fraction=float(rng.uniform(0.3, 0.7)),
        calcification=calcification,
        calcium_hu=float(rng.uniform(300.0, 900.0)),
        necrosis=False,
        cavity=False,
        texture_dirs=_random_dirs(rng, 3),
        texture_phase=rng.uniform(0, 2 * np.pi, 3),
        popcorn_centers=_random_dirs(rng, int(rng.integers(3, 7))) * rng.uniform(0.1, 0.6, (1, 1)),
        necrosis_onset_mm=_onset_mm(rng, 0.5, 30.0, 50.0),
        cavity_onset_mm=_onset_mm(rng, 0.35 if squamous else 0.0, 20.0, 40.0),
    )
    return look.at_size(diameter_mm, diameter_mm)


@dataclass(frozen=True)
class LesionLayer:
    """A lesion's contribution to one slice (arrays on the slice grid, or None if absent).

    Attributes:
        replace_frac: fraction of each pixel's slab replaced by lesion tissue.
        replace_hu: HU of that tissue, already weighted by `replace_frac`.
        add_hu: HU added on top of the background (ground glass over lung, vessels showing).
        body_frac: fraction of the slab inside the lesion body (the mask is body_frac >= 0.5).
    """

    replace_frac: np.ndarray
    replace_hu: np.ndarray
    add_hu: np.ndarray
    body_frac: np.ndarray


def body_fraction(
    shape: LesionShape, xs: np.ndarray, ys: np.ndarray, z_mm: float, thickness_mm: float
) -> np.ndarray:
    """Fraction of each pixel's slab inside the lesion body (the mask is this >= 0.5)."""
    out = np.zeros((len(ys), len(xs)), np.float32)
    box = _window(shape, xs, ys, z_mm, thickness_mm)
    if box is None:
        return out
    r0, r1, c0, c1 = box
    x, y = xs[np.newaxis, c0:c1], ys[r0:r1, np.newaxis]
    part = np.zeros((r1 - r0, c1 - c0), np.float32)
    for off in (np.arange(_SUBSLICES) + 0.5) / _SUBSLICES - 0.5:
        part += shape.fields(x, y, z_mm + off * thickness_mm)[0] < 1.0
    out[r0:r1, c0:c1] = part / _SUBSLICES
    return out


def _window(
    shape: LesionShape, xs: np.ndarray, ys: np.ndarray, z_mm: float, thickness_mm: float
) -> tuple[int, int, int, int] | None:
    """Rows and columns (r0, r1, c0, c1) a lesion can touch in this slab, or None."""
    extent = shape.extent_mm
    cx, cy, cz = shape.center_mm
    if abs(z_mm - cz) > extent * shape.z_scale + thickness_mm / 2:
        return None
    c0, c1 = np.searchsorted(xs, cx - extent), np.searchsorted(xs, cx + extent, side="right")
    r0, r1 = np.searchsorted(ys, cy - extent), np.searchsorted(ys, cy + extent, side="right")
    if c1 <= c0 or r1 <= r0:
        return None
    return int(r0), int(r1), int(c0), int(c1)


def render_lesion(
    shape: LesionShape,
    look: LesionLook,
    xs: np.ndarray,
    ys: np.ndarray,
    z_mm: float,
    thickness_mm: float,
    lung_hu: float,
) -> LesionLayer | None:
    """Draw a lesion into the slab of an axial slice.

    Args:
        shape: geometry (in the slice's coordinates).
        look: densities.
        xs: x of each column (mm, increasing).
        ys: y of each row (mm, increasing).
        z_mm: slice centre.
        thickness_mm: slice thickness.
        lung_hu: the patient's mean parenchyma HU (ground glass is drawn relative to it).

    Returns:
        The lesion's layer, or None when the slab misses the lesion.
    """
    box = _window(shape, xs, ys, z_mm, thickness_mm)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    x = xs[np.newaxis, c0:c1]
    y = ys[r0:r1, np.newaxis]
    shp = (r1 - r0, c1 - c0)
    rep_f, rep_v, add_v, body_f = (np.zeros(shp, np.float32) for _ in range(4))
    offsets = (np.arange(_SUBSLICES) + 0.5) / _SUBSLICES - 0.5
    for off in offsets:
        z = z_mm + off * thickness_mm
        s_body, s_full = shape.fields(x, y, z)
        inside = s_full < 1.0
        body_f += s_body < 1.0
        if not inside.any():
            continue
        hu, ggo = _densities(shape, look, x, y, z, s_body)
        solid = inside & ~ggo
        rep_f += solid
        rep_v += np.where(solid, hu, 0.0)
        add_v += np.where(inside & ggo, look.ggo_hu - lung_hu, 0.0)
    full = (np.zeros((len(ys), len(xs)), np.float32) for _ in range(4))
    out = []
    for arr, part in zip(full, (rep_f, rep_v, add_v, body_f), strict=True):
        arr[r0:r1, c0:c1] = part / _SUBSLICES
        out.append(arr)
    return LesionLayer(*out)


def _densities(
    shape: LesionShape,
    look: LesionLook,
    x: np.ndarray,
    y: np.ndarray,
    z: float,
    s_body: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """HU of solid tissue at each point, and where the lesion is ground glass instead."""
    c = np.asarray(shape.center_mm)
    r = shape.radius_mm
    rel = [(x - c[0]) / r, (y - c[1]) / r, (z - c[2]) / r]
    texture = np.zeros(np.broadcast_shapes(s_body.shape), np.float32)
    for d, ph in zip(look.texture_dirs, look.texture_phase, strict=True):
        texture = texture + 4.0 * np.cos(5.0 * (d[0] * rel[0] + d[1] * rel[1] + d[2] * rel[2]) + ph)
    hu = look.solid_hu + texture
    if look.nodule_type == "ground_glass":
        ggo = np.ones_like(s_body, dtype=bool)
    elif look.nodule_type == "part_solid":
        ggo = s_body >= look.core_fraction
    else:
        ggo = np.zeros_like(s_body, dtype=bool)
    # Spicules are thin strands of solid tissue whatever the body is.
    ggo &= s_body < 1.0
    if look.necrosis:
        hu = np.where(s_body < 0.5, hu - 25.0, hu)
    if look.cavity:
        hu = np.where(s_body < 0.38 + 0.1 * np.cos(3 * rel[0]), -950.0, hu)
    calc = look.calcification
    if calc == "central":
        hu = np.where(s_body < 0.4, look.calcium_hu, hu)
    elif calc == "diffuse":
        hu = np.where(s_body < 0.85, 0.6 * look.calcium_hu, hu)
    elif calc == "laminated":
        hu = np.where((s_body > 0.45) & (s_body < 0.6), look.calcium_hu, hu)
        hu = np.where(s_body < 0.2, look.calcium_hu, hu)
    elif calc == "popcorn":
        for p in look.popcorn_centers:
            d2 = (rel[0] - p[0]) ** 2 + (rel[1] - p[1]) ** 2 + (rel[2] - p[2]) ** 2
            hu = np.where(d2 < 0.2**2, look.calcium_hu, hu)
    if calc != "none":
        ggo = np.zeros_like(ggo)
    return np.asarray(hu, np.float32), np.asarray(ggo)
