"""Where findings go in a patient: the primary lesion, enlarged nodes, pleural effusion.

Placement reads the anatomy through `label_points`, so a lesion asked to stay inside the lung
does, one asked to invade the chest wall or the mediastinum crosses exactly that boundary, and
enlarged nodes sit at the hilum or in the mediastinal fat of the lesion's own axial level (a 2D
slice through the lesion then shows everything that sets the stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcancer.synth import anatomy as an
from lungcancer.synth.anatomy import Anatomy
from lungcancer.synth.lesion import LesionShape, fibonacci_sphere
from lungcancer.synth.paint import Polar, label_points, label_slice, sample_lung_points
from lungcancer.synth.shapes import Ellipsoid, rotation_z

_WALL = np.array(an.CHEST_WALL_LABELS)
_DEEP = np.array(an.MEDIASTINUM_LABELS + an.SPINE_LABELS + an.DIAPHRAGM_LABELS)
_CANDIDATES = 200
_FINE_CANDIDATES = 12
_MIN_CANDIDATES = 30
_SURFACE_DIRS = fibonacci_sphere(120)
_COARSE_DIRS = slice(None, None, 6)
_PAINT_OVER = (an.LUNG_R, an.LUNG_L, an.MED_FAT, an.VESSEL, an.OESOPHAGUS, an.ATELECTASIS)


def lesion_levels_mm(anat: Anatomy) -> tuple[float, float]:
    """Heights where a lesion's axial slice also holds mediastinum and hila (domes to taper)."""
    return (max(anat.dome_z_mm) + 15.0, anat.z_taper_mm + 10.0)


def place_lesion(
    anat: Anatomy,
    shape: LesionShape,
    invasion: str,
    rng: np.random.Generator,
    side: int | None = None,
    z_range_mm: tuple[float, float] | None = None,
    cloud: dict[int, np.ndarray] | None = None,
) -> tuple[tuple[float, float, float], int]:
    """Choose a lesion centre that gives the wanted relation to the lung boundary.

    Args:
        anat: the patient.
        shape: the lesion at its (baseline) size; its centre is ignored.
        invasion: "none" (the lesion and a 3 mm margin stay in one lung), "chest_wall" or
            "mediastinum" (12-40% of its surface lies beyond the pleura in that structure only).
        rng: the patient's generator.
        side: LUNG_R or LUNG_L, or None for either.
        z_range_mm: heights allowed for the centre (default `lesion_levels_mm`).
        cloud: points already sampled inside each lung (`sample_lung_points`); candidates are
            taken from it when it has enough in the height range, else sampled afresh.

    Returns:
        The centre (x, y, z) in mm and the lung label it lies in. When no candidate meets the
        request exactly the closest one is returned; the label is measured on what is drawn,
        so it stays truthful either way.
    """
    z_range = z_range_mm or lesion_levels_mm(anat)
    sides = [side] if side is not None else [an.LUNG_R, an.LUNG_L]
    per_side = _CANDIDATES // len(sides)
    lungs = {}
    if cloud is not None:
        lungs = {
            s: pts[(pts[:, 2] >= z_range[0]) & (pts[:, 2] <= z_range[1])][:per_side]
            for s, pts in cloud.items()
        }
    if not lungs or min(len(lungs[s]) for s in sides) < _MIN_CANDIDATES:
        lungs = sample_lung_points(anat, per_side, rng, z_range)
    cands = np.concatenate([lungs[s] for s in sides])
    cand_side = np.concatenate([np.full(len(lungs[s]), s) for s in sides])
    surface = shape.moved((0.0, 0.0, 0.0)).surface_points(_SURFACE_DIRS)
    if invasion == "none":
        norm = np.linalg.norm(surface, axis=1, keepdims=True)
        surface = surface * (1.0 + 3.0 / np.maximum(norm, 1e-6))
    # Two passes: a coarse look from every candidate, a fine one from the best few.
    coarse = _placement_cost(anat, cands, cand_side, surface[_COARSE_DIRS], invasion)
    best = np.argsort(coarse, kind="stable")[:_FINE_CANDIDATES]
    fine = _placement_cost(anat, cands[best], cand_side[best], surface, invasion)
    ties = best[np.flatnonzero(fine <= fine.min() + 1e-9)]
    pick = int(rng.choice(ties))
    c = cands[pick]
    return (float(c[0]), float(c[1]), float(c[2])), int(cand_side[pick])


def _placement_cost(
    anat: Anatomy, cands: np.ndarray, cand_side: np.ndarray, surface: np.ndarray, invasion: str
) -> np.ndarray:
    """How far each candidate centre is from the wanted relation (0 = exactly right)."""
    pts = cands[:, None, :] + surface[None, :, :]
    labels = label_points(anat, pts[..., 0].ravel(), pts[..., 1].ravel(), pts[..., 2].ravel())
    labels = labels.reshape(len(cands), len(surface))
    same_lung = (labels == cand_side[:, None]).mean(axis=1)
    wall = np.isin(labels, _WALL).mean(axis=1)
    deep = np.isin(labels, _DEEP).mean(axis=1)
    if invasion == "none":
        return np.asarray(1.0 - same_lung)
    if invasion == "chest_wall":
        return np.asarray(np.abs(wall - 0.25) + 3.0 * deep + (1.0 - same_lung - wall))
    return np.asarray(np.abs(deep - 0.25) + 3.0 * wall + (1.0 - same_lung - deep))


@dataclass(frozen=True)
class NodeSite:
    """An enlarged lymph node (short axis > 10 mm) at one N level.

    Attributes:
        level: "N1" (ipsilateral hilar), "N2" (ipsilateral mediastinal/subcarinal) or "N3"
            (contralateral hilar or mediastinal).
        shape: the node as an ellipsoid in patient space.
        short_axis_mm: its smallest in-plane diameter.
    """

    level: str
    shape: Ellipsoid
    short_axis_mm: float


def place_nodes(
    anat: Anatomy, center_mm: tuple[float, float, float], side: int, rng: np.random.Generator
) -> dict[str, tuple[NodeSite, ...]]:
    """Enlarged nodes per N level (N1: one or two, N2 and N3: two where there is room), in
    the axial slice through the lesion centre.

    Args:
        anat: the patient.
        center_mm: the primary lesion's centre.
        side: the lesion's lung (LUNG_R or LUNG_L); N1/N2 are on this side, N3 opposite.
        rng: the patient's generator.

    Returns:
        {"N1": ..., "N2": ..., "N3": ...}; which of them show depends on the N in force.
    """
    z = center_mm[2]
    step = 2.0
    xs = np.arange(anat.x_mid_mm - 150.0, anat.x_mid_mm + 150.0, step)
    ys = np.arange(anat.y_sternum_mm - 10.0, anat.spine_y_mm + 20.0, step)
    labels = label_slice(anat, xs, ys, z)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    mediastinal = np.isin(labels, (an.MED_FAT, an.VESSEL, an.HEART, an.AIRWAY_WALL))
    near_mediastinum = ndimage.distance_transform_edt(~mediastinal) * step
    fat_room = ndimage.distance_transform_edt(labels == an.MED_FAT) * step
    depth = anat.y_spine_front_mm - anat.y_sternum_mm
    central = (yy > anat.y_sternum_mm + 0.3 * depth) & (yy < anat.y_spine_front_mm + 10.0)
    other = an.LUNG_L if side == an.LUNG_R else an.LUNG_R
    sign = -1.0 if side == an.LUNG_R else 1.0

    def hilar(lung: int) -> np.ndarray:
        return (labels == lung) & (near_mediastinum > 0) & (near_mediastinum <= 6.0) & central

    def mediastinal_fat(s: float) -> np.ndarray:
        return (fat_room >= 2.0) & ((xx - anat.x_mid_mm) * s >= -4.0)

    wanted = {
        "N1": [hilar(side)],
        "N2": [mediastinal_fat(sign)],
        "N3": [hilar(other), mediastinal_fat(-sign)] if rng.random() < 0.5 else
              [mediastinal_fat(-sign), hilar(other)],
    }  # fmt: skip
    fallback = (fat_room >= 1.0) | hilar(side) | hilar(other)
    sites: dict[str, tuple[NodeSite, ...]] = {}
    for level, options in wanted.items():
        region = next((o for o in options if o.any()), fallback)
        if not region.any():
            region = labels == side
        rows, cols = np.nonzero(region)
        picks = [int(rng.integers(len(rows)))]
        # Involved stations often hold more than one enlarged node; mediastinal and
        # contralateral disease (N2, N3) usually shows as several.
        if level != "N1" or rng.random() < 0.5:
            far = np.hypot(xs[cols] - xs[cols[picks[0]]], ys[rows] - ys[rows[picks[0]]]) > 18.0
            if far.any():
                picks.append(int(rng.choice(np.flatnonzero(far))))
        nodes = []
        for k in picks:
            short = float(rng.uniform(14.0, 22.0 if level == "N1" else 27.0))
            semi = (short / 2 * float(rng.uniform(1.0, 1.5)), short / 2, short / 2 * 1.3)
            cz = z + float(rng.uniform(-2.0, 2.0))
            shape = Ellipsoid((float(xs[cols[k]]), float(ys[rows[k]]), cz), semi,
                              rotation_z(float(rng.uniform(0, np.pi))))  # fmt: skip
            nodes.append(NodeSite(level, shape, short))
        sites[level] = tuple(nodes)
    return sites


@dataclass(frozen=True)
class Effusion:
    """A layering pleural effusion (fluid in the dependent, posterior pleural space).

    Attributes:
        side: LUNG_R or LUNG_L.
        thickness_mm: greatest depth of fluid at the back.
        z_top_mm: the fluid thins out above this height.
    """

    side: int
    thickness_mm: float
    z_top_mm: float


def sample_effusion(lesion_z_mm: float, side: int, rng: np.random.Generator) -> Effusion:
    """An effusion deep enough to be seen on the lesion's axial slice."""
    return Effusion(
        side=side,
        thickness_mm=float(rng.uniform(20.0, 50.0)),
        z_top_mm=lesion_z_mm + float(rng.uniform(40.0, 90.0)),
    )


def paint_findings(
    labels: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: float,
    polar: Polar,
    nodes: tuple[NodeSite, ...],
    effusion: Effusion | None,
) -> None:
    """Paint enlarged nodes and pleural fluid into a slice's labels, in place.

    Args:
        labels: the slice's labels from `label_slice`.
        x: column x (1, W) and y: row y (H, 1), mm (the slice's patient coordinates).
        z: height of the slice.
        polar: the slice's `polar_fields`.
        nodes: enlarged nodes in force.
        effusion: the effusion in force, if any.
    """
    if effusion is not None:
        # Fluid layers at the back: full depth posteriorly, thinning up the lateral wall.
        back = np.clip((polar.sin_theta + 0.3) / 1.3, 0.0, 1.0) ** 1.5
        height = np.clip((effusion.z_top_mm - z) / 40.0, 0.0, 1.0) ** 0.5
        depth = effusion.thickness_mm * back * height
        gap = polar.r_inner - polar.rho
        lung = labels == effusion.side
        fluid = lung & (gap < depth)
        labels[lung & ~fluid & (gap < depth + 5.0) & (depth > 3.0)] = an.ATELECTASIS
        labels[fluid] = an.EFFUSION
    for node in nodes:
        hit = node.shape.inside(x, y, z) & np.isin(labels, _PAINT_OVER)
        labels[hit] = an.NODE
