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

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
_BLOOD_HU = 40.0
_FAT_HU = (-150.0, -30.0)
_HILAR_MAX_MM = 6.0
# A pixel outside the lung field but below this is part lung (partial volume at the wall).
_PART_LUNG_BELOW_HU = -250.0
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
        nodule: the contralateral M1a nodule (None on a slice of a volume it does not reach).
        chest_centre_yx: the body's centre (pixels), about which the fluid's depth and angle
            are measured.
        midline_x: the mediastinum's mean column: which side a lung is on.
        effusion_side: -1 when the fluid's lung lies at smaller columns than the midline, +1
            at larger ones.
        effusion_thickness_mm: the fluid's greatest depth, at the back.
    """

    shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    nodes: tuple[Node, ...]
    effusion_lung: np.ndarray
    effusion_depth_mm: np.ndarray
    wall_gap_mm: np.ndarray
    nodule: Node | None
    chest_centre_yx: tuple[float, float]
    midline_x: float
    effusion_side: int
    effusion_thickness_mm: float


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
    on_tumour_side = rng.random() < 0.85
    effusion_lung = ipsi if on_tumour_side else contra
    centre = _body_centre(image, (dy, dx), fallback=both)
    thickness_mm = float(rng.uniform(20.0, 50.0))
    depth_mm, wall_gap_mm = _effusion_depth_mm(effusion_lung, centre, (dy, dx), thickness_mm)
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
        effusion_depth_mm=depth_mm,
        wall_gap_mm=wall_gap_mm,
        nodule=nodule,
        chest_centre_yx=centre,
        midline_x=mid_x,
        effusion_side=int(ipsi_sign if on_tumour_side else -ipsi_sign),
        effusion_thickness_mm=thickness_mm,
    )


def _body_centre(
    image_hu: np.ndarray, spacing_mm: tuple[float, float], fallback: np.ndarray
) -> tuple[float, float]:
    """The body's centroid (row, column): the largest region above -500 HU after a 5 mm
    opening (which parts a CT table or a cable touching the skin), its holes (the lungs) filled.

    An effusion's depth and its thinning up the wall are taken about this point, as LungSim
    takes them about the body's centre (`synth.paint.polar_fields`). The lungs' centroid, used
    before, sits 12-14 mm from it on LungSim slices (mostly behind it: the lungs fill the back
    of the chest, the heart the front), which tilted every ray and put the fluid's thinning up
    the wall at the wrong height (`benchmarks/spread_effusion_check.py`). `fallback` (the lung
    fields) gives the centre when no body is found.
    """
    pixel_mm = (spacing_mm[0] * spacing_mm[1]) ** 0.5
    body = ndimage.binary_opening(image_hu > -500.0, iterations=max(1, round(5.0 / pixel_mm)))
    labels, count = ndimage.label(body)
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if not count or not (body & fallback).any():
        body = fallback
    rows, cols = np.nonzero(body)
    return float(rows.mean()), float(cols.mean())


def _effusion_depth_mm(
    lung: np.ndarray,
    centre_yx: tuple[float, float],
    spacing_mm: tuple[float, float],
    thickness_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fluid depth at full effusion and the depth below the wall, per pixel of `lung`.

    Fluid layers at the back: full depth posteriorly (larger rows), thinning up the lateral
    wall, as LungSim draws it; angles and depths are taken about `centre_yx`.
    """
    yy, xx = np.indices(lung.shape)
    y_mm = (yy - centre_yx[0]) * spacing_mm[0]
    x_mm = (xx - centre_yx[1]) * spacing_mm[1]
    rho, theta = np.hypot(y_mm, x_mm), np.arctan2(y_mm, x_mm)
    wall_gap_mm = _radial_wall_gap_mm(lung, rho, theta)
    back = np.clip((np.sin(theta) + 0.3) / 1.3, 0.0, 1.0) ** 1.5
    depth_mm = thickness_mm * back * lung
    return depth_mm.astype(np.float32), wall_gap_mm.astype(np.float32)


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
    center: tuple[float, ...],
    scale: float,
    spacing_mm: tuple[float, ...],
    margin_mm: float = 3.0,
) -> np.ndarray:
    """Where the tumour is at a frame's size: its mask magnified about its centre by `scale`
    (target / current diameter, as the geometric prior grows it), plus `margin_mm`.

    Works on a slice (centre and spacing (y, x)) or a volume ((z, y, x)). Spread is drawn
    everywhere else (the `protect` of `draw_spread`). The lesion ROI the GAN owns would be too
    wide: for a 100 mm tumour it reaches 80 mm out and covers most of the lung, where an
    effusion behind the tumour must still show. Only a box around the grown tumour is
    computed: a volume's guard costs what its tumour's size costs.
    """
    mask = np.asarray(lesion_mask, np.float32)
    guard = np.zeros(mask.shape, bool)
    support = np.nonzero(mask > 0)
    if support[0].size == 0:
        return guard
    factor = 1.0 / max(scale, 1e-3)
    box = []
    for axis, (idx, c, step) in enumerate(zip(support, center, spacing_mm, strict=True)):
        reach = max(scale, 1.0) + 1 + margin_mm / step
        low = math.floor(c + (idx.min() - c) * scale - reach)
        high = math.ceil(c + (idx.max() - c) * scale + reach) + 1
        box.append(slice(max(low, 0), min(high, mask.shape[axis])))
    grid = np.indices([b.stop - b.start for b in box], dtype=np.float64)
    coords = [c + (g + b.start - c) * factor for g, b, c in zip(grid, box, center, strict=True)]
    grown = ndimage.map_coordinates(mask, coords, order=1, cval=0.0)
    if not (grown >= 0.5).any():
        return guard
    outside = ndimage.distance_transform_edt(grown < 0.5, sampling=spacing_mm)
    guard[tuple(box)] = outside <= margin_mm
    return guard


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


def _effusion_regions(plan: SpreadPlan) -> tuple[np.ndarray, np.ndarray]:
    """The fluid at full depth and the band of compressed lung beyond it (5 mm deep, where
    the fluid is over 3 mm deep), as LungSim labels them (`synth.findings.paint_findings`)."""
    depth = plan.effusion_depth_mm
    fluid = plan.effusion_lung & (plan.wall_gap_mm < depth)
    band = plan.effusion_lung & ~fluid & (plan.wall_gap_mm < depth + 5.0) & (depth > 3.0)
    return fluid, band


def _paint_against_wall(
    image: np.ndarray,
    level: np.ndarray,
    layers: tuple[tuple[np.ndarray, float, bool], ...],
    lung: np.ndarray,
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint layers that lie against the chest wall (the band of compressed lung, then the
    pleural fluid over it) as a scanner sees them: a new label image, then the partial-volume
    blur (Gaussian, 0.6 px).

    Each pixel belongs to one layer at most (a later layer over an earlier one), and the
    blurred weights of the layers are applied together. So where fluid meets the band the edge
    blends fluid with the band, as LungSim's does; painting one layer after the other, each
    with its own blurred weight, blended the fluid's last pixels with the lung under the band
    instead, 80 HU darker and in the band's range (`benchmarks/spread_effusion_check.py
    --hu`).

    Against the wall: the lung field read from the image stops a pixel short of it, and that
    pixel is part lung, part wall. Fluid fills the pleural space up to the wall, so a layer
    counts the wall next to it as its own before the blur (no fade toward the wall), and the
    part-lung pixels just outside the field are painted too (local level below -250 HU, well
    under fat at -100, so fat beside the fluid stays as it is). The wall itself never changes.

    `layers` are (region, HU, keeps vessels) from the bottom up. Fluid replaces what was there;
    compressed lung keeps the vessels that run through it and changes only the parenchyma
    around them.

    Returns the image and the new level, as `_paint` does.
    """
    step = np.zeros(level.shape, np.float32)
    reach = lung.copy()
    taken = np.zeros(lung.shape, bool)
    # Vessels run on through compressed lung (still aerated tissue, as LungSim draws it): a
    # pixel that is a fraction `occ` vessel changes by (1 - occ) of the parenchyma's change,
    # occ read from its level between the lung's median (the parenchyma) and blood.
    parenchyma_hu = float(np.median(level[lung])) if lung.any() else -850.0
    aerated = np.clip((_BLOOD_HU - level) / (_BLOOD_HU - parenchyma_hu), 0.0, 1.0)
    parenchyma_level = np.minimum(level, parenchyma_hu)
    for region, value_hu, keeps_vessels in reversed(layers):  # top layer first
        near = ndimage.binary_dilation(region, iterations=2)
        own = (region | (near & ~lung)) & ~taken
        taken |= own
        weight = ndimage.gaussian_filter(own.astype(np.float32), 0.6)
        change = aerated * (value_hu - parenchyma_level) if keeps_vessels else value_hu - level
        step += weight * change
        reach |= ~lung & ndimage.binary_dilation(region) & (level < _PART_LUNG_BELOW_HU)
    step *= reach & keep
    return image + step, level + step


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
    if tuple(target) == tuple(baseline):
        # Nothing rises (earlier levels are at or below the target): skip the filters below,
        # which a volume would otherwise run on every slice of an unchanged frame.
        return out, drawn
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
            fluid, band = (region & keep for region in _effusion_regions(plan))
            layers = ((band, ATELECTASIS_HU, True), (fluid, EFFUSION_HU, False))
            out, level = _paint_against_wall(out, level, layers, plan.effusion_lung, keep)
            if fluid.any():
                depth_mm = float(plan.effusion_depth_mm[fluid].max())
                drawn.append(f"M1a effusion {depth_mm:.0f} mm deep")
        if m1a_kind in ("nodule", "both") and plan.nodule is not None:
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


# LungSim's effusion thins out over the 40 mm below its top (`synth.findings.paint_findings`).
_EFFUSION_TAPER_MM = 40.0


@dataclass(frozen=True)
class VolumeSpreadPlan:
    """Where spread would show through a volume: the lesion slice's plan, extended in z.

    Nodes are ellipsoids whose craniocaudal semi-axis is their short in-plane one; the M1a
    nodule is a ball; the effusion layers at the back of its lung on every slice below its
    top, full depth from 40 mm under the top down to the lung base, thinning to nothing over
    those 40 mm, as LungSim draws it. On the lesion's slice this is `plan` itself.

    Attributes:
        plan: `plan_spread` of the axial slice through the lesion.
        lesion_slice: that slice's index.
        slice_mm: distance between slices.
        cranial: +1 when the slice index grows toward the head, -1 toward the feet.
        effusion_top_mm: height of the fluid's top above the lesion's slice.
    """

    plan: SpreadPlan
    lesion_slice: int
    slice_mm: float
    cranial: int
    effusion_top_mm: float


def plan_spread_volume(
    volume_hu: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    lesion_center_zyx: tuple[float, float, float],
    *,
    cranial: int,
    seed: int = 0,
) -> VolumeSpreadPlan:
    """`plan_spread` on the slice through the lesion, and how far the fluid reaches upward.

    The same seed gives the lesion's slice the plan `plan_spread` gives that slice alone, so a
    volume's middle slice carries what a 2D simulation of it would.

    Raises:
        SimulationError: the volume is not 3D, or the lesion's slice lacks two lung fields.
    """
    volume = np.asarray(volume_hu, np.float32)
    if volume.ndim != 3 or cranial not in (-1, 1):
        raise SimulationError(
            "spread through a volume needs axial slices stacked head to foot",
            expected="a z-y-x volume whose slice axis runs along the body (cranial +1 or -1)",
            found=f"shape {volume.shape}, cranial {cranial}",
        )
    k0 = min(max(round(lesion_center_zyx[0]), 0), volume.shape[0] - 1)
    spacing_yx = (float(spacing_zyx_mm[1]), float(spacing_zyx_mm[2]))
    center_yx = (float(lesion_center_zyx[1]), float(lesion_center_zyx[2]))
    plan = plan_spread(volume[k0], spacing_yx, center_yx, seed)
    # A second stream: the slice plan's draws stay those of `plan_spread` with this seed.
    top_mm = float(np.random.default_rng([seed, 1]).uniform(40.0, 90.0))
    return VolumeSpreadPlan(plan, k0, float(spacing_zyx_mm[0]), cranial, top_mm)


def _node_at(node: Node | None, height_mm: float) -> Node | None:
    """The section of an ellipsoidal node (or ball) `height_mm` above its centre, or None."""
    if node is None:
        return None
    half_mm = node.semi_axes_mm[1]
    if abs(height_mm) >= half_mm:
        return None
    f = math.sqrt(1.0 - (height_mm / half_mm) ** 2)
    return replace(node, semi_axes_mm=(node.semi_axes_mm[0] * f, node.semi_axes_mm[1] * f))


def slice_plan(
    vplan: VolumeSpreadPlan, image_hu: np.ndarray, index: int, effusion: bool = True
) -> SpreadPlan | None:
    """The plan of slice `index` (its image `image_hu`), or None when nothing reaches it.

    Without `effusion` (no frame gains one) the slice's lung fields are not looked for."""
    base = vplan.plan
    if index == vplan.lesion_slice:
        return base
    height_mm = (index - vplan.lesion_slice) * vplan.slice_mm * vplan.cranial
    nodes = tuple(n for n in (_node_at(node, height_mm) for node in base.nodes) if n is not None)
    nodule = _node_at(base.nodule, height_mm)
    taper = np.clip((vplan.effusion_top_mm - height_mm) / _EFFUSION_TAPER_MM, 0.0, 1.0) ** 0.5
    lung = np.zeros(base.shape, bool)
    if effusion and taper > 0:
        # The fluid's lung on this slice: the lung fields on its side of the midline.
        for field in _lungs(np.asarray(image_hu, np.float32)):
            if (float(np.nonzero(field)[1].mean()) - base.midline_x) * base.effusion_side > 0:
                lung |= field
    if not (nodes or nodule is not None or lung.any()):
        return None
    if lung.any():
        depth_mm, wall_gap_mm = _effusion_depth_mm(
            lung, base.chest_centre_yx, base.spacing_mm, base.effusion_thickness_mm * float(taper)
        )
    else:  # no fluid on this slice: no depth, and every pixel outside the (empty) lung
        depth_mm = np.zeros(base.shape, np.float32)
        wall_gap_mm = np.full(base.shape, np.inf, np.float32)
    return replace(
        base,
        nodes=nodes,
        nodule=nodule,
        effusion_lung=lung,
        effusion_depth_mm=depth_mm,
        wall_gap_mm=wall_gap_mm,
    )


def draw_spread_volume(
    volumes_hu: Sequence[np.ndarray],
    vplan: VolumeSpreadPlan,
    *,
    baseline: tuple[str, str],
    targets: Sequence[tuple[str, str]],
    m1a_kind: str = "effusion",
    protect: Sequence[np.ndarray | None] | None = None,
    n_levels: Sequence[tuple[str, ...]] | None = None,
    source_hu: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[list[str]]]:
    """`draw_spread` through whole volumes: one frame per (volume, target), slice by slice.

    Args:
        volumes_hu: the frames (z-y-x, HU), all of one shape.
        vplan: `plan_spread_volume` of the input volume.
        baseline: the input's (N, M).
        targets: each frame's (N, M).
        m1a_kind: "effusion", "nodule" or "both".
        protect: per frame, voxels never drawn over (`tumour_guard` of the volume), or None.
        n_levels: per frame, earlier N levels whose nodes stay drawn (`draw_spread`).
        source_hu: the volume whose lungs place the fluid on each slice (default: the first
            frame); one volume for all frames, so every frame's fluid has the same outline.

    Returns:
        The drawn volumes, and per frame what was drawn (as `draw_spread` names it on the
        lesion's slice, where every finding shows).
    """
    count = len(volumes_hu)
    if len(targets) != count:
        raise ValueError(f"{count} volumes but {len(targets)} targets")
    guards = list(protect) if protect is not None else [None] * count
    levels = list(n_levels) if n_levels is not None else [()] * count
    anatomy = np.asarray(volumes_hu[0] if source_hu is None else source_hu, np.float32)
    out = [np.array(v, np.float32, copy=True) for v in volumes_hu]
    what: list[list[str]] = [[] for _ in range(count)]
    # As `draw_spread` decides: fluid only where a frame's M rises to M1a.
    effusion = (
        m1a_kind in ("effusion", "both")
        and baseline[1] != "M1a"
        and any(target[1] == "M1a" for target in targets)
    )
    for k in range(anatomy.shape[0]):
        plan = slice_plan(vplan, anatomy[k], k, effusion=effusion)
        if plan is None:
            continue
        for i, target in enumerate(targets):
            guard = guards[i]
            drawn, named = draw_spread(
                out[i][k],
                plan,
                baseline=baseline,
                target=target,
                m1a_kind=m1a_kind,
                protect=None if guard is None else guard[k],
                n_levels=tuple(levels[i]),
            )
            out[i][k] = drawn
            if k == vplan.lesion_slice:
                what[i] = named
    return out, what
