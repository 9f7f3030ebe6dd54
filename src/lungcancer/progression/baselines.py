"""The two baselines the GAN must beat: "no change" and "geometric growth".

"No change" copies the input: what a viewer would see if nothing grew. "Geometric growth"
magnifies the lesion region about the patch centre by target / input diameter and writes the
magnified lesion over the input (the background outside the grown lesion keeps the input's
pixels): the best a purely geometric model can do without knowing how tumours look.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def no_change(source: np.ndarray) -> np.ndarray:
    """The input patch, unchanged (a copy)."""
    return source.copy()


def geometric_growth(
    source: np.ndarray, source_mask: np.ndarray, scale: float, margin_px: float = 1.0
) -> np.ndarray:
    """Magnify the lesion about the patch centre by `scale` and paste it over the input.

    Args:
        source: 2D or 3D patch (any intensity unit), lesion at the centre.
        source_mask: the input lesion mask on the same grid.
        scale: target diameter / input diameter (> 0; < 1 shrinks, and the input shows around
            the smaller lesion).
        margin_px: the pasted region is the magnified mask dilated by this many pixels, so the
            lesion's boundary blur comes along.

    Returns:
        The grown patch, same shape and dtype.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    centre = (np.asarray(source.shape, np.float64) - 1) / 2
    # Output pixel p samples the input at c + (p - c) / scale: magnification about the centre.
    matrix = np.eye(source.ndim) / scale
    offset = centre - matrix @ centre
    zoomed = ndimage.affine_transform(
        source.astype(np.float32), matrix, offset=offset, order=1, mode="nearest"
    )
    zoomed_mask = ndimage.affine_transform(
        source_mask.astype(np.float32), matrix, offset=offset, order=1, mode="constant"
    )
    region = zoomed_mask > 0.5
    if margin_px > 0:
        region = ndimage.binary_dilation(region, iterations=round(margin_px))
    if scale < 1.0:
        # A shrinking lesion must also remove the old lesion outside the new one: fill the
        # vacated ring with the surroundings of the input lesion (its median outside the mask).
        vacated = ndimage.binary_dilation(source_mask > 0, iterations=round(margin_px)) & ~region
        ring = ndimage.binary_dilation(source_mask > 0, iterations=3) & ~(source_mask > 0)
        fill = float(np.median(source[ring])) if ring.any() else float(np.median(source))
        out = source.astype(np.float32, copy=True)
        out[vacated] = fill
    else:
        out = source.astype(np.float32, copy=True)
    out[region] = zoomed[region]
    return out.astype(source.dtype, copy=False)
