"""From a scene (anatomy + findings at one visit) to HU slices, before blur and noise.

Each axial slice: tissue labels -> HU per tissue -> lung parenchyma with its gravity gradient and
texture -> pulmonary vessels (partial-volumed by the slice thickness) -> fissures -> lesions
(solid tissue replaces, ground glass adds). `acquisition.blur` and `acquisition.add_noise` then
turn the stack into a scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcancer.synth import anatomy as an
from lungcancer.synth.acquisition import Pose
from lungcancer.synth.anatomy import Anatomy
from lungcancer.synth.findings import Effusion, NodeSite, paint_findings
from lungcancer.synth.lesion import LesionLook, LesionShape, render_lesion
from lungcancer.synth.paint import Polar, label_slice, polar_fields
from lungcancer.synth.vessels import VesselTree, vessel_occupancy

_BLOOD_HU = 40.0
_FISSURE_MM = 0.5  # physical thickness of a fissure (two pleural layers)
_FISSURE_HU = 700.0  # its contrast over aerated lung


@dataclass(frozen=True)
class Texture:
    """Low-frequency parenchymal texture: a sum of plane waves in patient space, so the same
    patient shows the same texture in every slice and at every visit.

    Attributes:
        k_per_mm: (K, 3) wave vectors (radians per mm).
        phase: (K,) phases.
        amp_hu: (K,) amplitudes.
    """

    k_per_mm: np.ndarray
    phase: np.ndarray
    amp_hu: np.ndarray

    def evaluate(self, xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
        """Texture on a grid (len(ys), len(xs)); each wave is two outer products."""
        out = np.zeros((len(ys), len(xs)), np.float32)
        for (kx, ky, kz), ph, amp in zip(self.k_per_mm, self.phase, self.amp_hu, strict=True):
            a = (kx * xs).astype(np.float32)
            b = (ky * ys + kz * z + ph).astype(np.float32)
            out += np.outer(amp * np.cos(b), np.cos(a)) - np.outer(amp * np.sin(b), np.sin(a))
        return out


def sample_texture(rng: np.random.Generator) -> Texture:
    """Six waves of 4-25 mm wavelength, ~8-14 HU standard deviation in total."""
    k = 6
    direction = rng.normal(size=(k, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavelength = rng.uniform(4.0, 25.0, k)
    total_std = rng.uniform(8.0, 14.0)
    # Each cosine has variance amp^2 / 2.
    amp = np.full(k, total_std * np.sqrt(2.0 / k))
    return Texture(direction * (2 * np.pi / wavelength)[:, None], rng.uniform(0, 2 * np.pi, k), amp)


@dataclass(frozen=True)
class PlacedLesion:
    """A lesion at its size for one visit."""

    shape: LesionShape
    look: LesionLook


@dataclass(frozen=True)
class Scene:
    """Everything visible at one visit, in patient coordinates.

    Attributes:
        anatomy: the patient's chest.
        tree: the pulmonary vessels.
        hu_table: HU per tissue label for this patient.
        texture: parenchymal texture.
        primary: the lesion the mask is drawn for, or None (normal).
        others: other lesions shown but not masked (contralateral nodule, granulomas).
        nodes: enlarged nodes in force.
        effusion: pleural effusion in force, or None.
        pose: shift and breathing at this visit.
    """

    anatomy: Anatomy
    tree: VesselTree
    hu_table: np.ndarray
    texture: Texture
    primary: PlacedLesion | None
    others: tuple[PlacedLesion, ...]
    nodes: tuple[NodeSite, ...]
    effusion: Effusion | None
    pose: Pose


@dataclass(frozen=True)
class SliceRender:
    """One noiseless, unblurred slice.

    Attributes:
        hu: float32 (H, W).
        body_frac: float32 (H, W), fraction of each pixel inside the primary lesion's body.
        labels: uint8 tissue labels (H, W) before lesions.
    """

    hu: np.ndarray
    body_frac: np.ndarray
    labels: np.ndarray


def to_patient(pose: Pose, xs_w: np.ndarray, ys_w: np.ndarray, z_w: float) -> tuple[
    np.ndarray, np.ndarray, float
]:  # fmt: skip
    """Scanner (world) grid coordinates to the patient's own coordinates at this visit."""
    sx, sy, sz = pose.shift_mm
    return (xs_w - sx) / pose.scale, (ys_w - sy) / pose.scale, (z_w - sz) / pose.scale


def to_world(pose: Pose, point_mm: tuple[float, float, float]) -> tuple[float, float, float]:
    """A patient-space point in scanner coordinates at this visit."""
    return (
        point_mm[0] * pose.scale + pose.shift_mm[0],
        point_mm[1] * pose.scale + pose.shift_mm[1],
        point_mm[2] * pose.scale + pose.shift_mm[2],
    )


def lung_hu(anat: Anatomy, y: np.ndarray) -> np.ndarray:
    """Parenchyma HU at each y: denser toward the back (gravity, patient supine)."""
    span = anat.spine_y_mm + 40.0 - anat.y_sternum_mm
    frac = np.clip((y - anat.y_sternum_mm) / span, 0.0, 1.0)
    return np.asarray(anat.lung_hu_anterior + anat.lung_gradient_hu * frac**1.5)


def render_slice(
    scene: Scene,
    xs_w: np.ndarray,
    ys_w: np.ndarray,
    z_w: float,
    thickness_mm: float,
    polar: Polar | None = None,
) -> SliceRender:
    """Render one axial slice of a scene.

    Args:
        scene: what to draw.
        xs_w: scanner x of each column (mm, increasing, evenly spaced).
        ys_w: scanner y of each row (mm, increasing, evenly spaced).
        z_w: scanner z of the slice centre.
        thickness_mm: slice thickness.
        polar: `polar_fields` of this grid in patient coordinates (reused across a volume).

    Returns:
        HU, primary-lesion body fraction and tissue labels of the slice.
    """
    anat = scene.anatomy
    xs, ys, z = to_patient(scene.pose, xs_w, ys_w, z_w)
    thick = thickness_mm / scene.pose.scale
    x2, y2 = xs[np.newaxis, :], ys[:, np.newaxis]
    if polar is None:
        polar = polar_fields(anat, x2, y2)
    labels = label_slice(anat, xs, ys, z, polar)
    paint_findings(labels, x2, y2, z, polar, scene.nodes, scene.effusion)
    hu = scene.hu_table[labels]
    lung = (labels == an.LUNG_R) | (labels == an.LUNG_L)
    # Deeper inspiration (scale > 1) means more air per voxel: slightly lower lung HU.
    breath_hu = (1.0 - scene.pose.scale) * 400.0
    parenchyma = lung_hu(anat, y2) + scene.texture.evaluate(xs, ys, z) + breath_hu
    hu = np.where(lung, parenchyma, hu).astype(np.float32)
    aerated = lung | (labels == an.ATELECTASIS)
    occ = vessel_occupancy(scene.tree, xs, ys, z, thick)
    hu = np.where(aerated, hu + occ * (_BLOOD_HU - hu), hu)
    hu = hu + np.where(lung, _fissures(anat, x2, y2, z, thick, labels), 0.0)
    body = np.zeros_like(hu)
    mean_lung = float(anat.lung_hu_anterior + 0.5 * anat.lung_gradient_hu)
    lesions = ([scene.primary] if scene.primary else []) + list(scene.others)
    for i, lesion in enumerate(lesions):
        layer = render_lesion(lesion.shape, lesion.look, xs, ys, z, thick, mean_lung)
        if layer is None:
            continue
        hu = hu * (1.0 - layer.replace_frac) + layer.replace_hu + layer.add_hu
        if i == 0 and scene.primary is not None:
            body = layer.body_frac
    return SliceRender(hu=hu.astype(np.float32), body_frac=body, labels=labels)


def _fissures(
    anat: Anatomy, x: np.ndarray, y: np.ndarray, z: float, thick: float, labels: np.ndarray
) -> np.ndarray:
    """HU added by the fissures: a thin sheet averaged over the slab (a line in thin slices,
    a faint band in thick ones)."""
    sigma = np.sqrt(0.3**2 + thick**2 / 12.0)
    peak = _FISSURE_MM * _FISSURE_HU / (sigma * np.sqrt(2 * np.pi))
    out = np.zeros(labels.shape, np.float32)
    for fissure in anat.fissures:
        # The sheet's height is a column term plus a row term: g = z - height, cheaply.
        g = (z - fissure.z0_mm - fissure.slope * (y - fissure.y0_mm)).astype(np.float32) + (
            fissure.curvature * (x - fissure.x0_mm) ** 2
        ).astype(np.float32)
        near = np.abs(g) < 3.0 * sigma
        near &= labels == fissure.side
        if fissure.anterior_to >= 0:
            near &= z > anat.fissures[fissure.anterior_to].height(x, y)
        out[near] += peak * np.exp(-0.5 * (g[near] / sigma) ** 2)
    return out
