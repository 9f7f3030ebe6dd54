"""From a `Scan` to a network input, deterministically; and seeded training augmentation.

`preprocess` picks the sample's slice (2D) or patch (3D), crops in-plane (the whole slice, the
lung field, or a patch around the lesion), resizes, and windows HU into one [0, 1] channel per
window. Cropping and resampling are one interpolation: the crop region is chosen in native
voxels so that, resized to the output size, it has the requested physical spacing.

In-plane rules, with S = `image_size` (2D) or `patch_size_3d` (3D):
- `spacing_mm` unset: the region (whole slice, lung box made square, or a patch of S native
  voxels around the lesion) is resized to S x S.
- `spacing_mm` set: the region is S * spacing_mm wide, centred on the slice, lung box or lesion,
  so every output pixel covers `spacing_mm` of anatomy whatever the scanner's pixel size.
Along z, a 3D patch around a lesion takes S native slices; without a lesion centre the whole
volume is resized to S slices. Outside the image counts as air (-1024 HU, or 0 for unit images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lungcancer.config import DataConfig, WindowConfig
from lungcancer.errors import ConfigError
from lungcancer.io import Scan

AIR_HU = -1024.0
# Below this a pixel inside the body is lung (or airway); the body is above it.
_LUNG_THRESHOLD_HU = -400.0
# A lung field smaller than this fraction of the slice is noise, not a lung.
_MIN_LUNG_FRACTION = 0.01
# The lung box grows by this fraction on each side so the pleura stays in view.
_LUNG_MARGIN = 0.05
# Slices sampled to find the lung box of a whole volume.
_LUNG_BOX_SLICES = 5

# Bump when preprocessing changes its output, so cached arrays are not reused across versions.
PREPROCESS_VERSION = 1


def preprocess_fields(cfg: DataConfig) -> dict[str, Any]:
    """The config fields that decide `preprocess`'s output (the cache key uses exactly these)."""
    return {
        "version": PREPROCESS_VERSION,
        "windows": [(w.center_hu, w.width_hu) for w in cfg.windows],
        "image_size": cfg.image_size,
        "spacing_mm": None if cfg.spacing_mm is None else list(cfg.spacing_mm),
        "lung_crop": cfg.lung_crop,
        "patch_size_3d": cfg.patch_size_3d,
        "spatial_dims": cfg.spatial_dims,
        # Only when on, so caches written before slabs existed keep their keys.
        **(
            {"slab": [cfg.slab_slices, cfg.slab_spacing_mm]}
            if cfg.slab_slices > 1 and cfg.spatial_dims == 2
            else {}
        ),
    }


def input_channels(cfg: DataConfig) -> int:
    """How many channels `preprocess` gives: one per window, times the slab's slices in 2D."""
    slices = cfg.slab_slices if cfg.spatial_dims == 2 else 1
    return len(cfg.windows) * slices


def slab_indices(z: int, depth: int, slices: int, spacing_mm: float, slice_mm: float) -> list[int]:
    """Slice indices of a slab centred on `z`: the centre first, then nearest-first pairs
    below and above (so channel 0 is always the sample's own slice), clamped to the volume.

    Args:
        z: the sample's slice.
        depth: slices in the volume.
        slices: slab size (odd).
        spacing_mm: wanted distance between slab slices (0: adjacent slices).
        slice_mm: the volume's slice spacing.
    """
    step = max(1, round(spacing_mm / slice_mm)) if spacing_mm > 0 and slice_mm > 0 else 1
    order = [z]
    for k in range(1, slices // 2 + 1):
        order += [z - k * step, z + k * step]
    return [min(max(i, 0), depth - 1) for i in order]


def window(array: np.ndarray, intensity: str, windows: tuple[WindowConfig, ...]) -> np.ndarray:
    """One [0, 1] channel per window; unit-range images are repeated once per window.

    Args:
        array: HU or unit intensities, any shape.
        intensity: "HU" or "unit".
        windows: the display windows (centre/width in HU).

    Returns:
        float32 array of shape (len(windows), *array.shape).
    """
    if intensity != "HU":
        unit = np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)
        return np.repeat(unit[np.newaxis], len(windows), axis=0)
    channels = []
    for w in windows:
        low = w.center_hu - w.width_hu / 2.0
        channels.append(np.clip((array - low) / w.width_hu, 0.0, 1.0))
    return np.stack(channels).astype(np.float32, copy=False)


def lung_fields(slice_2d: np.ndarray, intensity: str) -> list[np.ndarray]:
    """The lung fields of one slice as boolean masks, largest first (none: an empty list).

    Dark regions inside the body are the lungs: pixels below -400 HU (Otsu's threshold for
    unit-range images), minus the air around the patient (dark regions touching the border),
    cleaned by a morphological opening; regions under 1% of the slice are ignored.
    """
    if intensity == "HU":
        threshold = _LUNG_THRESHOLD_HU
    else:
        from skimage.filters import threshold_otsu

        if float(slice_2d.max()) == float(slice_2d.min()):
            return []
        threshold = float(threshold_otsu(slice_2d))
    dark = slice_2d < threshold
    labels, count = ndimage.label(dark)
    if count == 0:
        return []
    border = np.unique(
        np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ).tolist()
    inside = dark & ~np.isin(labels, border)
    inside = ndimage.binary_opening(inside, iterations=2)
    labels, count = ndimage.label(inside)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= _MIN_LUNG_FRACTION * slice_2d.size)
    return [labels == k + 1 for k in keep[np.argsort(sizes[keep])[::-1]]]


def lung_box(slice_2d: np.ndarray, intensity: str) -> tuple[int, int, int, int] | None:
    """Bounding box (y0, y1, x0, x1) of the lung fields (`lung_fields`) of one slice, with a
    5% margin, or None if none is found."""
    fields = lung_fields(slice_2d, intensity)
    if not fields:
        return None
    ys, xs = np.nonzero(np.logical_or.reduce(fields))
    height, width = slice_2d.shape
    margin_y, margin_x = int(_LUNG_MARGIN * height), int(_LUNG_MARGIN * width)
    return (
        max(0, int(ys.min()) - margin_y),
        min(height, int(ys.max()) + 1 + margin_y),
        max(0, int(xs.min()) - margin_x),
        min(width, int(xs.max()) + 1 + margin_x),
    )


def _volume_lung_box(stack: np.ndarray, intensity: str) -> tuple[int, int, int, int] | None:
    depth = stack.shape[0]
    picks = sorted({int(z) for z in np.linspace(depth * 0.25, depth * 0.75, _LUNG_BOX_SLICES)})
    boxes = [b for z in picks if (b := lung_box(stack[min(z, depth - 1)], intensity))]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _crop_padded(stack: np.ndarray, y0: int, y1: int, x0: int, x1: int, fill: float) -> np.ndarray:
    """stack[:, y0:y1, x0:x1] where out-of-range parts are `fill`."""
    depth, height, width = stack.shape
    out = np.full((depth, y1 - y0, x1 - x0), fill, dtype=np.float32)
    sy0, sy1 = max(y0, 0), min(y1, height)
    sx0, sx1 = max(x0, 0), min(x1, width)
    if sy0 < sy1 and sx0 < sx1:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = stack[:, sy0:sy1, sx0:sx1]
    return out


def _centred(centre: float, size: float) -> tuple[int, int]:
    start = round(centre - size / 2.0)
    return start, start + max(1, round(size))


def _resize_plane(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize (D, H, W) to (D, size, size), anti-aliased when shrinking."""
    if stack.shape[1:] == (size, size):
        return stack
    tensor = torch.from_numpy(np.ascontiguousarray(stack))[np.newaxis]
    resized = F.interpolate(
        tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].numpy()


def _resize_depth(stack: np.ndarray, depth: int) -> np.ndarray:
    if stack.shape[0] == depth:
        return stack
    tensor = torch.from_numpy(np.ascontiguousarray(stack))[np.newaxis, np.newaxis]
    resized = F.interpolate(
        tensor, size=(depth, *stack.shape[1:]), mode="trilinear", align_corners=False
    )
    return resized[0, 0].numpy()


def _uses_spacing(scan: Scan, cfg: DataConfig, notes: list[str] | None) -> bool:
    if cfg.spacing_mm is None:
        return False
    assumed = "assumed" in str(scan.meta.get("spacing_from", ""))
    if assumed and notes is not None:
        notes.append("the image carries no pixel spacing, so spacing_mm was not applied")
    return not assumed


def _plane_region(
    stack: np.ndarray,
    scan: Scan,
    cfg: DataConfig,
    size: int,
    lesion_yx: tuple[float, float] | None,
    notes: list[str] | None,
) -> tuple[int, int, int, int]:
    """The in-plane crop (y0, y1, x0, x1) in native voxels, before resizing to size x size."""
    height, width = stack.shape[1:]
    spacing_y, spacing_x = scan.spacing_mm[1], scan.spacing_mm[2]
    box: tuple[int, int, int, int] | None = None
    if lesion_yx is None and cfg.lung_crop:
        box = lung_box(stack[0], scan.intensity) if len(stack) == 1 else None
        if len(stack) > 1:
            box = _volume_lung_box(stack, scan.intensity)
        if box is None and notes is not None:
            notes.append("no lung field found; the whole image was used")
    if lesion_yx is not None:
        centre_yx = lesion_yx
    else:
        y_lo, y_hi, x_lo, x_hi = box if box is not None else (0, height, 0, width)
        centre_yx = ((y_lo + y_hi) / 2.0, (x_lo + x_hi) / 2.0)
    if _uses_spacing(scan, cfg, notes):
        assert cfg.spacing_mm is not None
        side_y = size * cfg.spacing_mm[0] / spacing_y
        side_x = size * cfg.spacing_mm[1] / spacing_x
    elif lesion_yx is not None:
        side_y = side_x = float(size)
    elif box is not None:
        # A lung box is made square (in mm) so resizing does not distort the anatomy.
        side_mm = max((box[1] - box[0]) * spacing_y, (box[3] - box[2]) * spacing_x)
        side_y, side_x = side_mm / spacing_y, side_mm / spacing_x
    else:
        side_y, side_x = float(height), float(width)
    y0, y1 = _centred(centre_yx[0], side_y)
    x0, x1 = _centred(centre_yx[1], side_x)
    return y0, y1, x0, x1


def _pick_slice(scan: Scan, slice_index: int, center_zyx: tuple[float, ...] | None) -> int:
    depth = scan.shape[0]
    if slice_index >= 0:
        z = slice_index
    elif center_zyx is not None:
        z = round(center_zyx[0])
    else:
        z = depth // 2
    return min(max(z, 0), depth - 1)


def _slice_region(
    scan: Scan,
    cfg: DataConfig,
    slice_index: int,
    center_zyx: tuple[float, float, float] | None,
    notes: list[str] | None,
) -> tuple[int, tuple[int, int, int, int]]:
    """The 2D sample's axial slice and its in-plane crop, found on that slice of the image:
    what `preprocess` cuts from the image and `preprocess_mask` from the mask."""
    z = _pick_slice(scan, slice_index, center_zyx)
    return z, _plane_region(scan.array[z : z + 1], scan, cfg, cfg.image_size, None, notes)


def preprocess(
    scan: Scan,
    cfg: DataConfig,
    *,
    slice_index: int = -1,
    center_zyx: tuple[float, float, float] | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Turn a scan into a network input, the same way every time.

    Args:
        scan: the image (HU or unit range).
        cfg: windows, output size, target spacing, lung crop and dimensionality.
        slice_index: for 2D, the axial slice to use; -1 takes the lesion centre's slice, else
            the middle slice.
        center_zyx: lesion centre in voxels; for 3D the patch is centred on it (else the whole
            volume is used).
        notes: if given, collects what was not done as asked (no lung found, no spacing known).

    Returns:
        float32 in [0, 1]: (C, S, S) for 2D with S = image_size, (C, P, P, P) for 3D with
        P = patch_size_3d; one channel per window.
    """
    fill = AIR_HU if scan.intensity == "HU" else 0.0
    if cfg.spatial_dims == 2:
        # The crop is found on the sample's own slice and applied to the whole slab.
        z, (y0, y1, x0, x1) = _slice_region(scan, cfg, slice_index, center_zyx, notes)
        # One slice is a slab of one; 2.5D adds the neighbours (`slab_slices`).
        slices = max(cfg.slab_slices, 1)
        if slices % 2 == 0:
            raise ConfigError(
                "data.slab_slices must be odd (the sample's slice and pairs around it)",
                found=str(cfg.slab_slices),
            )
        picks = slab_indices(z, scan.shape[0], slices, cfg.slab_spacing_mm, scan.spacing_mm[0])
        if notes is not None and scan.shape[0] < slices:
            notes.append(
                f"2.5D input of {slices} slices from an image with {scan.shape[0]}: "
                "missing neighbours repeat the nearest slice"
            )
        slab = _crop_padded(scan.array[picks], y0, y1, x0, x1, fill)
        planes = _resize_plane(slab, cfg.image_size)
        # (windows, slices, S, S) -> windows-major channels: window 0's slices first.
        return window(planes, scan.intensity, cfg.windows).reshape(-1, *planes.shape[1:])
    size = cfg.patch_size_3d
    if center_zyx is None:
        stack = scan.array
        y0, y1, x0, x1 = _plane_region(stack, scan, cfg, size, None, notes)
        volume = _resize_plane(_crop_padded(stack, y0, y1, x0, x1, fill), size)
        return window(_resize_depth(volume, size), scan.intensity, cfg.windows)
    if cfg.lung_crop and notes is not None:
        notes.append("lung crop does not apply to a patch around a lesion")
    z0, z1 = _centred(center_zyx[0], float(size))
    depth = scan.shape[0]
    lo, hi = max(z0, 0), min(z1, depth)
    stack = np.full((size, *scan.shape[1:]), fill, dtype=np.float32)
    if lo < hi:
        stack[lo - z0 : hi - z0] = scan.array[lo:hi]
    lesion_yx = (center_zyx[1], center_zyx[2])
    y0, y1, x0, x1 = _plane_region(stack, scan, cfg, size, lesion_yx, notes)
    volume = _resize_plane(_crop_padded(stack, y0, y1, x0, x1, fill), size)
    return window(volume, scan.intensity, cfg.windows)


def preprocess_mask(
    scan: Scan,
    mask: np.ndarray,
    cfg: DataConfig,
    *,
    slice_index: int = -1,
    center_zyx: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """A lesion mask on the network input's grid: the crop `preprocess` takes of the image
    (found on the image, so a lung crop matches), resized the same way. 2D only.

    Args:
        scan: the image the mask belongs to.
        mask: (Z, Y, X) mask of the scan's shape (nonzero = lesion).
        cfg: the same preprocessing settings as the image's.
        slice_index: as for `preprocess`.
        center_zyx: as for `preprocess`.

    Returns:
        float32 (S, S) with S = image_size: the share of each input pixel the lesion covers.
    """
    if cfg.spatial_dims != 2:
        raise ConfigError(
            "lesion masks on the input grid are made for 2D inputs only",
            found=f"spatial_dims {cfg.spatial_dims}",
        )
    z, (y0, y1, x0, x1) = _slice_region(scan, cfg, slice_index, center_zyx, None)
    plane = (np.asarray(mask[z : z + 1]) > 0).astype(np.float32)
    return _resize_plane(_crop_padded(plane, y0, y1, x0, x1, 0.0), cfg.image_size)[0]


def affine_sample(
    x: torch.Tensor, rotation: np.ndarray, zoom: np.ndarray, shift_px: np.ndarray
) -> torch.Tensor:
    """Rotate, zoom and shift a (C, *spatial) sample about its centre: bilinear, zeros outside.

    Args:
        x: the sample (square or cubic in space, as network inputs are).
        rotation: (dims, dims) rotation acting on array axes (y, x) or (z, y, x).
        zoom: magnification per axis (> 1 enlarges the content).
        shift_px: how far the content moves along each axis, in pixels.

    Returns:
        The resampled sample, same shape.
    """
    spatial = np.asarray(x.shape[1:], dtype=np.float64)
    # affine_grid maps each output position to where it samples the input, in [-1, 1] with axes
    # ordered x, y(, z): the reverse of the array's. Sampling at R diag(1/zoom) p - shift shows
    # the content zoomed by `zoom`, turned by R^-1 and moved by `shift`.
    matrix = (rotation / zoom[None, :])[::-1, ::-1]
    shift = (-2.0 * np.asarray(shift_px, dtype=np.float64) / spatial)[::-1]
    theta = torch.from_numpy(np.concatenate([matrix, shift[:, None]], axis=1)).float()
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    out = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0]


class Augmenter:
    """Seeded training augmentation for (C, H, W) or (C, D, H, W) arrays in [0, 1].

    Flips, a small affine (rotation and shift, plus a zoom of +-`scale` when asked), an optional
    cheap elastic warp (2D only: 3D elastic costs more than a training step), Gaussian noise
    and an intensity jitter. Zoom and warping are off by default because they change the size
    of a tumour, which is what its T descriptor (and so its stage) is. The jitter acts
    on windowed values, where a shift of 0.03 is about +-45 HU of window level and a scale of
    +-10% is +-10% of window width: HU-aware without keeping HU around. Output is clipped back
    to [0, 1].

    The draws follow MONAI's RandFlip / RandAffine / RandGaussianNoise / RandScaleIntensity /
    RandShiftIntensity (same probabilities and ranges), written as plain tensor operations:
    MONAI's versions cost about 10 ms per 2x128x128 sample here (metadata tracking and grid
    building), as much as a third of a DenseNet121 training step and most of a small CNN's,
    against well under 1 ms for these. Only the optional elastic warp still uses MONAI.

    Args:
        spatial_dims: 2 or 3.
        seed: initial random state; `reseed` restarts it (one stream per DataLoader worker).
        scale: largest relative zoom (0: none).
        elastic: add the elastic warp (2D).
        flip: flip left-right (every axis in 3D) with probability 0.5 each.
    """

    def __init__(
        self,
        spatial_dims: int,
        seed: int = 0,
        *,
        scale: float = 0.0,
        elastic: bool = False,
        flip: bool = True,
    ) -> None:
        self.spatial_dims = spatial_dims
        self.scale = scale
        self.flip = flip
        # (probability, largest rotation in radians per axis) of the affine; translation in
        # pixels is in-plane only, as before.
        self._affine_prob, self._rotate_rad = (0.5, 0.15) if spatial_dims == 2 else (0.3, 0.1)
        self._translate_px = 4.0 if spatial_dims == 2 else 0.0
        self._elastic: Any = None
        if elastic and spatial_dims == 2:
            from monai.transforms import Rand2DElastic

            self._elastic = Rand2DElastic(
                spacing=(32, 32), magnitude_range=(0.5, 1.5), prob=1.0, padding_mode="zeros"
            )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream at `seed` (same seed, same augmentations)."""
        self._rng = np.random.default_rng(seed % (2**32))
        self._noise = torch.Generator().manual_seed(seed % (2**32))
        if self._elastic is not None:
            self._elastic.set_random_state(seed=seed % (2**32))

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        """A random rotation, shift (and zoom) of one sample."""
        rng = self._rng
        dims = self.spatial_dims
        rotation = np.eye(dims)
        for plane in [(0, 1)] if dims == 2 else [(1, 2), (0, 2), (0, 1)]:
            angle = rng.uniform(-self._rotate_rad, self._rotate_rad)
            c, s = np.cos(angle), np.sin(angle)
            step = np.eye(dims)
            (i, j) = plane
            step[i, i], step[i, j], step[j, i], step[j, j] = c, -s, s, c
            rotation = rotation @ step
        zoom = (
            1.0 + rng.uniform(-self.scale, self.scale, size=dims) if self.scale else np.ones(dims)
        )
        shift_px = rng.uniform(-self._translate_px, self._translate_px, size=dims)
        return affine_sample(x, rotation, zoom, shift_px)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Augment one sample; returns float32 in [0, 1] of the same shape."""
        return self._augment(array, None)[0]

    def augment_pair(self, array: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment a sample and its (H, W) lesion mask with the same flips, affine and warp;
        noise and intensity changes touch the image only. The image's draws are exactly
        those `__call__` makes, so a run with masks sees the same images as one without."""
        image, moved = self._augment(array, mask)
        assert moved is not None
        return image, moved

    def _augment(
        self, array: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rng = self._rng
        channels = array.shape[0]
        # A copy: cached inputs are read-only memory maps. A mask rides along as one more
        # channel through the geometric steps.
        x = torch.from_numpy(np.array(array, dtype=np.float32))
        if mask is not None:
            x = torch.cat([x, torch.from_numpy(np.array(mask, dtype=np.float32))[None]])
        flip_dims = [1 + a for a in range(self.spatial_dims) if self.spatial_dims == 3 or a == 1]
        # Drawn even when flips are off, so the other draws stay the same stream.
        flips = [d for d in flip_dims if rng.random() < 0.5]
        if flips and self.flip:
            x = torch.flip(x, flips)
        if rng.random() < self._affine_prob:
            x = self._affine(x)
        if self._elastic is not None and rng.random() < 0.2:
            x = torch.as_tensor(self._elastic(x)).float()
        moved = x[channels:, ...].numpy()[0] if mask is not None else None
        x = x[:channels]
        if rng.random() < 0.3:
            std = rng.uniform(0.0, 0.02)
            x = x + std * torch.randn(x.shape, generator=self._noise)
        if rng.random() < 0.3:
            x = x * (1.0 + rng.uniform(-0.1, 0.1))
        if rng.random() < 0.3:
            x = x + rng.uniform(-0.03, 0.03)
        return np.clip(x.numpy(), 0.0, 1.0).astype(np.float32, copy=False), moved
