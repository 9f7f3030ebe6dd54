"""Fidelity measures of a rendered lesion patch against the true future scan.

The lesion is segmented the same way in every image that is scored (rendered, baseline, true
future): voxels above `LESION_THRESHOLD_HU` (-400 HU, halfway between aerated lung and soft
tissue) inside the ROI disc, keeping the connected component at the centre (or, when the
centre itself is below threshold, the component nearest to it). The ROI is a disc around the
patch centre of radius 0.75 x the larger of the input and target diameters + 3 mm, so a lesion
that grows as predicted is inside it and distant vessels are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lungcancer.progression.patches import LESION_THRESHOLD_HU, equivalent_diameter_mm


@dataclass(frozen=True)
class LesionScores:
    """Scores of one rendered patch against the true future.

    Attributes:
        ssim: SSIM of the whole patch (window units, data range 2).
        psnr_db: PSNR of the whole patch (window units, data range 2).
        dice: Dice of the segmented lesion against the true future's lesion mask.
        diameter_mm: area-equivalent diameter of the segmented lesion.
        diameter_error_mm: |diameter_mm - true future diameter|.
        diameter_bias_mm: diameter_mm - true future diameter (signed: > 0 too big).
        identity_ssim: SSIM against the *input* patch outside the lesion ROI (1 = untouched).
    """

    ssim: float
    psnr_db: float
    dice: float
    diameter_mm: float
    diameter_error_mm: float
    diameter_bias_mm: float
    identity_ssim: float


def roi_disc(patch_size: int, patch_spacing_mm: float, radius_mm: float) -> np.ndarray:
    """Boolean disc of `radius_mm` around the centre of a square patch."""
    axis = (np.arange(patch_size) - (patch_size - 1) / 2) * patch_spacing_mm
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return np.asarray(yy**2 + xx**2 <= radius_mm**2)


def roi_radius_mm(source_diameter_mm: float, target_diameter_mm: float) -> float:
    """Radius of the lesion ROI (see the module docstring)."""
    return 0.75 * max(source_diameter_mm, target_diameter_mm) + 3.0


def segment_lesion(
    patch_hu: np.ndarray, roi: np.ndarray, threshold_hu: float = LESION_THRESHOLD_HU
) -> np.ndarray:
    """The lesion in a 2D patch: above-threshold voxels in the ROI, component at the centre.

    Args:
        patch_hu: (y, x) patch in HU, lesion at the centre.
        roi: boolean ROI of the same shape.
        threshold_hu: lesion threshold.

    Returns:
        Boolean mask (empty when nothing in the ROI is above threshold).
    """
    candidate = (patch_hu > threshold_hu) & roi
    labels, count = ndimage.label(candidate)
    if count == 0:
        return np.zeros_like(candidate)
    cy, cx = (np.asarray(patch_hu.shape) - 1) / 2
    at_centre = labels[round(cy), round(cx)]
    if at_centre:
        return np.asarray(labels == at_centre)
    # Nearest component to the centre (a cavitating lesion can be hollow at its centre).
    ys, xs = np.nonzero(labels)
    nearest = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
    return np.asarray(labels == labels[ys[nearest], xs[nearest]])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


def ssim_unit(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two window-unit images (data range 2)."""
    return float(structural_similarity(a, b, data_range=2.0, win_size=7))


def psnr_unit(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two window-unit images (data range 2); capped at 100 dB for identical ones."""
    if np.array_equal(a, b):
        return 100.0
    return float(peak_signal_noise_ratio(b, a, data_range=2.0))


def identity_ssim(rendered: np.ndarray, source: np.ndarray, roi: np.ndarray) -> float:
    """Mean local SSIM between rendered and input patches over the pixels outside the ROI."""
    _, ssim_map = structural_similarity(rendered, source, data_range=2.0, win_size=7, full=True)
    outside = ~roi
    if not outside.any():
        return 1.0
    return float(ssim_map[outside].mean())


def score_patch(
    rendered_unit: np.ndarray,
    source_unit: np.ndarray,
    target_unit: np.ndarray,
    target_mask: np.ndarray,
    *,
    source_diameter_mm: float,
    target_diameter_mm: float,
    patch_spacing_mm: float,
    window_low_hu: float,
    window_high_hu: float,
) -> LesionScores:
    """All lesion-fidelity scores of one rendered 2D patch.

    Args:
        rendered_unit: rendered patch (window units).
        source_unit: input patch (window units).
        target_unit: true future patch (window units).
        target_mask: true future lesion mask on the patch grid.
        source_diameter_mm: input lesion diameter.
        target_diameter_mm: true future lesion diameter.
        patch_spacing_mm: patch pixel size.
        window_low_hu: low end of the HU window.
        window_high_hu: high end of the HU window.

    Returns:
        The scores.
    """
    size = rendered_unit.shape[-1]
    roi = roi_disc(size, patch_spacing_mm, roi_radius_mm(source_diameter_mm, target_diameter_mm))
    rendered_hu = (rendered_unit + 1.0) * 0.5 * (window_high_hu - window_low_hu) + window_low_hu
    lesion = segment_lesion(rendered_hu, roi)
    diameter = equivalent_diameter_mm(lesion, (patch_spacing_mm, patch_spacing_mm))
    return LesionScores(
        ssim=ssim_unit(rendered_unit, target_unit),
        psnr_db=psnr_unit(rendered_unit, target_unit),
        dice=dice(lesion, target_mask > 0),
        diameter_mm=diameter,
        diameter_error_mm=abs(diameter - target_diameter_mm),
        diameter_bias_mm=diameter - target_diameter_mm,
        identity_ssim=identity_ssim(rendered_unit, source_unit, roi),
    )
