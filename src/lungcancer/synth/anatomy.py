"""A patient's chest anatomy: sampled once per patient, labelled anywhere in patient space.

`sample_anatomy(rng)` draws a varied adult chest (body habitus, fat, muscle, rib cage, spine,
mediastinum with heart, aorta, pulmonary arteries, trachea, bronchi and oesophagus, two lungs
with apices and diaphragm domes). `label_slice` paints the tissue labels of one axial plane on a
regular grid; `label_points` labels any scattered points with the same rules, so lesion
placement and the vessel tree see exactly the anatomy that is drawn.

Coordinates: patient (LPS) mm, x toward the patient's left, y toward the back, z toward the
head; z = 0 is the carina, x = y = 0 the centre of the body outline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lungcancer.synth.shapes import Capsule, Ellipsoid, Shape, ZTube, rotation_z

# Tissue labels. The HU of each is in `LABEL_HU`; lung HU is computed (gravity gradient).
AIR, SKIN, FAT, MUSCLE, RIB_CORTEX, RIB_MARROW = 0, 1, 2, 3, 4, 5
LUNG_R, LUNG_L, MED_FAT, HEART, VESSEL, AIRWAY = 6, 7, 8, 9, 10, 11
AIRWAY_WALL, OESOPHAGUS, ABDOMEN_R, ABDOMEN_L, GAS, CANAL = 12, 13, 14, 15, 16, 17
DISC, TABLE_SHELL, TABLE_CORE, NODE, EFFUSION, SPINE_CORTEX, SPINE_MARROW = (
    18, 19, 20, 21, 22, 23, 24,
)  # fmt: skip
ATELECTASIS = 25
N_LABELS = 26

# Typical non-contrast CT values (HU); per-patient offsets are added by the renderer.
LABEL_HU = np.array(
    [-1000, 30, -100, 45, 850, 250, -860, -860, -90, 40, 42, -995, 30, 38, 58, 42, -990, 15,
     85, 250, -850, 38, 12, 750, 270, -350],
    dtype=np.float32,
)  # fmt: skip
LUNG_LABELS = (LUNG_R, LUNG_L)
CHEST_WALL_LABELS = (SKIN, FAT, MUSCLE, RIB_CORTEX, RIB_MARROW)
MEDIASTINUM_LABELS = (MED_FAT, HEART, VESSEL, AIRWAY, AIRWAY_WALL, OESOPHAGUS)
DIAPHRAGM_LABELS = (ABDOMEN_R, ABDOMEN_L, GAS)
SPINE_LABELS = (SPINE_CORTEX, SPINE_MARROW, CANAL, DISC)

_THORAX = (LUNG_R, LUNG_L, MED_FAT)


@dataclass(frozen=True)
class Layer:
    """One shape painted with one label, only over the labels in `over` (empty: anything)."""

    label: int
    shape: Shape
    over: tuple[int, ...] = ()

    @cached_property
    def over_lut(self) -> np.ndarray:
        """Boolean lookup by label: may this layer paint over it?"""
        lut = np.zeros(N_LABELS, dtype=bool)
        lut[list(self.over) if self.over else slice(None)] = True
        return lut


@dataclass(frozen=True)
class Habitus:
    """Body outline and chest-wall layers, as functions of the angle about the body centre."""

    body_a_mm: float
    body_b_ant_mm: float
    body_b_post_mm: float
    body_p_ant: float
    body_p_post: float
    body_harmonics: tuple[tuple[int, float, float], ...]
    skin_mm: float
    fat_mm: float
    fat_lateral: float
    muscle_mm: float
    para_muscle_mm: float
    pect_muscle_mm: float
    rib_layer_mm: float

    def body_radius(self, theta: np.ndarray) -> np.ndarray:
        """Radius of the skin surface at each angle (theta = atan2(y, x))."""
        c, s = np.abs(np.cos(theta)), np.sin(theta)
        b = np.where(s < 0, self.body_b_ant_mm, self.body_b_post_mm)
        p = np.where(s < 0, self.body_p_ant, self.body_p_post)
        r = ((c / self.body_a_mm) ** p + (np.abs(s) / b) ** p) ** (-1.0 / p)
        wobble = np.ones_like(theta)
        for k, amp, phase in self.body_harmonics:
            wobble = wobble + amp * np.cos(k * theta + phase)
        return np.asarray(r * wobble)

    def wall_depths(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fat, muscle) thickness in mm at each angle."""
        c, s = np.cos(theta), np.sin(theta)
        fat = self.fat_mm * (1.0 + self.fat_lateral * c * c) * (1.0 - 0.35 * np.clip(s, 0, 1))
        # Paraspinal muscles at the back (theta = +90 deg), pectorals at the front (-90 deg).
        para = self.para_muscle_mm * np.exp((s - 1.0) / 0.06)
        pect = self.pect_muscle_mm * np.exp((-s - 1.0) / 0.35)
        return fat, self.muscle_mm + para + pect

    def inner_radius(self, theta: np.ndarray) -> np.ndarray:
        """Radius of the inner surface of the rib cage (the parietal pleura)."""
        fat, muscle = self.wall_depths(theta)
        return np.asarray(self.body_radius(theta) - self.skin_mm - fat - muscle - self.rib_layer_mm)

    def inner_radius_at(self, theta: float) -> float:
        """`inner_radius` at one angle."""
        return float(self.inner_radius(np.array([theta]))[0])


@dataclass(frozen=True)
class Fissure:
    """A pleural fissure: the sheet z = z0 + slope * (y - y0) - curvature * (x - x0)^2.

    Attributes:
        side: LUNG_R or LUNG_L.
        x0_mm, y0_mm, z0_mm: a point of the sheet (x0 is its most superior line).
        slope: dz/dy (oblique fissures rise toward the back).
        curvature: how much the sheet drops laterally (1/mm).
        anterior_to: for the right horizontal fissure, the index of the oblique fissure it
            stops at (it exists only in front of / above that one); -1 otherwise.
    """

    side: int
    x0_mm: float
    y0_mm: float
    z0_mm: float
    slope: float
    curvature: float
    anterior_to: int = -1

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the sheet above each (x, y)."""
        return np.asarray(
            self.z0_mm + self.slope * (y - self.y0_mm) - self.curvature * (x - self.x0_mm) ** 2
        )


@dataclass(frozen=True)
class Anatomy:
    """Everything needed to label one patient's chest; `sample_anatomy` documents the ranges.

    Attributes:
        habitus: body outline and chest-wall layers.
        x_mid_mm: the mediastinal midline.
        y_sternum_mm: inner surface of the sternum (front of the mediastinum).
        y_spine_front_mm: front of the vertebral bodies (back of the mediastinum).
        z_apex_mm: top of the lungs.
        z_taper_mm: above this height the lungs narrow toward their apices.
        apex_semi_mm: (x, y) half-axes of each lung's cross-section where tapering starts.
        apex_center_y_mm: y of the apical cross-sections' centres.
        dome_z_mm: top of the (right, left) diaphragm domes.
        dome_x_mm: x of the (right, left) dome tops.
        dome_y_mm: y of the dome tops.
        dome_halfwidth_mm: lateral fall-off distance of the domes.
        recess_mm: how much lower the posterior costophrenic recesses reach than the domes.
        rib_z0_mm, rib_spacing_mm, rib_drop_mm, rib_half_height_mm: rib cage geometry (ribs
            descend by `rib_drop_mm` from back to front).
        spine_x_mm, spine_y_mm, spine_r_mm: vertebral body centre and (x, y) radii.
        canal_r_mm: spinal canal radius.
        disc_period_mm, disc_phase_mm, disc_mm: intervertebral discs along z.
        table_y_mm: top of the CT table.
        lung_hu_anterior: parenchyma HU at the front of the lungs.
        lung_gradient_hu: how much denser the back of the lungs is (gravity, supine).
        layers: mediastinum, walls and normal nodes in paint order.
        artery_roots, vein_roots: where the pulmonary vessel trees start (right, left).
        fissures: right oblique, left oblique, right horizontal.
    """

    habitus: Habitus
    x_mid_mm: float
    y_sternum_mm: float
    y_spine_front_mm: float
    z_apex_mm: float
    z_taper_mm: float
    apex_semi_mm: tuple[float, float]
    apex_center_y_mm: float
    dome_z_mm: tuple[float, float]
    dome_x_mm: tuple[float, float]
    dome_y_mm: float
    dome_halfwidth_mm: float
    recess_mm: float
    rib_z0_mm: float
    rib_spacing_mm: float
    rib_drop_mm: float
    rib_half_height_mm: float
    spine_x_mm: float
    spine_y_mm: float
    spine_r_mm: tuple[float, float]
    canal_r_mm: float
    disc_period_mm: float
    disc_phase_mm: float
    disc_mm: float
    table_y_mm: float
    lung_hu_anterior: float
    lung_gradient_hu: float
    layers: tuple[Layer, ...]
    artery_roots: tuple[tuple[float, float, float], ...]
    vein_roots: tuple[tuple[float, float, float], ...]
    fissures: tuple[Fissure, ...]

    def lobe(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lobe name ("RUL", "RML", "RLL", "LUL", "LLL") of points assumed to be in a lung."""
        right = x < self.x_mid_mm
        oblique = np.where(right, self.fissures[0].height(x, y), self.fissures[1].height(x, y))
        upper = z > oblique
        middle = right & upper & (z < self.fissures[2].height(x, y))
        names = np.where(right, np.where(upper, "RUL", "RLL"), np.where(upper, "LUL", "LLL"))
        return np.where(middle, "RML", names)

    @cached_property
    def lung_box(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(low, high) corners of a box holding both lungs, for sampling points inside them."""
        theta = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        r = self.habitus.inner_radius(theta)
        x, y = r * np.cos(theta), r * np.sin(theta)
        # The domes fall by ~30 mm laterally and by `recess_mm` at the back (see dome_z).
        z_lo = min(self.dome_z_mm) - self.recess_mm - 35.0
        return (
            (float(x.min()) - 1.0, float(y.min()) - 1.0, z_lo),
            (float(x.max()) + 1.0, float(y.max()) + 1.0, self.z_apex_mm),
        )

    def dome_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm under each (x, y): lung lies above it."""
        right = x < self.x_mid_mm
        top = np.where(right, self.dome_z_mm[0], self.dome_z_mm[1])
        cx = np.where(right, self.dome_x_mm[0], self.dome_x_mm[1])
        lateral = ((x - cx) / self.dome_halfwidth_mm) ** 2
        back_span = self.y_spine_front_mm + 40.0 - self.dome_y_mm
        back = np.clip((y - self.dome_y_mm) / back_span, 0, 1)
        front = np.clip((self.dome_y_mm - y) / (self.dome_y_mm - self.y_sternum_mm), 0, 1)
        return np.asarray(top - 30.0 * lateral - self.recess_mm * back**2 - 20.0 * front**2)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_habitus(rng: np.random.Generator) -> Habitus:
    """Draw a body outline and chest wall (width 300-370 mm, fat 5-28 mm, ...)."""
    a = _u(rng, 150, 185)
    b_ant = a * _u(rng, 0.66, 0.78)
    harmonics = tuple(
        (k, float(rng.normal(0, 0.012)), 0.0 if k % 2 == 0 else np.pi / 2) for k in (2, 3, 4, 6)
    )
    return Habitus(
        body_a_mm=a,
        body_b_ant_mm=b_ant,
        body_b_post_mm=b_ant * _u(rng, 0.88, 0.97),
        body_p_ant=_u(rng, 2.0, 2.4),
        body_p_post=_u(rng, 2.5, 3.2),
        body_harmonics=harmonics,
        skin_mm=_u(rng, 1.8, 2.5),
        fat_mm=_u(rng, 5, 28),
        fat_lateral=_u(rng, 0.2, 0.8),
        muscle_mm=_u(rng, 6, 11),
        para_muscle_mm=_u(rng, 30, 42),
        pect_muscle_mm=_u(rng, 6, 16),
        rib_layer_mm=_u(rng, 9, 12),
    )


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's chest.

    Args:
        rng: the patient's generator; the same state gives the same anatomy.

    Returns:
        An `Anatomy` varied as adult chests are: body habitus, lung height (apex 110-140 mm
        above the carina, domes 135-185 mm below), heart, aorta, airway and vertebra sizes.
    """
    hab = sample_habitus(rng)
    x_m = _u(rng, -6, 6)
    r_front = hab.inner_radius_at(-np.pi / 2)
    r_back = hab.inner_radius_at(np.pi / 2)
    r_side = 0.5 * (hab.inner_radius_at(0.0) + hab.inner_radius_at(np.pi))
    r_vb = _u(rng, 16, 21)
    spine_r = (r_vb, 0.85 * r_vb)
    spine_y = r_back + 0.3 * spine_r[1]
    y_s, y_v = -r_front, spine_y - spine_r[1]
    depth = y_v - y_s

    def f(frac: float) -> float:
        return y_s + frac * depth

    z_apex = _u(rng, 110, 140)
    dome_r = _u(rng, -165, -135)
    dome_l = dome_r - _u(rng, 8, 22)
    z_arch = _u(rng, 25, 35)
    heart_top, heart_bottom = _u(rng, -28, -18), dome_l + _u(rng, 5, 15)
    canal_r = _u(rng, 7, 9)
    layers = _mediastinum_layers(
        rng, x_m, f, depth, z_apex, z_arch, heart_top, heart_bottom, dome_l
    )
    walls = _wall_layers(rng, hab, x_m, y_s, spine_y, spine_r, canal_r, z_arch)
    fissures = []
    for side, dome, sign in ((LUNG_R, dome_r, -1.0), (LUNG_L, dome_l, 1.0)):
        # Oblique fissures run from high at the back to the diaphragm at the front; the sheet
        # bows forward laterally, so in an axial slice it runs from the back of the hilum
        # out and forward toward the lateral chest wall.
        y_back, z_back = spine_y + 20.0, _u(rng, 40, 70)
        y_front, z_front = f(0.25), dome + _u(rng, 5, 25)
        slope = (z_back - z_front) / (y_back - y_front)
        curvature = -_u(rng, 0.002, 0.005)
        fissures.append(Fissure(side, x_m + sign * 30, y_back, z_back, slope, curvature))
    fissures.append(Fissure(LUNG_R, x_m - 55, f(0.4), _u(rng, -40, -20), 0.0, -0.002, 0))
    return Anatomy(
        habitus=hab,
        x_mid_mm=x_m,
        y_sternum_mm=y_s,
        y_spine_front_mm=y_v,
        z_apex_mm=z_apex,
        z_taper_mm=_u(rng, 40, 60),
        apex_semi_mm=(0.45 * (r_side - abs(x_m)), 0.5 * depth + 12),
        apex_center_y_mm=f(0.62),
        dome_z_mm=(dome_r, dome_l),
        dome_x_mm=(x_m - 0.45 * r_side, x_m + 0.45 * r_side),
        dome_y_mm=f(0.4),
        dome_halfwidth_mm=0.6 * r_side,
        recess_mm=_u(rng, 45, 70),
        rib_z0_mm=z_apex + _u(rng, 0, 12),
        rib_spacing_mm=_u(rng, 22, 27),
        rib_drop_mm=_u(rng, 90, 130),
        rib_half_height_mm=_u(rng, 4.5, 5.5),
        spine_x_mm=0.3 * x_m,
        spine_y_mm=spine_y,
        spine_r_mm=spine_r,
        canal_r_mm=canal_r,
        disc_period_mm=_u(rng, 24, 28),
        disc_phase_mm=_u(rng, 0, 28),
        disc_mm=_u(rng, 5, 7),
        table_y_mm=hab.body_b_post_mm + _u(rng, 2, 10),
        lung_hu_anterior=_u(rng, -925, -895),
        lung_gradient_hu=_u(rng, 40, 95),
        layers=layers + walls,
        artery_roots=((x_m - 58, f(0.62), -22.0), (x_m + 58, f(0.62), -14.0)),
        vein_roots=((x_m - 48, f(0.58), -52.0), (x_m + 48, f(0.58), -50.0)),
        fissures=tuple(fissures),
    )


def _mediastinum_layers(
    rng: np.random.Generator,
    x_m: float,
    f: Callable[[float], float],
    depth: float,
    z_apex: float,
    z_arch: float,
    heart_top: float,
    heart_bottom: float,
    dome_l: float,
) -> tuple[Layer, ...]:
    """Heart, great vessels, airways, oesophagus and the fat around them, in paint order."""
    u = lambda lo, hi: _u(rng, lo, hi)  # noqa: E731
    width = u(0.9, 1.2)
    strip = ZTube(
        (dome_l - 20, -40.0, 20.0, 60.0, z_apex + 40),
        (x_m + 6, x_m + 8, x_m + 2, x_m, x_m),
        (f(0.5),) * 5,
        tuple(w * width for w in (24.0, 26.0, 22.0, 20.0, 18.0)),
        (depth / 2 + 4,) * 5,
    )
    hz = (heart_top - heart_bottom) / 2
    h_long, h_short = u(48, 60), min(u(36, 44), 0.42 * depth)
    heart_c = (x_m + u(18, 28), f(0.46), (heart_top + heart_bottom) / 2)
    rot = rotation_z(-u(0.45, 0.75))
    peri = u(3, 9)
    heart_fat = Ellipsoid(heart_c, (h_long + peri, h_short + peri, hz + peri), rot)
    heart = Ellipsoid(heart_c, (h_long, h_short, hz), rot)
    r_aa, r_arch, r_da, r_pt = u(13, 17), u(11, 14), u(10, 13), u(12, 15)
    a0 = (x_m - 12, f(0.36), z_arch)
    a1 = (x_m - 2, f(0.47), z_arch + u(9, 14))
    a2 = (x_m + 14, f(0.72), z_arch + u(9, 14))
    a3 = (x_m + 22, f(0.93), z_arch)
    aorta = [
        Capsule((x_m - 10, f(0.42), heart_top - 15), a0, r_aa, r_aa),
        Capsule(a0, a1, r_aa, r_arch),
        Capsule(a1, a2, r_arch, r_arch),
        Capsule(a2, a3, r_arch, r_da),
        Capsule(a3, (x_m + 22, f(0.95), -100.0), r_da, r_da),
        Capsule((x_m + 22, f(0.95), -100.0), (x_m + 10, f(1.0), dome_l - 30), r_da, r_da * 0.95),
    ]
    branches = [
        Capsule(a1, (x_m - 12, f(0.5), z_arch + 80), 6.5, 5.5),
        Capsule((x_m + 5, f(0.55), a1[2]), (x_m + 6, f(0.55), z_arch + 90), 4.5, 4.5),
        Capsule((x_m + 13, f(0.68), a2[2]), (x_m + 32, f(0.68), z_arch + 70), 5.0, 5.0),
    ]
    r_svc = u(9, 11)
    veins = [
        Capsule((x_m - 30, f(0.4), heart_top - 8), (x_m - 30, f(0.33), z_arch + 18), r_svc, r_svc),
        Capsule((x_m - 30, f(0.33), z_arch + 18), (x_m - 38, f(0.36), z_arch + 90), r_svc, 8.0),
        Capsule((x_m - 28, f(0.28), z_arch + 22), (x_m + 42, f(0.26), z_arch + 32), 6.0, 6.0),
        Capsule((x_m - 12, f(1.0), dome_l), (x_m - 12, f(1.0), 8.0), 4.0, 4.0),
        Capsule((x_m - 12, f(1.0), 8.0), (x_m - 28, f(0.45), 12.0), 4.0, 5.0),
    ]
    pt_top = (x_m + 16, f(0.47), -8.0)
    arteries = [
        Capsule((x_m + 10, f(0.3), heart_top - 12), pt_top, r_pt, r_pt),
        Capsule(pt_top, (x_m + 58, f(0.62), -14.0), r_pt * 0.8, 8.5),
        Capsule((x_m + 8, f(0.47), -12.0), (x_m - 58, f(0.62), -22.0), r_pt * 0.8, 8.5),
    ]
    pulm_veins = [
        Capsule((x_m - 48, f(0.58), -52.0), (x_m - 5, f(0.66), -58.0), 6.5, 7.5),
        Capsule((x_m + 48, f(0.58), -50.0), (x_m + 18, f(0.66), -56.0), 6.5, 7.5),
    ]
    r_t = u(8, 11)
    y_t = f(0.72)
    trachea = Capsule((x_m, y_t, 0.0), (x_m - 2, f(0.65), z_apex + 60), r_t + 2, r_t + 2)
    trachea_lumen = Capsule((x_m, y_t, 0.0), (x_m - 2, f(0.65), z_apex + 60), r_t, r_t)
    bronchi = [
        ((x_m - 3, y_t, 0.0), (x_m - 45, f(0.74), -22.0), 7.5),
        ((x_m - 45, f(0.74), -22.0), (x_m - 52, f(0.7), -48.0), 6.0),
        ((x_m + 3, y_t, 0.0), (x_m + 48, f(0.76), -38.0), 6.5),
        ((x_m + 48, f(0.76), -38.0), (x_m + 60, f(0.74), -58.0), 5.0),
    ]
    oes_air = rng.random() < 0.4
    oesophagus = ZTube(
        (dome_l - 30, -60.0, 0.0, z_apex + 60),
        (x_m + 14, x_m + 9, x_m + 6, x_m + 3),
        (f(0.9), f(0.94), f(0.93), f(0.9)),
        (u(8, 11),) * 4,
        (u(5, 7),) * 4,
    )
    oes_lumen = ZTube(
        oesophagus.z_knots, oesophagus.cx_knots, oesophagus.cy_knots, (2.5,) * 4, (1.5,) * 4
    )

    halo = u(3, 6)
    vessels = aorta + branches + veins + arteries + pulm_veins
    layers: list[Layer] = [Layer(MED_FAT, strip, _THORAX), Layer(MED_FAT, heart_fat, _THORAX)]
    layers += [Layer(MED_FAT, _grown(c, halo), _THORAX) for c in aorta + branches + veins[:3]]
    layers.append(Layer(HEART, heart, (*_THORAX, ABDOMEN_L, ABDOMEN_R)))
    layers += [Layer(VESSEL, c, (*_THORAX, MUSCLE, ABDOMEN_R, ABDOMEN_L)) for c in vessels]
    layers.append(Layer(AIRWAY_WALL, trachea, (*_THORAX, MUSCLE, VESSEL)))
    layers.append(Layer(AIRWAY, trachea_lumen))
    layers += [Layer(AIRWAY_WALL, Capsule(p, q, r + 1.5, r + 1.5), _THORAX) for p, q, r in bronchi]
    layers += [Layer(AIRWAY, Capsule(p, q, r, r), (AIRWAY_WALL,)) for p, q, r in bronchi]
    layers.append(Layer(OESOPHAGUS, oesophagus, (*_THORAX, MUSCLE, ABDOMEN_L)))
    if oes_air:
        layers.append(Layer(GAS, oes_lumen, (OESOPHAGUS,)))
    layers += _normal_nodes(rng, x_m, f)
    if rng.random() < 0.5:
        # Gas in the stomach fundus under the left dome.
        bubble = Ellipsoid((x_m + 55, f(0.35), dome_l - 28), (u(15, 30), u(12, 22), u(8, 16)))
        layers.append(Layer(GAS, bubble, (ABDOMEN_L,)))
    return tuple(layers)


def _grown(c: Capsule, by_mm: float) -> Capsule:
    return Capsule(c.p0, c.p1, c.r0_mm + by_mm, c.r1_mm + by_mm)


def _normal_nodes(rng: np.random.Generator, x_m: float, f: Callable[[float], float]) -> list[Layer]:
    """Small (< 10 mm short axis) mediastinal and hilar nodes every chest has."""
    stations = [
        (x_m - 16, f(0.66), (5.0, 40.0)),  # right paratracheal
        (x_m + 14, f(0.66), (5.0, 35.0)),  # left paratracheal
        (x_m, f(0.82), (-28.0, -8.0)),  # subcarinal
        (x_m + 20, f(0.58), (12.0, 24.0)),  # aortopulmonary window
        (x_m - 22, f(0.55), (-20.0, 10.0)),  # precarinal / right hilar side
    ]
    layers = []
    for x, y, (z0, z1) in stations:
        if rng.random() < 0.3:
            continue
        short = float(rng.uniform(3.0, 8.0))
        semi = (short / 2, short / 2 * float(rng.uniform(1.0, 1.6)), short / 2 * 1.3)
        center = (x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3)), _u(rng, z0, z1))
        layers.append(
            Layer(NODE, Ellipsoid(center, semi, rotation_z(_u(rng, 0, np.pi))), (MED_FAT,))
        )
    return layers


def _wall_layers(
    rng: np.random.Generator,
    hab: Habitus,
    x_m: float,
    y_s: float,
    spine_y: float,
    spine_r: tuple[float, float],
    canal_r: float,
    z_arch: float,
) -> tuple[Layer, ...]:
    """Sternum, posterior vertebral arch and processes, scapulae with their muscles."""
    sx = 0.3 * x_m
    sternum_y = y_s - hab.rib_layer_mm * 0.6
    wall = (MUSCLE, FAT, RIB_CORTEX, RIB_MARROW)
    z_knots = (-120.0, 20.0, z_arch + 40)
    sternum = ZTube(z_knots, (sx,) * 3, (sternum_y,) * 3, (13.0, 14.0, 24.0), (6.0, 6.0, 8.0), 8.0)
    marrow = ZTube(z_knots, (sx,) * 3, (sternum_y,) * 3, (10.5, 11.5, 21.0), (3.5, 3.5, 5.5), 6.0)
    layers = [Layer(RIB_CORTEX, sternum, wall), Layer(RIB_MARROW, marrow, (RIB_CORTEX,))]
    # Vertebral arch (laminae and spinous process) and transverse processes: bone at every
    # level, since in the thorax consecutive vertebrae overlap in an axial slice.
    canal_y = spine_y + spine_r[1] + canal_r + 1.5
    z_all = (-400.0, 400.0)
    arch = [
        (sx - canal_r - 1.5, canal_y + 1.0, 4.0, 4.5),
        (sx + canal_r + 1.5, canal_y + 1.0, 4.0, 4.5),
        (sx, canal_y + canal_r + 4.0, 4.0, 4.5),
        (sx, canal_y + canal_r + 16.0, 3.0, 11.0),
        (sx - canal_r - 14.0, canal_y + 2.0, 13.0, 3.8),
        (sx + canal_r + 14.0, canal_y + 2.0, 13.0, 3.8),
    ]
    for cx, cy, ax, ay in arch:
        tube = ZTube(z_all, (cx, cx), (cy, cy), (ax, ax), (ay, ay))
        layers.append(Layer(SPINE_CORTEX, tube, (*wall, *_THORAX)))
    for side in (-1.0, 1.0):
        theta = np.pi / 2 - side * _u(rng, 0.75, 0.95)
        radius = hab.inner_radius_at(theta) + hab.rib_layer_mm + 9
        center = (radius * np.cos(theta), radius * np.sin(theta), z_arch + _u(rng, -20, 5))
        rot = rotation_z(theta + np.pi / 2)
        layers.append(Layer(MUSCLE, Ellipsoid(center, (60.0, 13.0, 80.0), rot), (FAT,)))
        scapula = Ellipsoid(center, (_u(rng, 42, 55), 2.5, _u(rng, 60, 75)), rot)
        layers.append(Layer(RIB_CORTEX, scapula, (MUSCLE, FAT)))
    return tuple(layers)
