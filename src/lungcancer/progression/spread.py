"""Nodal and pleural spread drawn outside the lesion patch: enlarged nodes (N1-N3) and M1a.

The GAN renders the primary tumour on a lesion-centred patch, so on its own it cannot show a
stage change that comes from nodes or metastases. Most stage changes do: of the 21 held-out
LungSim pairs at 12 months, 8 of the 9 that change stage do so through N or M. This module
draws those findings on the full slice, procedurally, where a radiologist would look for them:

- N1: an enlarged hilar node, at the medial border of the tumour's own lung;
- N2: enlarged nodes in the mediastinal fat on the tumour's side;
- N3: enlarged nodes at the other hilum or in the mediastinal fat across the midline;
- M1a: a layering pleural effusion at the back of the tumour's lung (fluid with a band of
  compressed lung above it), or a nodule in the other lung, or both.

Nodes are 14-27 mm in short axis (involved on CT above about 10 mm), soft tissue at
`NODE_HU`; fluid is `EFFUSION_HU`. Where things go is read from the image itself (lungs below
-400 HU inside the body, the mediastinum between them, fat at -150..-30 HU), so the same code
runs on LungSim and on a real axial CT slice; it needs both lungs in the slice and says so
when they are not found. A `SpreadPlan` is drawn once per simulation, so a node that appears
at month 12 is the same node at month 24; frames then draw the levels in force.

Drawing keeps the scan's own noise: a painted pixel becomes `pixel + w * (value - local level)`
(the local level is a 3x3 median, which keeps edges) with a soft weight `w`, so the grain of the
slice runs through the new finding and its edges carry a one-pixel partial-volume blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcancer.data.transforms import lung_fields
from lungcancer.progression.timeline import SimulationError
from lungcancer.staging import M_DESCRIPTORS, N_DESCRIPTORS

# Soft-tissue HU of an enlarged node, simple pleural fluid, compressed (atelectatic) lung and a
# solid nodule: the radiological textbook values LungSim draws with as well.
NODE_HU = 38.0
EFFUSION_HU = 12.0
ATELECTASIS_HU = -350.0
NODULE_HU = 35.0
M1A_KINDS = ("effusion", "nodule", "both")

_BONE_ABOVE_HU = 200.0
_FAT_HU = (-150.0, -30.0)
_HILAR_MAX_MM = 6.0
_NODE_SEPARATION_MM = 18.0


@dataclass(frozen=True)
class Node:
    """One enlarged node: centre (y, x) in pixels, semi-axes (mm) and in-plane rotation."""

    level: str
    center_yx: tuple[float, float]
    semi_axes_mm: tuple[float, float]
    angle_rad: float


@dataclass(frozen=True)
class SpreadPlan:
    """Where spread would show on one slice, drawn once and reused for every frame.

    Attributes:
        shape: the slice's (rows, columns).
        spacing_mm: the slice's (row, column) pixel size.
        nodes: candidate enlarged nodes for N1, N2 and N3.
        effusion_lung: boolean mask of the lung that fills with fluid.
        effusion_depth_mm: per-pixel fluid depth at full effusion (0 away from the back).
        wall_gap_mm: per-pixel depth below the chest wall inside that lung, along the radius (inf
            outside it).
        nodule: the contralateral M1a nodule.
    """

    shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    nodes: tuple[Node, ...]
    effusion_lung: np.ndarray
    effusion_depth_mm: np.ndarray
    wall_gap_mm: np.ndarray
    nodule: Node


def _lungs(image_hu: np.ndarray) -> list[np.ndarray]:
    """The two largest lung fields (`data.transforms.lung_fields`), holes filled (a tumour
    inside a lung is part of it), ordered by column."""
    lungs = [ndimage.binary_fill_holes(m) for m in lung_fields(image_hu, "HU")[:2]]
    return sorted(lungs, key=lambda m: float(np.nonzero(m)[1].mean()))


def _pick(candidates: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """A random pixel (row, column) of a mask, or None when it is empty."""
    rows, cols = np.nonzero(candidates)
    if rows.size == 0:
        return None
    k = int(rng.integers(rows.size))
    return float(rows[k]), float(cols[k])


def plan_spread(
    image_hu: np.ndarray,
    spacing_mm: tuple[float, float],
    lesion_center_yx: tuple[float, float],
    seed: int = 0,
) -> SpreadPlan:
    """Choose where nodes, fluid and a contralateral nodule would show on this slice.

    Args:
        image_hu: the axial slice (rows, columns) in HU.
        spacing_mm: its (row, column) pixel size.
        lesion_center_yx: the primary tumour's centre in pixels; its lung is the ipsilateral one.
        seed: the random draw of sites and sizes (the same seed gives the same plan).

    Returns:
        The plan, for `draw_spread`.

    Raises:
        SimulationError: the slice is not 2D HU, or two lung fields are not found in it.
    """
    image = np.asarray(image_hu, np.float32)
    if image.ndim != 2:
        raise SimulationError(
            "nodal and pleural spread is drawn on one axial slice",
            expected="a 2D slice (the GAN's 2D mode)",
            found=f"an array of shape {image.shape}",
            hint="simulate with a 2D GAN, or leave out --spread",
        )
    lungs = _lungs(image)
    if len(lungs) < 2:
        raise SimulationError(
            "cannot draw nodal or pleural spread: two lung fields were not found in the slice",
            expected="an axial chest CT slice in HU through both lungs (pixels below -400 HU "
            "inside the body)",
            found=f"{len(lungs)} lung field(s)",
            hint="use a slice through both lungs, check the image is in HU, or leave out --spread",
        )
    rng = np.random.default_rng(seed)
    dy, dx = (float(s) for s in spacing_mm)
    pixel_mm = (dy * dx) ** 0.5
    cy, cx = (round(c) for c in lesion_center_yx)
    cy = min(max(cy, 0), image.shape[0] - 1)
    cx = min(max(cx, 0), image.shape[1] - 1)
    # The tumour's lung: the lung field nearest its centre (a big tumour replaces the lung
    # pixels at its own centre).
    dist = [ndimage.distance_transform_edt(~m, sampling=(dy, dx))[cy, cx] for m in lungs]
    side = int(np.argmin(dist))
    ipsi, contra = lungs[side], lungs[1 - side]
    both = ipsi | contra
    bone = ndimage.binary_dilation(image > _BONE_ABOVE_HU, iterations=max(1, round(5 / pixel_mm)))
    hull_rows = np.nonzero(both.any(axis=1))[0]
    top, bottom = hull_rows[0], hull_rows[-1]
    height = bottom - top
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    central = (yy > top + 0.3 * height) & (yy < top + 0.85 * height)
    # The mediastinum: between the two lungs, row by row, minus bone and its surroundings.
    width = image.shape[1]
    left_end = np.where(lungs[0].any(axis=1), width - np.argmax(lungs[0][:, ::-1], axis=1), -1)
    right_start = np.where(lungs[1].any(axis=1), np.argmax(lungs[1], axis=1), -1)
    rows_with_both = (left_end >= 0) & (right_start >= 0)
    between = (xx >= left_end[:, None]) & (xx < right_start[:, None]) & rows_with_both[:, None]
    mediastinum = between & ~both & ~bone & (image < _BONE_ABOVE_HU)
    smooth = ndimage.median_filter(image, size=max(3, round(4 / pixel_mm) | 1))
    fat = mediastinum & (smooth >= _FAT_HU[0]) & (smooth <= _FAT_HU[1])
    fat_room_mm = ndimage.distance_transform_edt(fat, sampling=(dy, dx))
    near_med_mm = ndimage.distance_transform_edt(~mediastinum, sampling=(dy, dx))
    mid_x = float(np.nonzero(mediastinum)[1].mean()) if mediastinum.any() else image.shape[1] / 2
    ipsi_sign = -1.0 if side == 0 else 1.0

    def hilar(lung: np.ndarray) -> np.ndarray:
        return lung & (near_med_mm <= _HILAR_MAX_MM) & central

    def mediastinal_fat(sign: float) -> np.ndarray:
        room = fat & (fat_room_mm >= 2.0) & ((xx - mid_x) * sign * dx >= -4.0)
        return room if room.any() else mediastinum & ((xx - mid_x) * sign >= 0) & central

    options = {
        "N1": [hilar(ipsi)],
        "N2": [mediastinal_fat(ipsi_sign)],
        "N3": [hilar(contra), mediastinal_fat(-ipsi_sign)]
        if rng.random() < 0.5
        else [mediastinal_fat(-ipsi_sign), hilar(contra)],
    }
    fallback = mediastinum & central
    nodes: list[Node] = []
    for level, regions in options.items():
        region = next((r for r in regions if r.any()), fallback)
        count = 1 if level == "N1" and rng.random() < 0.5 else 2
        placed: list[tuple[float, float]] = []
        for _ in range(count):
            if placed:
                py, px = placed[0]
                region = region & (np.hypot((yy - py) * dy, (xx - px) * dx) > _NODE_SEPARATION_MM)
            site = _pick(region, rng)
            if site is None:
                break
            placed.append(site)
            short = float(rng.uniform(14.0, 22.0 if level == "N1" else 27.0))
            semi = (short / 2 * float(rng.uniform(1.0, 1.5)), short / 2)
            nodes.append(Node(level, site, semi, float(rng.uniform(0.0, np.pi))))
    # Effusion: fluid layers at the back of the tumour's lung (85%) or the other, deepest
    # posteriorly and thinning up the lateral wall.
    effusion_lung = ipsi if rng.random() < 0.85 else contra
    rows, cols = np.nonzero(both)
    y_mm, x_mm = (yy - rows.mean()) * dy, (xx - cols.mean()) * dx
    rho, theta = np.hypot(y_mm, x_mm), np.arctan2(y_mm, x_mm)
    wall_gap_mm = _radial_wall_gap_mm(effusion_lung, rho, theta)
    back = np.clip((np.sin(theta) + 0.3) / 1.3, 0.0, 1.0) ** 1.5
    depth_mm = float(rng.uniform(20.0, 50.0)) * back * effusion_lung
    # The M1a nodule: 8-18 mm, solid, well inside the other lung.
    diameter = float(rng.uniform(8.0, 18.0))
    room = ndimage.distance_transform_edt(contra, sampling=(dy, dx)) >= diameter / 2 + 3.0
    site = _pick(room if room.any() else contra, rng) or (float(cy), float(cx))
    nodule = Node("M1a", site, (diameter / 2, diameter / 2), 0.0)
    return SpreadPlan(
        shape=(int(image.shape[0]), int(image.shape[1])),
        spacing_mm=(dy, dx),
        nodes=tuple(nodes),
        effusion_lung=effusion_lung,
        effusion_depth_mm=depth_mm.astype(np.float32),
        wall_gap_mm=wall_gap_mm.astype(np.float32),
        nodule=nodule,
    )


def _radial_wall_gap_mm(lung: np.ndarray, rho_mm: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Depth of each lung pixel below the chest wall, along the ray from the chest's centre
    (`rho_mm`, `theta`: each pixel's polar coordinates about that centre).

    Fluid layers against the wall, so its depth is measured along the radius, as LungSim draws
    it (`synth.findings.paint_findings`: the inner chest-wall radius at the pixel's angle
    minus its radius). The nearest-wall distance would be shorter wherever the ray meets the
    wall obliquely (the curved back, the paravertebral gutter) and drew effusions about 1.7x
    the area of LungSim's at the same depth. The wall's radius at each angle is the lung's
    outermost pixel there (one-degree bins, a 5-degree running maximum against gaps).
    """
    bins = 360
    index = ((theta + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    wall = np.zeros(bins)
    np.maximum.at(wall, index[lung], rho_mm[lung])
    wall = ndimage.maximum_filter1d(wall, size=5, mode="wrap")
    gap = wall[index] - rho_mm
    return np.where(lung, np.maximum(gap, 0.0), np.inf)


def tumour_guard(
    lesion_mask: np.ndarray,
    center_yx: tuple[float, float],
    scale: float,
    spacing_mm: tuple[float, float],
    margin_mm: float = 3.0,
) -> np.ndarray:
    """Where the tumour is at a frame's size: its mask magnified about its centre by `scale`
    (target / current diameter, as the geometric prior grows it), plus `margin_mm`.

    Spread is drawn everywhere else (the `protect` of `draw_spread`). The lesion ROI the GAN
    owns would be too wide: for a 100 mm tumour it reaches 80 mm out and covers most of the
    lung, where an effusion behind the tumour must still show.
    """
    rows, cols = np.indices(lesion_mask.shape, dtype=np.float64)
    factor = 1.0 / max(scale, 1e-3)
    source_rows = center_yx[0] + (rows - center_yx[0]) * factor
    source_cols = center_yx[1] + (cols - center_yx[1]) * factor
    grown = ndimage.map_coordinates(
        lesion_mask.astype(np.float32), [source_rows, source_cols], order=1, cval=0.0
    )
    outside = ndimage.distance_transform_edt(grown < 0.5, sampling=spacing_mm)
    return np.asarray(outside <= margin_mm)


def _ellipse_weight(plan: SpreadPlan, node: Node) -> np.ndarray:
    """Soft 0..1 coverage of an ellipse, falling off over one pixel at its edge."""
    dy, dx = plan.spacing_mm
    yy, xx = np.mgrid[: plan.shape[0], : plan.shape[1]]
    y_mm = (yy - node.center_yx[0]) * dy
    x_mm = (xx - node.center_yx[1]) * dx
    c, s = np.cos(node.angle_rad), np.sin(node.angle_rad)
    u, v = c * x_mm + s * y_mm, -s * x_mm + c * y_mm
    a, b = node.semi_axes_mm
    # Signed distance to the ellipse boundary, approximated in mm along the radius.
    r = np.hypot(u / a, v / b)
    edge_mm = (1.0 - r) * min(a, b)
    return np.clip(0.5 + edge_mm / max(dy, dx), 0.0, 1.0)


def _soft(mask: np.ndarray) -> np.ndarray:
    """A 0..1 weight of a mask with a partial-volume edge (Gaussian, 0.6 px)."""
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float32), 0.6), 0.0, 1.0)


def _paint(
    image: np.ndarray, level: np.ndarray, weight: np.ndarray, value_hu: float
) -> tuple[np.ndarray, np.ndarray]:
    """Move the local level to `value_hu` under `weight`, keeping the pixel's own grain.

    Returns the image and the new level, so a finding drawn over another (two nodes that
    touch, a nodule in fluid) moves from what is there now, not from the input again.
    """
    step = weight * (value_hu - level)
    return image + step, level + step


def draw_spread(
    image_hu: np.ndarray,
    plan: SpreadPlan,
    *,
    baseline: tuple[str, str],
    target: tuple[str, str],
    m1a_kind: str = "effusion",
    protect: np.ndarray | None = None,
    n_levels: tuple[str, ...] = (),
) -> tuple[np.ndarray, list[str]]:
    """Draw the spread that `target` (N, M) adds to `baseline` (N, M) on one slice.

    Only what is new is drawn: the baseline's own nodes and fluid are in the image already.
    An N above the baseline draws that level's nodes (N2 over N0 draws the N2 nodes only),
    plus those of `n_levels` (the levels a timeline passed through on the way, so N2 nodes
    drawn at month 6 stay when N3 comes at month 12); M0 -> M1a draws `m1a_kind`. N or M at
    or below the baseline draws nothing (the simulator never draws regression of spread).

    Args:
        image_hu: the slice in HU (e.g. the GAN frame pasted into the input).
        plan: `plan_spread` of the input slice.
        baseline: the input's (N, M), e.g. ("N0", "M0").
        target: the frame's (N, M).
        m1a_kind: "effusion", "nodule" or "both".
        protect: pixels never drawn over (the tumour and its ROI), or None.
        n_levels: earlier N levels above the baseline whose nodes stay drawn.

    Returns:
        The new slice and what was drawn (e.g. ["N2 node 21 mm", "M1a effusion"]).
    """
    if m1a_kind not in M1A_KINDS:
        raise SimulationError("unknown M1a finding", expected=", ".join(M1A_KINDS), found=m1a_kind)
    image = np.asarray(image_hu, np.float32)
    if image.shape != plan.shape:
        raise SimulationError(
            "the spread plan was made for another slice",
            expected=f"a slice of shape {plan.shape}",
            found=f"{image.shape}",
        )
    values = (*baseline, *target, *n_levels)
    kinds = (N_DESCRIPTORS, M_DESCRIPTORS) * 2 + (N_DESCRIPTORS,) * len(n_levels)
    for value, known in zip(values, kinds, strict=True):
        if value not in known:
            raise SimulationError(
                "unknown N or M descriptor", expected=", ".join(known), found=repr(value)
            )
    drawn: list[str] = []
    out = image.copy()
    keep = np.ones(plan.shape, bool) if protect is None else ~protect
    # The local level under a painted pixel: a 3x3 median keeps edges, so a pixel next to an
    # air/tissue boundary keeps its own side's level and only its grain moves into the finding.
    local = ndimage.median_filter(image, size=3)
    # The grain kept is clipped at 3 sigma of the slice's noise, so the outline of a vessel
    # under a new node does not show through it.
    grain = image - local
    sigma = 1.4826 * float(np.median(np.abs(grain - np.median(grain))))
    level = image - np.clip(grain, -3 * sigma, 3 * sigma)
    if target[1] == "M1a" and baseline[1] != "M1a":
        if m1a_kind in ("effusion", "both"):
            depth = plan.effusion_depth_mm
            fluid = plan.effusion_lung & (plan.wall_gap_mm < depth) & keep
            band = (
                plan.effusion_lung & ~fluid & (plan.wall_gap_mm < depth + 5.0) & (depth > 3.0)
            ) & keep
            out, level = _paint(out, level, _soft(band) * keep, ATELECTASIS_HU)
            out, level = _paint(out, level, _soft(fluid) * keep, EFFUSION_HU)
            if fluid.any():
                drawn.append(f"M1a effusion {float(depth[fluid].max()):.0f} mm deep")
        if m1a_kind in ("nodule", "both"):
            w = _ellipse_weight(plan, plan.nodule) * keep
            out, level = _paint(out, level, w, NODULE_HU)
            drawn.append(f"M1a nodule {2 * plan.nodule.semi_axes_mm[0]:.0f} mm")
    # The defining level's nodes, and those of the levels passed on the way; other lower
    # stations are left as they are.
    rank = N_DESCRIPTORS.index
    levels = {target[0], *(n for n in n_levels if rank(n) <= rank(target[0]))}
    for node in plan.nodes:
        if node.level not in levels or rank(node.level) <= rank(baseline[0]):
            continue
        # Nodes sit in fat or at the hilum, never over bone or the tumour.
        w = _ellipse_weight(plan, node) * keep * (image < _BONE_ABOVE_HU)
        out, level = _paint(out, level, w, NODE_HU)
        drawn.append(f"{node.level} node {2 * node.semi_axes_mm[1]:.0f} mm")
    return out.astype(np.float32), drawn
