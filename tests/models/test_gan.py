"""Progression GAN networks: shapes in 2D/3D, conditioning, identity at initialisation."""

from __future__ import annotations

import pytest
import torch

from lungcancer.models.gan import (
    ROI_FEATHER_MM,
    ProgressionDiscriminator,
    ProgressionGenerator,
    lesion_roi,
    radial_grid,
)

GENERATOR_CASES = [
    # (kwargs, input shape)
    ({"spatial_dims": 2, "levels": 4, "base_channels": 8}, (2, 1, 64, 64)),
    ({"spatial_dims": 2, "levels": 4, "base_channels": 8}, (1, 1, 128, 128)),
    ({"spatial_dims": 3, "levels": 3, "base_channels": 4}, (2, 1, 32, 32, 32)),
]


def _conds(batch: int) -> tuple[torch.Tensor, ...]:
    return (
        torch.arange(batch) % 4,
        torch.full((batch,), 0.3),
        torch.full((batch,), 0.15),
        torch.full((batch,), 1.5),
    )


def _randomise_head(g: ProgressionGenerator) -> None:
    torch.manual_seed(0)
    for module in g.modules():
        if hasattr(module, "proj") or module is g.head:
            for p in module.parameters():
                torch.nn.init.normal_(p, std=0.2)


@pytest.mark.parametrize(("kwargs", "shape"), GENERATOR_CASES)
def test_generator_keeps_the_patch_shape_and_returns_its_input_at_init(
    kwargs: dict[str, int], shape: tuple[int, ...]
) -> None:
    g = ProgressionGenerator(num_stages=4, cond_dim=16, **kwargs)
    x = torch.randn(shape)
    prior = x.clone()
    prior[..., shape[-1] // 2] += 1.0
    out = g(x, prior, *_conds(shape[0]))
    assert out.shape == shape
    # Zero-initialised heads: an untrained generator returns its prior (the input, with the
    # lesion grown geometrically), so nothing outside the lesion changes.
    assert torch.equal(out, prior)
    assert torch.equal(g(x, x, *_conds(shape[0])), x)


@pytest.mark.parametrize(("kwargs", "shape"), GENERATOR_CASES)
def test_discriminator_gives_patch_logits_and_optional_stage_logits(
    kwargs: dict[str, int], shape: tuple[int, ...]
) -> None:
    dims = kwargs["spatial_dims"]
    d = ProgressionDiscriminator(dims, in_channels=2, num_stages=4, channels=8, aux_classifier=True)
    x = torch.randn(shape[0], 2, *shape[2:])
    logits, stage_logits = d(x, torch.zeros(shape[0], dtype=torch.long))
    assert logits.shape[:2] == (shape[0], 1)
    assert logits.ndim == dims + 2
    assert all(1 <= n < s for n, s in zip(logits.shape[2:], shape[2:], strict=True))
    assert stage_logits is not None and stage_logits.shape == (shape[0], 4)
    plain = ProgressionDiscriminator(dims, in_channels=2, num_stages=4, channels=8)
    assert plain(x, torch.zeros(shape[0], dtype=torch.long))[1] is None


def test_discriminator_uses_spectral_norm_and_projection_on_the_stage() -> None:
    d = ProgressionDiscriminator(2, in_channels=1, num_stages=4, channels=8)
    names = [n for n, _ in d.named_parameters()]
    assert any("parametrizations.weight.original" in n for n in names)
    x = torch.randn(2, 1, 64, 64)
    a, _ = d(x, torch.tensor([0, 0]))
    b, _ = d(x, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)


def test_generator_output_depends_on_target_stage_size_and_spacing() -> None:
    g = ProgressionGenerator(2, num_stages=4, base_channels=8, levels=3, cond_dim=16)
    _randomise_head(g)
    x = torch.randn(1, 1, 32, 32)
    size, src, mm = torch.tensor([0.3]), torch.tensor([0.1]), torch.tensor([1.0])
    base = g(x, x, torch.tensor([0]), size, src, mm)
    other_stage = g(x, x, torch.tensor([3]), size, src, mm)
    other_size = g(x, x, torch.tensor([0]), torch.tensor([0.6]), src, mm)
    other_spacing = g(x, x, torch.tensor([0]), size, src, torch.tensor([3.0]))
    assert (base - other_stage).abs().max() > 1e-3
    assert (base - other_size).abs().max() > 1e-3
    assert (base - other_spacing).abs().max() > 1e-3


def test_radial_grid_is_zero_at_the_centre_and_half_at_an_edge_midpoint() -> None:
    grid = radial_grid((64, 64), torch.device("cpu"), torch.float32)
    assert grid.shape == (64, 64)
    assert grid.min() == pytest.approx(0.5 / 64 * 2**0.5, abs=1e-6)
    assert grid[32, 0] == pytest.approx(((31.5 / 64) ** 2 + (0.5 / 64) ** 2) ** 0.5, abs=1e-6)


def test_generator_rejects_unknown_dimensionality() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        ProgressionGenerator(spatial_dims=1)


@pytest.mark.parametrize(("kwargs", "shape"), GENERATOR_CASES)
def test_generator_changes_only_the_lesion_roi(
    kwargs: dict[str, int], shape: tuple[int, ...]
) -> None:
    g = ProgressionGenerator(num_stages=4, cond_dim=16, **kwargs)
    _randomise_head(g)
    x = torch.randn(shape)
    stage, target, source, spacing = _conds(shape[0])
    out = g(x, x, stage, target, source, spacing)
    radial = radial_grid(tuple(shape[2:]), x.device, x.dtype)
    roi = lesion_roi(radial, source, target, spacing, feather_mm=ROI_FEATHER_MM)
    # Exactly the input outside the (feathered) ROI, changed inside it.
    assert torch.equal(out[roi.expand_as(out) == 0], x[roi.expand_as(x) == 0])
    assert (out - x)[roi.expand_as(out) == 1].abs().max() > 1e-3


def test_lesion_roi_is_a_disc_of_the_larger_diameter() -> None:
    radial = radial_grid((64, 64), torch.device("cpu"), torch.float32)
    # 0.75 x 0.4 x 64 px + 3 mm / 1 mm = 22.2 px radius.
    roi = lesion_roi(radial, torch.tensor([0.2]), torch.tensor([0.4]), torch.tensor([1.0]))
    assert roi[0, 0, 32, 32 + 21] == 1.0
    assert roi[0, 0, 32, 32 + 23] == 0.0
    soft = lesion_roi(
        radial, torch.tensor([0.2]), torch.tensor([0.4]), torch.tensor([1.0]), feather_mm=4.0
    )
    assert 0.0 < float(soft[0, 0, 32, 32 + 24]) < 1.0
