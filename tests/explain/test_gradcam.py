"""Grad-CAM and Grad-CAM++ over every registered model, and on a model with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lungcancer.errors import ConfigError
from lungcancer.explain.gradcam import grad_cam
from lungcancer.explain.scores import energy_share, pointing_game_hit
from lungcancer.models import create_model, list_models

# DenseNet and ResNet downsample 32x, so 32 px is the smallest input with a 1-voxel feature map.
SHAPES = [(2, (2, 1, 32, 32)), (3, (1, 1, 32, 32, 32))]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize(("spatial_dims", "shape"), SHAPES)
def test_maps_match_input_shape_for_every_model(
    name: str, spatial_dims: int, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, spatial_dims=spatial_dims)
    model.train()
    x = torch.randn(*shape)
    for method in ("gradcam", "gradcampp"):
        result = grad_cam(model, x, method=method, class_index=1)
        assert result.maps.shape == (shape[0], *shape[2:])
        assert result.maps.dtype == np.float32
        assert np.all(result.maps >= 0) and np.all(result.maps <= 1 + 1e-6)
        assert result.class_indices == (1,) * shape[0]
        assert result.probabilities.shape == (shape[0], 3)
        np.testing.assert_allclose(result.probabilities.sum(1), 1.0, atol=1e-5)
    # The model's mode is restored and no hook is left behind.
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def _blob_image(region: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, 32, 32, generator=generator) * 0.3
    image[0, 0, 7:10, 23:26] = 1.0  # a bright "lesion" inside the region
    image[0, 0, 24:27, 4:7] = 1.0  # an equally bright distractor outside it
    return image


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_heat_lies_where_the_logit_looks(
    region_model: nn.Module, region_2d: torch.Tensor, method: str
) -> None:
    x = _blob_image(region_2d)
    mask = region_2d.numpy()
    inside = grad_cam(region_model, x, class_index=1, method=method).maps[0]
    assert pointing_game_hit(inside, mask, tolerance_px=0)
    assert energy_share(inside, mask) > 0.95
    # The other class looks everywhere but the region, so its map must miss the region.
    outside = grad_cam(region_model, x, class_index=0, method=method).maps[0]
    assert not pointing_game_hit(outside, mask, tolerance_px=0)
    assert energy_share(outside, mask) < 0.05


def test_predicted_class_is_explained_by_default(region_model: nn.Module) -> None:
    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 5:10, 21:26] = 5.0  # bright inside the region -> class 1
    x[1, 0, 20:30, 0:10] = 5.0  # bright outside -> class 0
    result = grad_cam(region_model, x)
    assert result.class_indices == (1, 0)
    assert result.probabilities.argmax(1).tolist() == [1, 0]


def test_works_under_no_grad_and_leaves_parameter_grads_alone(region_model: nn.Module) -> None:
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        result = grad_cam(region_model, x, class_index=1)
    assert result.maps.max() == pytest.approx(1.0)
    assert all(p.grad is None for p in region_model.parameters())


def test_bad_requests_are_config_errors(region_model: nn.Module) -> None:
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ConfigError, match="unknown explanation method"):
        grad_cam(region_model, x, method="saliency")
    with pytest.raises(ConfigError, match="out of range"):
        grad_cam(region_model, x, class_index=5)
    with pytest.raises(ConfigError, match="not a module"):
        grad_cam(region_model, x, layer="nope")
    with pytest.raises(ConfigError, match="which layer"):
        grad_cam(nn.Linear(4, 2), torch.rand(1, 4))
