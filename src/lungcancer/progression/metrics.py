"""Fidelity measures of a rendered lesion patch against the true future scan.

The lesion is segmented the same way in every image that is scored (rendered, baselines, and
the true future itself as a check of the ruler):

1. Threshold: half-way between the input lesion's median density and the median of the aerated
   lung around it (a "half maximum" rule, clipped to -750..-300 HU): about -400 HU for a solid
   nodule, -700 HU for a part-solid one, -740 HU for ground glass. It comes from the *input*,
   so every method of a pair is cut at the same level.
2. ROI: a disc (a ball for 3D patches) around the patch centre of radius 0.75 x the larger
   of the input and target diameters + 3 mm, so a lesion that grows as predicted is inside it
   and distant vessels are not.
3. Background: pixels that were already above the threshold in the input outside its
   (2-pixel dilated) lesion (chest wall, mediastinum, vessels) are left out, of the segmentation
   and of the true mask alike: where a tumour abuts the chest wall, intensity cannot tell them
   apart.
4. The connected component at the centre (or nearest to it: a cavity can be hollow).

The diameter of a segmented lesion is its greatest diameter (`data.measure`), the definition
LungSim's truth and the T descriptor use.

The headline scores compare the segmented rendered lesion with LungSim's truth for the future
scan: its lesion mask (Dice) and its recorded greatest diameter (diameter error). Beside them,
`dice_same_ruler` and `diameter_error_same_ruler_mm` compare with the true future scan's lesion
*segmented by the same ruler* (what a reader comparing two scans would do, and usable on real
follow-up scans without masks). On LungSim the same-ruler numbers carry a bias no generator can
remove: the patient lies a few millimetres differently at each visit, so the input's background
tissue (excluded above) does not line up with the future scan's vessels, and the future's
segmentation picks up vessel stubs the input's anatomy does not have. Scoring the true future
itself shows both effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lungcancer.models.gan import ROI_DIAMETER_FRACTION, ROI_MARGIN_MM
from lungcancer.progression.patches import greatest_diameter_mm

THRESHOLD_RANGE_HU = (-750.0, -300.0)
DEFAULT_LUNG_HU = -850.0


@dataclass(frozen=True)
class LesionScores:
    """Scores of one rendered patch against the true future.

    Attributes:
        ssim: SSIM of the whole patch (window units, data range 2).
        psnr_db: PSNR of the whole patch (window units, data range 2).
        dice: Dice against LungSim's true future lesion mask (background tissue left out).
        diameter_mm: greatest diameter of the segmented lesion (0 when nothing is segmented).
        diameter_error_mm: |diameter_mm - LungSim's recorded future diameter|.
        diameter_bias_mm: diameter_mm - LungSim's recorded future diameter (> 0: too big).
        dice_same_ruler: Dice against the true future scan's lesion segmented the same way.
        diameter_error_same_ruler_mm: |diameter_mm - that segmentation's diameter|.
        identity_ssim: SSIM against the *input* patch outside the lesion ROI (1 = untouched).
    """

    ssim: float
    psnr_db: float
    dice: float
    diameter_mm: float
    diameter_error_mm: float
    diameter_bias_mm: float
    dice_same_ruler: float
    diameter_error_same_ruler_mm: float
    identity_ssim: float


def roi_disc(
    patch_size: int, patch_spacing_mm: float, radius_mm: float, ndim: int = 2
) -> np.ndarray:
    """Boolean disc (2D) or ball (3D) of `radius_mm` around the centre of a square patch."""
    axis = (np.arange(patch_size) - (patch_size - 1) / 2) * patch_spacing_mm
    mesh = np.meshgrid(*[axis] * ndim, indexing="ij")
    return np.asarray(sum(m**2 for m in mesh) <= radius_mm**2)


def roi_radius_mm(source_diameter_mm: float, target_diameter_mm: float) -> float:
    """Radius of the lesion ROI (see the module docstring)."""
    return ROI_DIAMETER_FRACTION * max(source_diameter_mm, target_diameter_mm) + ROI_MARGIN_MM


def lesion_threshold_hu(source_hu: np.ndarray, source_mask: np.ndarray) -> float:
    """Half-way between the input lesion's median HU and the aerated lung around it.

    Args:
        source_hu: input patch in HU.
        source_mask: input lesion mask on the same grid.

    Returns:
        The threshold, clipped to `THRESHOLD_RANGE_HU`.
    """
    mask = source_mask > 0
    if not mask.any():
        return THRESHOLD_RANGE_HU[1]
    lesion_hu = float(np.median(source_hu[mask]))
    ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(
        mask, iterations=2
    )
    aerated = ring & (source_hu < -500.0)
    lung_hu = float(np.median(source_hu[aerated])) if aerated.sum() >= 8 else DEFAULT_LUNG_HU
    return float(np.clip((lesion_hu + lung_hu) / 2, *THRESHOLD_RANGE_HU))


def background_tissue(
    source_hu: np.ndarray, source_mask: np.ndarray, threshold_hu: float
) -> np.ndarray:
    """Input pixels above the threshold that are not the input lesion (chest wall, vessels)."""
    lesion = ndimage.binary_dilation(source_mask > 0, iterations=2)
    return np.asarray((source_hu > threshold_hu) & ~lesion)


def segment_lesion(
    patch_hu: np.ndarray,
    roi: np.ndarray,
    threshold_hu: float,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """The lesion in a patch: above-threshold voxels in the ROI, component at the centre.

    Args:
        patch_hu: (y, x) or (z, y, x) patch in HU, lesion at the centre.
        roi: boolean ROI of the same shape.
        threshold_hu: lesion threshold.
        background: pixels never counted as lesion (see `background_tissue`).

    Returns:
        Boolean mask (empty when nothing in the ROI is above threshold).
    """
    candidate = (patch_hu > threshold_hu) & roi
    if background is not None:
        candidate &= ~background
    labels, count = ndimage.label(candidate)
    if count == 0:
        return np.zeros_like(candidate)
    centre = (np.asarray(patch_hu.shape) - 1) / 2
    at_centre = labels[tuple(round(float(c)) for c in centre)]
    if at_centre:
        return np.asarray(labels == at_centre)
    # Nearest component to the centre (a cavitating lesion can be hollow at its centre).
    voxels = np.argwhere(labels)
    nearest = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
    return np.asarray(labels == labels[tuple(nearest)])


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
    source_mask: np.ndarray,
    *,
    source_diameter_mm: float,
    target_diameter_mm: float,
    patch_spacing_mm: float,
    window_low_hu: float,
    window_high_hu: float,
) -> LesionScores:
    """All lesion-fidelity scores of one rendered patch, 2D or 3D (a ball for the ROI).

    Args:
        rendered_unit: rendered patch (window units).
        source_unit: input patch (window units).
        target_unit: true future patch (window units).
        target_mask: true future lesion mask on the patch grid.
        source_mask: input lesion mask on the patch grid (sets threshold and background).
        source_diameter_mm: input lesion diameter.
        target_diameter_mm: LungSim's recorded future lesion diameter.
        patch_spacing_mm: patch pixel size.
        window_low_hu: low end of the HU window.
        window_high_hu: high end of the HU window.

    Returns:
        The scores.
    """
    ruler = pair_ruler(
        source_unit,
        source_mask,
        source_diameter_mm=source_diameter_mm,
        target_diameter_mm=target_diameter_mm,
        patch_spacing_mm=patch_spacing_mm,
        window_low_hu=window_low_hu,
        window_high_hu=window_high_hu,
    )
    lesion = ruler.segment(rendered_unit)
    reference = ruler.segment(target_unit)
    diameter = ruler.diameter_mm(lesion)
    reference_diameter = ruler.diameter_mm(reference)
    return LesionScores(
        ssim=ssim_unit(rendered_unit, target_unit),
        psnr_db=psnr_unit(rendered_unit, target_unit),
        dice=dice(lesion, (target_mask > 0) & ~ruler.background),
        diameter_mm=diameter,
        diameter_error_mm=abs(diameter - target_diameter_mm),
        diameter_bias_mm=diameter - target_diameter_mm,
        dice_same_ruler=dice(lesion, reference),
        diameter_error_same_ruler_mm=abs(diameter - reference_diameter),
        identity_ssim=identity_ssim(rendered_unit, source_unit, ruler.roi),
    )


@dataclass(frozen=True)
class Ruler:
    """The lesion ruler of one pair (the module docstring's steps 1-3), set by its input.

    Attributes:
        roi: boolean ROI of the patch.
        threshold_hu: the input's half-way threshold.
        background: input tissue above the threshold outside its lesion, never counted.
        window_low_hu: low end of the HU window.
        span_hu: half the window's width (window units to HU).
        spacing_mm: the patch's pixel size per axis.
    """

    roi: np.ndarray
    threshold_hu: float
    background: np.ndarray
    window_low_hu: float
    span_hu: float
    spacing_mm: tuple[float, ...]

    def segment(self, patch_unit: np.ndarray) -> np.ndarray:
        """The lesion in a patch (window units) as this ruler cuts it (step 4)."""
        patch_hu = (patch_unit + 1.0) * self.span_hu + self.window_low_hu
        return segment_lesion(patch_hu, self.roi, self.threshold_hu, self.background)

    def diameter_mm(self, lesion: np.ndarray) -> float:
        """Greatest diameter of a segmented lesion (0 when empty)."""
        return greatest_diameter_mm(lesion, self.spacing_mm)


def pair_ruler(
    source_unit: np.ndarray,
    source_mask: np.ndarray,
    *,
    source_diameter_mm: float,
    target_diameter_mm: float,
    patch_spacing_mm: float,
    window_low_hu: float,
    window_high_hu: float,
) -> Ruler:
    """The ruler every method of a pair is read with (see `score_patch` for the arguments)."""
    size, ndim = source_unit.shape[-1], source_unit.ndim
    radius = roi_radius_mm(source_diameter_mm, target_diameter_mm)
    span = 0.5 * (window_high_hu - window_low_hu)
    source_hu = (source_unit + 1.0) * span + window_low_hu
    threshold = lesion_threshold_hu(source_hu, source_mask)
    return Ruler(
        roi=roi_disc(size, patch_spacing_mm, radius, ndim),
        threshold_hu=threshold,
        background=background_tissue(source_hu, source_mask, threshold),
        window_low_hu=window_low_hu,
        span_hu=span,
        spacing_mm=(patch_spacing_mm,) * ndim,
    )


def ruler_on_inputs(
    source_unit: np.ndarray,
    source_mask: np.ndarray,
    source_diameter_mm: np.ndarray,
    target_diameter_mm: np.ndarray,
    spacing_mm: np.ndarray,
    window_hu: tuple[float, float],
) -> list[LesionScores]:
    """The ruler on each unchanged input lesion, in its pair's ROI.

    Each score's `diameter_mm` less the input's recorded diameter is how far the ruler
    overshoots that lesion. On LungSim the ruler reads inputs larger than their masks: voxels
    above the half-way threshold in the one- or two-voxel shell around the lesion, which the
    background rule leaves in (its edge, spicules LungSim leaves out of its diameter, vessel
    roots). A real-looking lesion of a target size reads about that much over the target too.

    Args:
        source_unit: (N, 1, *patch) input patches in window units.
        source_mask: (N, 1, *patch) their lesion masks.
        source_diameter_mm: (N,) the inputs' recorded diameters.
        target_diameter_mm: (N,) the future diameters (they set the ROI, as for the methods).
        spacing_mm: (N,) patch pixel sizes.
        window_hu: the window's (low, high) HU.
    """
    return [
        score_patch(
            source_unit[i, 0],
            source_unit[i, 0],
            source_unit[i, 0],
            source_mask[i, 0],
            source_mask[i, 0],
            source_diameter_mm=float(source_diameter_mm[i]),
            target_diameter_mm=float(target_diameter_mm[i]),
            patch_spacing_mm=float(spacing_mm[i]),
            window_low_hu=window_hu[0],
            window_high_hu=window_hu[1],
        )
        for i in range(len(source_unit))
    ]
