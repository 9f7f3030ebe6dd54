"""Losses of the progression GAN and the DiffAugment it trains with.

Adversarial terms are hinge losses; the discriminator is regularised with a lazy R1 penalty
(StyleGAN2: every `k` steps, scaled by `k` so its average strength does not depend on `k`).
Reconstruction terms compare a rendered patch with the true future scan (paired mode); the size
term is what makes a lesion *grow*: it matches the soft lesion area inside the ROI, which an L1
loss alone under-weights when the lesion is a few percent of the patch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(D(fake))."""
    return -fake_logits.float().mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared gradient norm of D's output sum w.r.t. real inputs.

    Args:
        real_logits: D's logits on `real_inputs` (computed with autograd enabled, in fp32).
        real_inputs: the real batch, with `requires_grad=True`.

    Returns:
        Scalar tensor (multiply by gamma / 2 outside).
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_inputs, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


def _per_example(value: float | torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) value shaped to broadcast over (B, 1, *spatial) images."""
    t = torch.as_tensor(value, dtype=torch.float32, device=images.device)
    return t.reshape(-1, *([1] * (images.ndim - 1))) if t.ndim else t


def soft_lesion_mask(
    images: torch.Tensor,
    keep: torch.Tensor,
    threshold_unit: float | torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Differentiable lesion mask: a sigmoid above the threshold, inside `keep`.

    Args:
        images: (B, 1, *spatial) in window units.
        keep: (B, 1, *spatial) 0/1 region where the lesion is looked for (the ROI, less the
            input's background tissue).
        threshold_unit: the lesion threshold in window units, one for all or (B,) per example.
        temperature: sigmoid softness in window units (0.05 is about 35 HU on a 1400 HU window).

    Returns:
        (B, 1, *spatial) values in [0, 1].
    """
    threshold = _per_example(threshold_unit, images)
    return torch.sigmoid((images.float() - threshold) / temperature) * keep


def soft_lesion_area(
    images: torch.Tensor,
    roi: torch.Tensor,
    threshold_unit: float | torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Differentiable number of lesion pixels inside the ROI (`soft_lesion_mask` summed).

    Returns:
        (B,) soft pixel counts.
    """
    return soft_lesion_mask(images, roi, threshold_unit, temperature).flatten(1).sum(dim=1)


def size_loss(
    fake: torch.Tensor,
    target_area_px: torch.Tensor,
    roi: torch.Tensor,
    threshold_unit: float | torch.Tensor,
) -> torch.Tensor:
    """Error in equivalent diameter (pixels) between the rendered lesion and the target area.

    Comparing square roots of areas turns an area error into a diameter error, so a big and a
    small lesion with the same diameter error cost the same.
    """
    area = soft_lesion_area(fake, roi, threshold_unit)
    return (torch.sqrt(area + 1.0) - torch.sqrt(target_area_px.float() + 1.0)).abs().mean()


def soft_dice_loss(mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - Dice between a soft lesion mask and a 0/1 target mask.

    The fidelity Dice compares the ruler's segmentation with the true future's lesion mask;
    this is its differentiable form on `soft_lesion_mask`, so the rendered outline is pulled
    onto the future's where an area or a diameter alone would leave its shape free.
    """
    m = mask.float().flatten(1)
    t = target_mask.float().flatten(1)
    overlap = (m * t).sum(dim=1)
    return (1.0 - 2.0 * overlap / (m.sum(dim=1) + t.sum(dim=1)).clamp_min(1.0)).mean()


def _directions(dims: int, count: int) -> torch.Tensor:
    """`count` unit vectors spread over a half circle (2D) or a hemisphere (3D), (count, dims)."""
    i = torch.arange(count, dtype=torch.float32)
    if dims == 2:
        angle = i * math.pi / count
        return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    z = (i + 0.5) / count  # Fibonacci points on the upper hemisphere
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = torch.sqrt(1.0 - z * z)
    return torch.stack([z, r * torch.cos(phi), r * torch.sin(phi)], dim=1)


def _centre_component(hard: torch.Tensor) -> torch.Tensor:
    """Per example, the connected component at (or nearest to) the patch centre, as 0/1.

    The ruler (`metrics.segment_lesion`) keeps that component only: isolated specks of noise
    above a ground-glass threshold elsewhere in the ROI are not the lesion.
    """
    out = np.zeros(hard.shape, dtype=np.float32)
    for i, example in enumerate(hard[:, 0].cpu().numpy()):
        labels, count = ndimage.label(example)
        if count == 0:
            continue
        centre = tuple(round((n - 1) / 2) for n in example.shape)
        chosen = labels[centre]
        if not chosen:
            points = np.argwhere(labels > 0)
            nearest = np.argmin(((points - (np.asarray(example.shape) - 1) / 2) ** 2).sum(axis=1))
            chosen = labels[tuple(points[nearest])]
        out[i, 0] = labels == chosen
    return torch.from_numpy(out).to(hard.device)


def greatest_diameter_px(
    mask: torch.Tensor, directions: int = 16, sharpness: float = 4.0
) -> torch.Tensor:
    """Greatest diameter (pixels, between pixel centres) of a soft lesion mask at the centre.

    The value is the hard one: the widest extent, over `directions` directions, of the pixels
    with mask > 0.5 connected to the patch centre, as the fidelity ruler segments a lesion
    (16 directions in 2D under-read the caliper diameter by at most 0.5 %).
    The gradient is that of a soft version (straight-through): along each direction the
    extent on each side is a soft maximum of the pixels' distances weighted by their mask
    values, so raising the mask just outside the lesion's edge widens it and lowering it at
    the edge narrows it; the widths of all directions are combined by a soft maximum too.

    Args:
        mask: (B, 1, *spatial) values in [0, 1] (`soft_lesion_mask`).
        directions: directions over a half circle (2D) or a hemisphere (3D).
        sharpness: inverse softmax temperature, per pixel of extent.

    Returns:
        (B,) diameters in pixels (0 for an empty mask).
    """
    spatial = mask.shape[2:]
    inside = _centre_component(mask.detach().float() > 0.5)
    # The soft extent looks at the lesion and a 2-pixel band around it: aerated lung farther
    # out has a mask of ~1e-6 but, far enough out, would still outweigh the edge.
    pool = F.max_pool2d if mask.ndim == 4 else F.max_pool3d
    band = pool(inside, kernel_size=5, stride=1, padding=2) > 0
    if not bool(band.any()):
        band = torch.ones_like(band)
    # Only the box around every example's band is looked at (the exponentials are the cost).
    box: list[slice] = []
    for axis in range(len(spatial)):
        others = tuple(d for d in range(band.ndim) if d != axis + 2)
        hit = torch.nonzero(band.any(dim=others)).flatten()
        box.append(slice(int(hit.min()), int(hit.max()) + 1))
    crop = (slice(None), slice(None), *box)
    axes = [
        torch.arange(n, dtype=torch.float32, device=mask.device)[b] - (n - 1) / 2
        for n, b in zip(spatial, box, strict=True)
    ]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # (dims, N)
    proj = _directions(len(spatial), directions).to(mask.device) @ coords  # (D, N)
    empty = ~band[crop].flatten(1).any(dim=1)  # examples without a lesion: look everywhere
    band = (band[crop].flatten(1) | empty[:, None])[:, None, :]
    log_m = torch.log(mask[crop].float().flatten(1).clamp_min(1e-12))[:, None, :]  # (B, 1, N)
    inside = inside[crop].flatten(1)[:, None, :]
    hard_width = torch.zeros(mask.shape[0], proj.shape[0], device=mask.device)
    soft_width = torch.zeros_like(hard_width)
    for signed in (proj, -proj):
        # Log-sum-exp of the distance plus the log mask: raising any pixel's mask can only
        # widen the extent, most for pixels at and just beyond the edge (a weighted mean
        # instead would rise when edge pixels a little inside the extreme are lowered).
        logits = (sharpness * signed + log_m).masked_fill(~band, -torch.inf)
        soft_width = soft_width + torch.logsumexp(logits, dim=-1) / sharpness
        hard_width = hard_width + (inside * signed + (inside - 1.0) * 1e4).amax(dim=-1)
    hard = torch.where(inside.flatten(1).amax(dim=1) > 0, hard_width.amax(dim=1), 0.0)
    # Every direction near the widest shares the gradient: shrinking a round lesion along one
    # direction only would leave its diameter where it was.
    soft = torch.logsumexp(sharpness * soft_width, dim=1) / sharpness
    return soft + (hard - soft).detach()


def diameter_loss(
    fake: torch.Tensor,
    target_diameter_px: torch.Tensor,
    keep: torch.Tensor,
    threshold_unit: float | torch.Tensor,
) -> torch.Tensor:
    """Mean |greatest diameter of the rendered lesion - target| in pixels.

    The rendered lesion is cut at the threshold inside `keep`, as the fidelity ruler
    (`metrics.segment_lesion`) cuts it, so the loss reads the size the evaluation will read.
    """
    mask = soft_lesion_mask(fake, keep, threshold_unit)
    return (greatest_diameter_px(mask) - target_diameter_px.float()).abs().mean()


def separable_conv(
    images: torch.Tensor, kernel_1d: torch.Tensor, replicate_edges: bool
) -> torch.Tensor:
    """Convolve every channel of (B, C, *spatial) images with one 1D kernel along each axis.

    The product kernel in one pass of 1D convolutions: 3 x 7 taps instead of 7^3 for a 3D
    Gaussian, and oneDNN's backward of a one-channel 7^3 convolution was 20% of a 3D GAN step.
    `replicate_edges` pads each axis by the kernel's radius with the edge value (same size
    out); otherwise the convolution is "valid" (each axis shrinks by len(kernel) - 1).
    """
    dims = images.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    channels = images.shape[1]
    taps = kernel_1d.numel()
    kernel_1d = kernel_1d.to(device=images.device, dtype=images.dtype)
    out = images
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = taps
        weight = kernel_1d.reshape(shape).expand(channels, *shape[1:])
        if replicate_edges:
            pad = [0, 0] * dims
            pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = taps // 2
            out = F.pad(out, pad, mode="replicate")
        out = conv(out, weight, groups=channels)
    return out


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B, C, *spatial) images (2D or 3D), edges replicated."""
    if sigma_px <= 0:
        return images
    radius = max(1, int(3 * sigma_px + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return separable_conv(images, kernel / kernel.sum(), replicate_edges=True)


def masked_l1(
    fake: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, blur_px: float = 0.0
) -> torch.Tensor:
    """L1 averaged over the weighted region (e.g. the dilated union of lesion masks).

    With `blur_px` > 0 the difference is low-passed first (Gaussian sigma in pixels): the true
    future scan carries fresh scanner noise that no generator can predict, and in a raw L1 its
    signs swamp the gradient of what can be predicted (a denser core, a thinner spicule, a
    deeper lobulation). The low-passed difference keeps those and averages the noise out.
    """
    w = weight.float()
    diff = gaussian_blur(fake.float() - target.float(), blur_px)
    return (diff.abs() * w).sum() / w.sum().clamp_min(1.0)


class SSIMTerm:
    """1 - SSIM on [-1, 1] images, in fp32: MONAI's `SSIMLoss`, computed with a separable window.

    The definition is MONAI's (data range 2, Gaussian window of sigma 1.5 pixels, 11 taps, or 7
    below 44-pixel patches; K1 0.01, K2 0.03; "valid" windows; the mean SSIM of each image,
    averaged over the batch) and a test holds it to MONAI's value and gradient. MONAI convolves
    the five local moments one by one with the full 2D or 3D window; here they are stacked as
    channels and filtered once with three 1D passes, which cut a 3D GAN step by a fifth.
    """

    SIGMA_PX = 1.5
    K1 = 0.01
    K2 = 0.03
    DATA_RANGE = 2.0

    def __init__(self, spatial_dims: int, patch_size: int) -> None:
        self.spatial_dims = spatial_dims
        taps = 11 if patch_size >= 44 else 7
        # MONAI's gaussian_1d: taps centred on 0, normalised to sum 1.
        x = torch.arange((1 - taps) / 2, (1 + taps) / 2, 1.0)
        kernel = torch.exp(-((x / self.SIGMA_PX) ** 2) / 2)
        self.kernel = kernel / kernel.sum()

    def __call__(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = fake.float(), target.float()
        if x.ndim - 2 != self.spatial_dims or x.shape != y.shape:
            raise ValueError(
                f"SSIMTerm: expected two equal {self.spatial_dims}D batches, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        channels = x.shape[1]
        moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        mu_x, mu_y, mu_xx, mu_yy, mu_xy = separable_conv(
            moments, self.kernel, replicate_edges=False
        ).split(channels, dim=1)
        c1 = (self.K1 * self.DATA_RANGE) ** 2
        c2 = (self.K2 * self.DATA_RANGE) ** 2
        var_x = mu_xx - mu_x * mu_x
        var_y = mu_yy - mu_y * mu_y
        cov_xy = mu_xy - mu_x * mu_y
        contrast = (2 * cov_xy + c2) / (var_x + var_y + c2)
        ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * contrast
        return 1 - ssim.flatten(1).mean(dim=1).mean()


def diff_augment(
    images: torch.Tensor, generator: torch.Generator, policy: tuple[str, ...]
) -> torch.Tensor:
    """DiffAugment with geometry-only ops, the same draw for every image of a paired batch.

    Only translation and cutout: an intensity shift would move HU, which carry meaning (a
    -600 HU ground-glass nodule is not a +40 HU solid one). The caller concatenates real and
    fake along the batch axis, so both halves get identical transforms.

    Args:
        images: (2B, C, *spatial), real batch then fake batch.
        generator: torch RNG for the draws.
        policy: subset of ("translation", "cutout").

    Returns:
        Augmented images, same shape.
    """
    if not policy:
        return images
    half = images.shape[0] // 2
    spatial = images.shape[2:]
    out = images
    if "translation" in policy:
        shifts = [
            torch.randint(-(n // 8), n // 8 + 1, (half,), generator=generator) for n in spatial
        ]
        out = _translate(out, [torch.cat([s, s]) for s in shifts])
    if "cutout" in policy:
        sizes = [n // 4 for n in spatial]
        starts = [
            torch.randint(0, n - s + 1, (half,), generator=generator)
            for n, s in zip(spatial, sizes, strict=True)
        ]
        keep = torch.ones_like(out[:, :1])
        for i in range(half):
            region: tuple[slice, ...] = tuple(
                slice(int(st[i]), int(st[i]) + s) for st, s in zip(starts, sizes, strict=True)
            )
            keep[i, 0][region] = 0.0
            keep[i + half, 0][region] = 0.0
        out = out * keep
    return out


def _translate(images: torch.Tensor, shifts: list[torch.Tensor]) -> torch.Tensor:
    """Integer shifts per sample and axis; the border value continues into the gap."""
    spatial = images.shape[2:]
    index_grids = []
    for axis, n in enumerate(spatial):
        base = torch.arange(n, device=images.device)
        idx = (base.unsqueeze(0) - shifts[axis].to(images.device).unsqueeze(1)).clamp(0, n - 1)
        index_grids.append(idx)
    out = images
    for axis, idx in enumerate(index_grids):
        dim = 2 + axis
        shape = [images.shape[0]] + [1] * (images.ndim - 1)
        shape[dim] = spatial[axis]
        expanded = idx.reshape(shape).expand_as(out)
        out = torch.gather(out, dim, expanded)
    return out
