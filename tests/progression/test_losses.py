"""GAN losses on known values, and DiffAugment that never moves HU."""

from __future__ import annotations

import pytest
import torch

from lungcancer.progression import losses


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
