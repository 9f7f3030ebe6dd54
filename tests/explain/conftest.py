"""Tiny models with a known answer for the explanation tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class RegionModel(nn.Module):
    """Logit 1 is the mean intensity inside `region`, logit 0 the mean outside it.

    The feature map has two channels, the image masked to the region and to its complement, so
    the gradient of logit 1 flows only through the region channel: a correct Grad-CAM of class
    1 must put all its heat inside the region.
    """

    gradcam_layer = "features"

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.features = nn.Identity()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat([x * self.region, x * (1 - self.region)], dim=1) * self.scale
        feats = self.features(stacked)
        inside = feats[:, 0].flatten(1).sum(1) / self.region.sum()
        outside = feats[:, 1].flatten(1).sum(1) / (1 - self.region).sum()
        return torch.stack([outside, inside], dim=1)


@pytest.fixture
def region_2d() -> torch.Tensor:
    """An 8x8 square in the top-right quarter of a 32x32 image."""
    region = torch.zeros(32, 32)
    region[4:12, 20:28] = 1
    return region


@pytest.fixture
def region_model(region_2d: torch.Tensor) -> RegionModel:
    return RegionModel(region_2d)
