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
        points_mm: (N, 3) x, y, z of centre-line samples.
        radius_mm: (N,) vessel radius at each sample.
        step_mm: (N,) length of centre line each sample stands for.
        distance_from_root_mm: (N,) path length from the hilum, for realism checks.
    """

    points_mm: np.ndarray
    radius_mm: np.ndarray
    step_mm: np.ndarray
    distance_from_root_mm: np.ndarray


def _grow(
    root: np.ndarray, attractors: np.ndarray, root_radius_mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segments of one tree: (starts (S, 3), ends (S, 3), radii (S,), start distances (S,)).

    All clusters of one generation are split at once (grouped sums give every cluster's mean
    and covariance; a batched eigen-decomposition its longest axis), so a tree of a few
    thousand branches costs a dozen vectorised passes instead of a Python call per branch.
    """
    pts = attractors
    cluster = np.zeros(len(pts), dtype=np.int64)
    node_pos = root[np.newaxis, :].copy()
    node_r = np.array([root_radius_mm])
    node_dist = np.zeros(1)
    node_n = np.array([len(pts)])
    starts, ends, radii, dists = [], [], [], []
    while len(pts):
        # Clusters that are small or thin end in twigs, one to each of their points.
        done = (node_n[cluster] <= 2) | (node_r[cluster] < 2 * _MIN_RADIUS_MM)
        if done.any():
            c = cluster[done]
            twig_r = np.maximum(node_r[c] * 0.7, _MIN_RADIUS_MM)
            starts.append(node_pos[c])
            ends.append(pts[done])
            radii.append(twig_r)
            dists.append(node_dist[c])
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
                dists.append(node_dist[c] + length[:, 0])
            pts, cluster = pts[~done], cluster[~done]
            if not len(pts):
                break
        ids, cluster = np.unique(cluster, return_inverse=True)
        node_pos, node_r, node_dist = node_pos[ids], node_r[ids], node_dist[ids]
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
        child, cluster = np.unique(2 * cluster + side, return_inverse=True)
        parent = child // 2
        n_child = np.bincount(cluster).astype(np.float64)
        target = np.stack([np.bincount(cluster, pts[:, i]) for i in range(3)], 1) / n_child[:, None]
        frac = rng.uniform(0.35, 0.6, len(child))[:, None]
        end = node_pos[parent] + frac * (target - node_pos[parent])
        r_child = node_r[parent] * (n_child / count[parent]) ** (1.0 / 3.0)
        starts.append(node_pos[parent])
        ends.append(end)
        radii.append(r_child)
        dists.append(node_dist[parent])
        node_dist = node_dist[parent] + np.linalg.norm(end - node_pos[parent], axis=1)
        node_pos, node_r, node_n = end, r_child, n_child.astype(np.int64)
    return (
        np.concatenate(starts),
        np.concatenate(ends),
        np.concatenate(radii),
        np.concatenate(dists),
    )


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
    dist0 = np.concatenate([p[3] for p in parts])
    length = np.linalg.norm(end - start, axis=1)
    # Thin vessels need dense samples to read as continuous tubes; thick ones do not.
    n = np.maximum(1, np.ceil(length / np.clip(radius, 0.6, 2.0))).astype(np.int64)
    seg = np.repeat(np.arange(len(n)), n)
    first = np.cumsum(n) - n
    t = (np.arange(int(n.sum())) - first[seg] + 0.5) / n[seg]
    return VesselTree(
        points_mm=start[seg] + t[:, None] * (end[seg] - start[seg]),
        radius_mm=radius[seg],
        step_mm=(length / n)[seg],
        distance_from_root_mm=dist0[seg] + t * length[seg],
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
    sigma_v = 0.7 * tree.radius_mm
    sigma_z = np.sqrt(sigma_v**2 + thickness_mm**2 / 12.0)
    dz = tree.points_mm[:, 2] - z_mm
    near = np.abs(dz) < 3.0 * sigma_z
    out = np.zeros((len(ys), len(xs)), dtype=np.float32)
    if not near.any():
        return out
    p, sv, sz, d = tree.points_mm[near], sigma_v[near], sigma_z[near], dz[near]
    # Mass that makes an in-plane vessel peak at sigma_v / sigma_z and a crossing one at 1.
    mass = tree.step_mm[near] * np.sqrt(2 * np.pi) * sv * (sv / sz) * np.exp(-0.5 * (d / sz) ** 2)
    cls = np.argmin(np.abs(np.log(sv[:, None] / _SIGMA_CLASSES_MM[None, :])), axis=1)
    col = (p[:, 0] - xs[0]) / pixel_mm
    row = (p[:, 1] - ys[0]) / float(ys[1] - ys[0])
    inside = (col >= 0) & (col < len(xs) - 1) & (row >= 0) & (row < len(ys) - 1)
    for k, sigma_mm in enumerate(_SIGMA_CLASSES_MM):
        sel = inside & (cls == k)
        if not sel.any():
            continue
        # Rescale the mass so the peak is right at the class width: m / (2 pi sigma^2).
        m = mass[sel] * (sigma_mm / sv[sel]) ** 2 / pixel_mm**2
        grid = _bilinear_splat(row[sel], col[sel], m, out.shape)
        sigma_px = sigma_mm / pixel_mm
        # Below half a pixel the bilinear splat and the scanner blur already do the spreading.
        out += ndimage.gaussian_filter(grid, sigma_px, truncate=3.0) if sigma_px >= 0.5 else grid
    return np.minimum(out, 1.0)


def _bilinear_splat(
    row: np.ndarray, col: np.ndarray, mass: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = row - r0, col - c0
    flat = np.zeros(shape[0] * shape[1], dtype=np.float64)
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)),
                      (1, 1, fr * fc)):  # fmt: skip
        flat += np.bincount((r0 + dr) * shape[1] + (c0 + dc), mass * w, minlength=flat.size)
    return flat.reshape(shape).astype(np.float32)
