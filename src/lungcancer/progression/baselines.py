"""Geometric growth (the GAN's prior and a baseline) and the "no change" baseline.

"No change" copies the input: what a viewer would see if nothing grew. "Geometric growth"
magnifies the lesion region about the patch centre by target / input diameter and writes the
magnified lesion over the input (the background outside the grown lesion keeps the input's
pixels): the best a purely geometric model can do without knowing how tumours look.

The generator starts from the same geometric growth and learns a residual on top of it, so
the baseline is literally the GAN's starting point and the evaluation measures what the
learned part adds. One batched torch implementation serves both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def no_change(source: np.ndarray) -> np.ndarray:
    """The input patch, unchanged (a copy)."""
    return source.copy()


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (B, C, *spatial) masks by a square (cube) of side 2 * pixels + 1; float out.

    One max-pool per axis (the maximum over a cube is the maximum of per-axis maxima): the same
    result as one cubic max-pool, which took 4% of a 3D GAN step.
    """
    out = mask.float()
    if pixels <= 0:
        return out
    dims = out.ndim - 2
    pool = F.max_pool2d if dims == 2 else F.max_pool3d
    for axis in range(dims):
        kernel, padding = [1] * dims, [0] * dims
        kernel[axis], padding[axis] = 2 * pixels + 1, pixels
        out = pool(out, kernel_size=kernel, stride=1, padding=padding)
    return out


def grow_lesion(
    source: torch.Tensor, source_mask: torch.Tensor, scale: torch.Tensor, margin_px: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnify each lesion about its patch centre by `scale` and paste it over the input.

    Args:
        source: (B, 1, *spatial) patches (any intensity unit), lesions at the centre.
        source_mask: (B, 1, *spatial) 0/1 input lesion masks.
        scale: (B,) target / input diameter (> 0; below 1 shrinks the lesion, and the vacated
            rim is filled with the median of the input's surroundings of the lesion).
        margin_px: the pasted region is the magnified mask dilated by this many pixels, so the
            lesion's blurred boundary comes along.

    Returns:
        The grown patches and the grown lesion masks (0/1), both (B, 1, *spatial), float32.
    """
    source = source.float()
    mask = source_mask.float()
    dims = source.ndim - 2
    batch = source.shape[0]
    # Output pixel p samples the input at p / scale (normalised coordinates centred on the
    # patch centre, align_corners=False: the centre is pixel (n - 1) / 2 as in numpy).
    theta = torch.zeros(batch, dims, dims + 1, dtype=torch.float32, device=source.device)
    inv = 1.0 / scale.float().clamp_min(1e-3)
    for axis in range(dims):
        theta[:, axis, axis] = inv
    grid = F.affine_grid(theta, list(source.shape), align_corners=False)
    zoomed = F.grid_sample(
        source, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    grown_mask = (
        F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
    ).float()
    region = dilate(grown_mask, margin_px) > 0
    out = source.clone()
    shrinking = scale < 1.0
    if bool(shrinking.any()):
        old = dilate(mask, margin_px) > 0
        ring = (dilate(mask, 3) > 0) & ~(mask > 0)
        for i in torch.nonzero(shrinking).flatten().tolist():
            around = source[i][ring[i]]
            fill = around.median() if around.numel() else source[i].median()
            vacated = old[i] & ~region[i]
            out[i][vacated] = fill
    out = torch.where(region, zoomed, out)
    return out, grown_mask


def geometric_growth(
    source: np.ndarray, source_mask: np.ndarray, scale: float, margin_px: int = 1
) -> np.ndarray:
    """Numpy front of `grow_lesion` for one 2D or 3D patch; same shape and dtype out."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    grown, _ = grow_lesion(
        torch.from_numpy(np.asarray(source, np.float32))[None, None],
        torch.from_numpy(np.asarray(source_mask, np.float32))[None, None],
        torch.tensor([float(scale)]),
        margin_px,
    )
    return grown[0, 0].numpy().astype(source.dtype, copy=False)
