"""Losses of the progression GAN and the DiffAugment it trains with.

Adversarial terms are hinge losses; the discriminator is regularised with a lazy R1 penalty
(StyleGAN2: every `k` steps, scaled by `k` so its average strength does not depend on `k`).
Reconstruction terms compare a rendered patch with the true future scan (paired mode); the size
term is what makes a lesion *grow*: it matches the soft lesion area inside the ROI, which an L1
loss alone under-weights when the lesion is a few percent of the patch.
"""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
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


def soft_lesion_area(
    images: torch.Tensor, roi: torch.Tensor, threshold_unit: float, temperature: float = 0.05
) -> torch.Tensor:
    """Differentiable number of lesion pixels inside the ROI (a sigmoid above the threshold).

    Args:
        images: (B, 1, *spatial) in window units.
        roi: (B, 1, *spatial) 0/1 region where the lesion is looked for.
        threshold_unit: the lesion HU threshold in window units.
        temperature: sigmoid softness in window units (0.05 is about 35 HU on a 1400 HU window).

    Returns:
        (B,) soft pixel counts.
    """
    inside = torch.sigmoid((images.float() - threshold_unit) / temperature) * roi
    return inside.flatten(1).sum(dim=1)


def size_loss(
    fake: torch.Tensor, target_area_px: torch.Tensor, roi: torch.Tensor, threshold_unit: float
) -> torch.Tensor:
    """Error in equivalent diameter (pixels) between the rendered lesion and the target area.

    Comparing square roots of areas turns an area error into a diameter error, so a big and a
    small lesion with the same diameter error cost the same.
    """
    area = soft_lesion_area(fake, roi, threshold_unit)
    return (torch.sqrt(area + 1.0) - torch.sqrt(target_area_px.float() + 1.0)).abs().mean()


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B, C, *spatial) images (2D or 3D), edges replicated."""
    if sigma_px <= 0:
        return images
    radius = max(1, int(3 * sigma_px + 0.5))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    dims = images.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    channels = images.shape[1]
    out = images
    for axis in range(dims):
        shape = [channels, 1] + [1] * dims
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), kernel.reshape(shape), groups=channels)
    return out


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
    """1 - SSIM on [-1, 1] images (MONAI's SSIM with data range 2), in fp32."""

    def __init__(self, spatial_dims: int, patch_size: int) -> None:
        win = 11 if patch_size >= 44 else 7
        self.loss = SSIMLoss(spatial_dims=spatial_dims, data_range=2.0, win_size=win)

    def __call__(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(fake.float(), target.float())


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
