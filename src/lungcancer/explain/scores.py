"""How well a heat map points at the lesion: the pointing game and the energy share.

Pointing game (Zhang et al. 2018, "Top-down neural attention by excitation backprop"): a map
scores a hit when its maximum lies on the lesion, allowing a tolerance of a few pixels because
Grad-CAM maps come from a feature grid 16-32 times coarser than the image. Our default is
`DEFAULT_TOLERANCE_PX = 3` pixels of the network input (128 px by default), about 2% of the
image side, in the spirit of the original 15 px at 224 px but stricter since lung nodules are
small. A map with no positive evidence (all zero) is a miss.

Energy share (the "energy-based pointing game" of Score-CAM, Wang et al. 2020): the fraction of
the map's total mass that lies inside the mask; 0 for an all-zero map, so always in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcancer.errors import GeometryMismatchError

DEFAULT_TOLERANCE_PX = 3.0


def _check_shapes(cam: np.ndarray, mask: np.ndarray) -> None:
    if cam.shape != mask.shape:
        raise GeometryMismatchError(
            "the heat map and the lesion mask have different shapes",
            expected=f"a mask of shape {cam.shape} (the network input grid)",
            found=f"shape {mask.shape}",
            hint="resample the mask with the same preprocessing as the image",
        )


def pointing_game_hit(
    cam: np.ndarray, mask: np.ndarray, *, tolerance_px: float = DEFAULT_TOLERANCE_PX
) -> bool:
    """Whether the map's maximum lies within `tolerance_px` pixels (voxels) of the mask.

    Args:
        cam: a non-negative heat map, 2D or 3D.
        mask: a lesion mask of the same shape (non-zero = lesion).
        tolerance_px: allowed Euclidean distance, in pixels, from the maximum to the lesion.

    Returns:
        True for a hit. An all-zero map or an empty mask is a miss.
    """
    _check_shapes(cam, mask)
    lesion = mask > 0
    if not lesion.any() or not np.any(cam > 0):
        return False
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    distance_to_lesion = ndimage.distance_transform_edt(~lesion)
    return bool(distance_to_lesion[peak] <= tolerance_px)


def energy_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of the map's total (non-negative) mass inside the mask, in [0, 1].

    Args:
        cam: a heat map, 2D or 3D; negative values are clipped to 0.
        mask: a lesion mask of the same shape (non-zero = lesion).

    Returns:
        Energy inside / energy overall; 0.0 for an all-zero map.
    """
    _check_shapes(cam, mask)
    energy = np.clip(cam.astype(np.float64), 0.0, None)
    total = float(energy.sum())
    if total <= 0.0:
        return 0.0
    return float(min(1.0, energy[mask > 0].sum() / total))


@dataclass(frozen=True)
class LocalisationSummary:
    """Pointing game and energy share over a set of (map, mask) pairs.

    Attributes:
        n: number of pairs scored.
        hit_rate: share of pointing-game hits.
        mean_energy_share: mean energy share.
        tolerance_px: the pointing-game tolerance used.
    """

    n: int
    hit_rate: float
    mean_energy_share: float
    tolerance_px: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON reports."""
        return {
            "n": self.n,
            "pointing_game_hit_rate": self.hit_rate,
            "mean_energy_share": self.mean_energy_share,
            "tolerance_px": self.tolerance_px,
        }


def summarise(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], *, tolerance_px: float = DEFAULT_TOLERANCE_PX
) -> LocalisationSummary:
    """Score every (map, mask) pair; NaN rates when there is no pair."""
    hits: list[bool] = []
    shares: list[float] = []
    for cam, mask in pairs:
        hits.append(pointing_game_hit(cam, mask, tolerance_px=tolerance_px))
        shares.append(energy_share(cam, mask))
    if not hits:
        return LocalisationSummary(0, float("nan"), float("nan"), tolerance_px)
    return LocalisationSummary(
        n=len(hits),
        hit_rate=float(np.mean(hits)),
        mean_energy_share=float(np.mean(shares)),
        tolerance_px=tolerance_px,
    )
