"""Pulmonary vessel trees: grown once per patient, splatted into any axial slice.

Each lung gets an arterial tree from its hilum and a venous tree from its inferior pulmonary
vein. A tree is grown by recursively splitting a cloud of points sampled inside the lung (a
space-filling construction): every split sends a branch toward each half of the cloud, with
radii by Murray's law (r^3 conserved), so vessels thin and multiply toward the periphery as in
real lungs. The tree is kept as points along its centre lines with a radius each.

Rendering is a splat: each centre-line point deposits the cross-section it contributes to a slab
of the slice thickness (a Gaussian in z whose width grows with the thickness), and one Gaussian
filter per radius class spreads it in-plane. Vessels crossing the slice become round dots,
vessels lying in it become tubes, and thin vessels in thick slices are partial-volumed, which is
what makes CT vessels look like CT vessels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcancer.synth import anatomy as an
from lungcancer.synth.anatomy import Anatomy
from lungcancer.synth.paint import sample_lung_points

_ATTRACTORS_PER_TREE = 1100
_ROOT_RADIUS_MM = (7.5, 6.5)  # artery, vein
_MIN_RADIUS_MM = 0.35
# Gaussian widths (mm) of the radius classes; a point uses the nearest and is rescaled to it.
_SIGMA_CLASSES_MM = np.array([0.45, 1.0, 2.2, 4.8])


@dataclass(frozen=True)
class VesselTree:
    """Centre-line points of all of a patient's pulmonary vessels.

    Attributes:
        points_mm: (N, 3) x, y, z of centre-line samples, sorted by z.
        radius_mm: (N,) vessel radius at each sample.
        step_mm: (N,) length of centre line each sample stands for.
        sigma_class: (N,) index into the splat widths `_SIGMA_CLASSES_MM` of each sample.
    """

    points_mm: np.ndarray
    radius_mm: np.ndarray
    step_mm: np.ndarray
    sigma_class: np.ndarray


def _compact(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids in increasing order, index of each id among them): np.unique's answer
    for small non-negative ints, in linear time."""
    present = np.bincount(ids) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[ids]


def _grow(
    root: np.ndarray, attractors: np.ndarray, root_radius_mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments of one tree: (starts (S, 3), ends (S, 3), radii (S,)).

    All clusters of one generation are split at once (grouped sums give every cluster's mean
    and covariance; a batched eigen-decomposition its longest axis), so a tree of a few
    thousand branches costs a dozen vectorised passes instead of a Python call per branch.
    """
    pts = attractors
    cluster = np.zeros(len(pts), dtype=np.int64)
    node_pos = root[np.newaxis, :].copy()
    node_r = np.array([root_radius_mm])
    node_n = np.array([len(pts)])
    starts, ends, radii = [], [], []
    while len(pts):
        # Clusters that are small or thin end in twigs, one to each of their points.
        done = (node_n[cluster] <= 2) | (node_r[cluster] < 2 * _MIN_RADIUS_MM)
        if done.any():
            c = cluster[done]
            twig_r = np.maximum(node_r[c] * 0.7, _MIN_RADIUS_MM)
            starts.append(node_pos[c])
            ends.append(pts[done])
            radii.append(twig_r)
            # Two short sub-branches at each twig's end fill the periphery with the small
            # vessels a scan shows there, at a fraction of the cost of more attractors.
            parent = pts[done] - node_pos[c]
            length = np.linalg.norm(parent, axis=1, keepdims=True) + 1e-6
            for _ in range(2):
                d = parent / length + rng.normal(0.0, 0.6, parent.shape)
                d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
                starts.append(pts[done])
                ends.append(pts[done] + d * rng.uniform(3.0, 9.0, (len(d), 1)))
                radii.append(np.maximum(twig_r * 0.75, _MIN_RADIUS_MM))
            pts, cluster = pts[~done], cluster[~done]
            if not len(pts):
                break
        ids, cluster = _compact(cluster)
        node_pos, node_r = node_pos[ids], node_r[ids]
        k = len(ids)
        count = np.bincount(cluster, minlength=k).astype(np.float64)
        mean = np.stack([np.bincount(cluster, pts[:, i], k) for i in range(3)], 1) / count[:, None]
        d = pts - mean[cluster]
        cov = np.zeros((k, 3, 3))
        for i in range(3):
            for j in range(i, 3):
                cov[:, i, j] = cov[:, j, i] = np.bincount(cluster, d[:, i] * d[:, j], k)
        axis = np.linalg.eigh(cov)[1][:, :, -1]
        # A little randomness in where each cloud is cut keeps trees from looking regular.
        jitter = rng.normal(0.0, 0.15, k) * np.sqrt(
            np.maximum(np.linalg.eigvalsh(cov)[:, -1], 0) / count
        )
        side = (np.einsum("ij,ij->i", d, axis[cluster]) > jitter[cluster]).astype(np.int64)
        child, cluster = _compact(2 * cluster + side)
        parent = child // 2
        n_child = np.bincount(cluster).astype(np.float64)
        target = np.stack([np.bincount(cluster, pts[:, i]) for i in range(3)], 1) / n_child[:, None]
        frac = rng.uniform(0.35, 0.6, len(child))[:, None]
        end = node_pos[parent] + frac * (target - node_pos[parent])
        r_child = node_r[parent] * (n_child / count[parent]) ** (1.0 / 3.0)
        starts.append(node_pos[parent])
        ends.append(end)
        radii.append(r_child)
        node_pos, node_r, node_n = end, r_child, n_child.astype(np.int64)
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(radii)


ATTRACTORS_PER_LUNG = 2 * _ATTRACTORS_PER_TREE


def grow_vessel_tree(
    anat: Anatomy, rng: np.random.Generator, lungs: dict[int, np.ndarray] | None = None
) -> VesselTree:
    """Grow the arterial and venous trees of both lungs.

    Args:
        anat: the patient.
        rng: the patient's generator.
        lungs: `ATTRACTORS_PER_LUNG` points inside each lung (`sample_lung_points`), or None
            to sample them here.

    Returns:
        The centre-line samples of all four trees.
    """
    parts = []
    if lungs is None:
        lungs = sample_lung_points(anat, ATTRACTORS_PER_LUNG, rng)
    for side, label in ((0, an.LUNG_R), (1, an.LUNG_L)):
        for kind, roots in enumerate((anat.artery_roots, anat.vein_roots)):
            attractors = lungs[label][
                kind * _ATTRACTORS_PER_TREE : (kind + 1) * _ATTRACTORS_PER_TREE
            ]
            root = np.asarray(roots[side], dtype=np.float64)
            parts.append(_grow(root, attractors, _ROOT_RADIUS_MM[kind], rng))
    start = np.concatenate([p[0] for p in parts])
    end = np.concatenate([p[1] for p in parts])
    radius = np.concatenate([p[2] for p in parts])
    length = np.linalg.norm(end - start, axis=1)
    # Thin vessels need dense samples to read as continuous tubes; thick ones do not.
    n = np.maximum(1, np.ceil(length / np.clip(1.2 * radius, 0.7, 2.5))).astype(np.int64)
    seg = np.repeat(np.arange(len(n)), n)
    first = np.cumsum(n) - n
    t = (np.arange(int(n.sum())) - first[seg] + 0.5) / n[seg]
    points = start[seg] + t[:, None] * (end[seg] - start[seg])
    radii = radius[seg]
    # Sorted by height, a slice finds its nearby samples with two binary searches.
    order = np.argsort(points[:, 2])
    # Nearest class in log scale: the class boundaries are the geometric means of neighbours.
    bounds = np.sqrt(_SIGMA_CLASSES_MM[1:] * _SIGMA_CLASSES_MM[:-1])
    cls = np.searchsorted(bounds, 0.7 * radii[order])
    return VesselTree(
        points_mm=points[order],
        radius_mm=radii[order],
        step_mm=(length / n)[seg][order],
        sigma_class=cls.astype(np.int8),
    )


def vessel_occupancy(
    tree: VesselTree,
    xs: np.ndarray,
    ys: np.ndarray,
    z_mm: float,
    thickness_mm: float,
) -> np.ndarray:
    """Fraction of each pixel's slab occupied by vessel, for the axial slice at `z_mm`.

    Args:
        tree: the patient's vessels (already in the slice's coordinates).
        xs: x of each column (mm, evenly spaced, increasing).
        ys: y of each row (mm, evenly spaced, increasing).
        z_mm: centre of the slice.
        thickness_mm: slice thickness (the slab the detector averages over).

    Returns:
        float32 (len(ys), len(xs)) in [0, 1].
    """
    pixel_mm = float(xs[1] - xs[0])
    h, w = len(ys), len(xs)
    out = np.zeros((h, w), dtype=np.float32)
    reach = 3.0 * np.sqrt((0.7 * float(tree.radius_mm.max())) ** 2 + thickness_mm**2 / 12.0)
    lo, hi = np.searchsorted(tree.points_mm[:, 2], (z_mm - reach, z_mm + reach))
    if hi <= lo:
        return out
    p = tree.points_mm[lo:hi]
    sv = 0.7 * tree.radius_mm[lo:hi]
    sz = np.sqrt(sv**2 + thickness_mm**2 / 12.0)
    d = p[:, 2] - z_mm
    col = (p[:, 0] - xs[0]) / pixel_mm
    row = (p[:, 1] - ys[0]) / float(ys[1] - ys[0])
    keep = (np.abs(d) < 3.0 * sz) & (col >= 0) & (col < w - 1) & (row >= 0) & (row < h - 1)
    if not keep.any():
        return out
    sv, sz, d, col, row = sv[keep], sz[keep], d[keep], col[keep], row[keep]
    cls = tree.sigma_class[lo:hi][keep].astype(np.int64)
    # Mass that makes an in-plane vessel peak at sigma_v / sigma_z and a crossing one at 1,
    # rescaled so the peak is right at its class width: m / (2 pi sigma_class^2).
    sigma_cls = _SIGMA_CLASSES_MM[cls]
    mass = tree.step_mm[lo:hi][keep] * np.sqrt(2 * np.pi) * (sv / sz) * np.exp(-0.5 * (d / sz) ** 2)
    mass *= sigma_cls**2 / sv / pixel_mm**2
    grids = _bilinear_splat(cls, row, col, mass, (len(_SIGMA_CLASSES_MM), h, w))
    for k, sigma_mm in enumerate(_SIGMA_CLASSES_MM):
        sigma_px = sigma_mm / pixel_mm
        # Below half a pixel the bilinear splat and the scanner blur already do the spreading.
        out += (
            ndimage.gaussian_filter(grids[k], sigma_px, truncate=3.0)
            if sigma_px >= 0.5
            else grids[k]
        )
    return np.minimum(out, 1.0)


def _bilinear_splat(
    cls: np.ndarray, row: np.ndarray, col: np.ndarray, mass: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Deposit each mass on the four pixels around it, in its class's grid (one bincount)."""
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = row - r0, col - c0
    base = (cls * shape[1] + r0) * shape[2] + c0
    index = np.concatenate([base, base + 1, base + shape[2], base + shape[2] + 1])
    weight = np.concatenate(
        [mass * (1 - fr) * (1 - fc), mass * (1 - fr) * fc, mass * fr * (1 - fc), mass * fr * fc]
    )
    flat = np.bincount(index, weight, minlength=shape[0] * shape[1] * shape[2])
    return flat.reshape(shape).astype(np.float32)
