"""GAN losses on known values, and DiffAugment that never moves HU."""

from __future__ import annotations

import pytest
import torch

from lungcancer.progression import losses
from lungcancer.progression.patches import HUWindow, greatest_diameter_mm


def test_hinge_losses_match_hand_computed_values() -> None:
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.5])
    # relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; relu(1-2)=0, relu(1+0.5)=1.5 -> 0.75.
    assert float(losses.d_hinge_loss(real, fake)) == pytest.approx(1.0)
    assert float(losses.g_hinge_loss(fake)) == pytest.approx(0.75)


def test_r1_penalty_is_the_squared_gradient_norm() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3)) + (x**2).sum() * 0.0
    penalty = losses.r1_penalty(logits, x)
    assert float(penalty.detach()) == pytest.approx(float((w**2).sum()))


def test_size_loss_is_zero_when_the_lesion_has_the_target_area_and_grows_otherwise() -> None:
    image = -torch.ones(1, 1, 32, 32)
    image[..., 12:20, 12:20] = 0.8  # 64 lesion pixels
    roi = torch.ones_like(image)
    right = losses.size_loss(image, torch.tensor([64.0]), roi, threshold_unit=-0.14)
    wrong = losses.size_loss(image, torch.tensor([144.0]), roi, threshold_unit=-0.14)
    assert float(right) < 0.05
    assert float(wrong) == pytest.approx(12 - 8, abs=0.1)


def test_diff_augment_applies_the_same_draw_to_real_and_fake_and_keeps_values() -> None:
    torch.manual_seed(0)
    half = torch.rand(4, 2, 32, 32) * 2 - 1
    both = torch.cat([half, half])
    out = losses.diff_augment(both, torch.Generator().manual_seed(1), ("translation", "cutout"))
    assert torch.equal(out[:4], out[4:])
    assert not torch.equal(out, both)
    # Geometry only: every output value is an input value of the same image, or the cutout 0.
    for i in range(4):
        allowed = set(half[i].flatten().tolist()) | {0.0}
        assert set(out[i].flatten().tolist()) <= allowed


def test_masked_l1_averages_over_the_weighted_region_only() -> None:
    a = torch.zeros(1, 1, 4, 4)
    b = torch.zeros(1, 1, 4, 4)
    b[..., 0, 0] = 1.0
    w = torch.zeros(1, 1, 4, 4)
    w[..., 0, :2] = 1.0
    assert float(losses.masked_l1(a, b, w)) == pytest.approx(0.5)


@pytest.mark.parametrize("shape", [(2, 1, 48, 48), (1, 1, 16, 16, 16)])
def test_blurred_lesion_l1_ignores_fresh_noise_but_not_structure(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    noise = 0.05 * torch.randn(shape)
    zero = torch.zeros(shape)
    w = torch.ones(shape)
    offset = torch.full(shape, 0.05)  # a systematic change as large as the noise
    assert losses.gaussian_blur(offset, 1.0).allclose(offset)  # a constant passes unchanged
    raw_noise = float(losses.masked_l1(noise, zero, w))
    blurred_noise = float(losses.masked_l1(noise, zero, w, blur_px=1.0))
    assert blurred_noise < 0.4 * raw_noise
    assert float(losses.masked_l1(offset, zero, w, blur_px=1.0)) == pytest.approx(0.05, rel=1e-4)


def _disc_image(shape: tuple[int, ...], radius_px: float, blur_px: float = 0.0) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in shape]
    dist = torch.sqrt(sum(m * m for m in torch.meshgrid(*axes, indexing="ij")))  # type: ignore[arg-type]
    image = torch.where(dist <= radius_px, 0.5, -0.8).reshape(1, 1, *shape)
    return losses.gaussian_blur(image, blur_px)


@pytest.mark.parametrize(
    ("shape", "semi_axes_px"),
    [((64, 64), (10.0, 10.0)), ((64, 64), (6.0, 14.0)), ((24, 24, 24), (7.0, 7.0, 7.0))],
)
def test_greatest_diameter_reads_what_the_ruler_reads(
    shape: tuple[int, ...], semi_axes_px: tuple[float, ...]
) -> None:
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    inside = sum((m / a) ** 2 for m, a in zip(mesh, semi_axes_px, strict=True)) <= 1  # type: ignore[union-attr]
    image = torch.where(inside, 0.5, -0.8).reshape(1, 1, *shape)
    mask = losses.soft_lesion_mask(image, torch.ones_like(image), -0.14)
    measured = float(losses.greatest_diameter_px(mask)[0])
    ruler = greatest_diameter_mm(inside.numpy(), (1.0,) * len(shape))
    assert measured == pytest.approx(ruler, rel=0.01)
    assert float(losses.greatest_diameter_px(torch.zeros_like(mask))[0]) == 0.0


@pytest.mark.parametrize("target_px", [14.0, 26.0])
def test_descending_the_diameter_loss_moves_the_lesion_edge_toward_the_target(
    target_px: float,
) -> None:
    # A blurred disc about 19 px across: its edge has the partial-volume ramp of a real scan.
    image = _disc_image((48, 48), 9.5, blur_px=1.5).requires_grad_(True)
    keep = torch.ones_like(image)
    start = float(
        losses.greatest_diameter_px(losses.soft_lesion_mask(image.detach(), keep, -0.14))[0]
    )
    optimizer = torch.optim.SGD([image], lr=0.2)
    for _ in range(60):
        optimizer.zero_grad()
        losses.diameter_loss(image, torch.tensor([target_px]), keep, -0.14).backward()
        optimizer.step()
    mask = losses.soft_lesion_mask(image.detach(), keep, -0.14)
    end = float(losses.greatest_diameter_px(mask)[0])
    assert abs(end - target_px) < abs(start - target_px) - 1.0


def test_the_soft_mask_cuts_each_example_at_its_own_threshold() -> None:
    window = HUWindow()
    ground_glass = torch.full((2, 1, 8, 8), window.unit_threshold(-700.0))
    keep = torch.ones_like(ground_glass)
    # Cut at -400 HU it is not lesion; cut half-way to the lung (-775 HU) it is.
    per_example = torch.tensor([window.unit_threshold(-400.0), window.unit_threshold(-775.0)])
    mask = losses.soft_lesion_mask(ground_glass, keep, per_example)
    assert float(mask[0].max()) < 0.01
    assert float(mask[1].min()) > 0.85


def test_soft_dice_is_zero_on_the_target_and_grows_with_the_mismatch() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1.0
    shifted = torch.roll(target, 4, dims=-1)  # half of it overlaps
    assert float(losses.soft_dice_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.soft_dice_loss(shifted, target)) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(
    ("shape", "patch_size"),
    [((3, 1, 64, 64), 64), ((2, 1, 40, 40), 40), ((2, 1, 20, 20, 20), 32), ((1, 2, 48, 48), 48)],
)
def test_separable_ssim_equals_monai_ssim_loss_in_value_and_gradient(
    shape: tuple[int, ...], patch_size: int
) -> None:
    from monai.losses import SSIMLoss

    torch.manual_seed(0)
    target = torch.rand(shape) * 2 - 1
    # A candidate that shares structure with the target, so SSIM is well away from 0 and 1.
    start = (0.7 * target + 0.3 * (torch.rand(shape) * 2 - 1)).double().float()
    dims = len(shape) - 2
    reference = SSIMLoss(spatial_dims=dims, data_range=2.0, win_size=11 if patch_size >= 44 else 7)
    ours_in = start.clone().requires_grad_(True)
    ref_in = start.clone().requires_grad_(True)
    ours = losses.SSIMTerm(dims, patch_size)(ours_in, target)
    ref = reference(ref_in, target)
    ours.backward()
    ref.backward()
    assert 0.1 < float(ref.detach()) < 0.9
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    assert ours_in.grad is not None and ref_in.grad is not None
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-6 * float(ref_in.grad.abs().max()))
    assert float(losses.SSIMTerm(dims, patch_size)(target, target)) == pytest.approx(0.0, abs=1e-6)


def test_ssim_term_refuses_batches_of_another_shape_or_dimensionality() -> None:
    term = losses.SSIMTerm(2, 64)
    with pytest.raises(ValueError, match="2D"):
        term(torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="got"):
        term(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17))


@pytest.mark.parametrize("shape", [(2, 1, 9, 12), (2, 1, 7, 9, 8)])
def test_separable_conv_equals_the_full_product_kernel(shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    images = torch.randn(shape)
    kernel_1d = torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])
    dims = len(shape) - 2
    full = kernel_1d
    for _ in range(dims - 1):
        full = full[..., None] * kernel_1d
    conv = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv3d
    valid = conv(images, full.reshape(1, 1, *full.shape))
    assert torch.allclose(losses.separable_conv(images, kernel_1d, False), valid, atol=1e-6)
    padded = torch.nn.functional.pad(images, [2, 2] * dims, mode="replicate")
    same = conv(padded, full.reshape(1, 1, *full.shape))
    assert torch.allclose(losses.separable_conv(images, kernel_1d, True), same, atol=1e-6)
