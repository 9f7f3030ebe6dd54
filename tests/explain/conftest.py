"""Tiny models with a known answer for the explanation tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lungcancer.config import DataConfig


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


@dataclass(frozen=True)
class Bundle:
    """The fields of a loaded classifier that explaining uses."""

    model: nn.Module
    class_names: tuple[str, ...]
    data_config: DataConfig


@pytest.fixture
def region_bundle(region_model: RegionModel) -> Bundle:
    return Bundle(region_model, ("benign", "malignant"), DataConfig(image_size=32))


@pytest.fixture
def lesion_pngs(tmp_path: Path, region_2d: torch.Tensor) -> list[tuple[Path, Path]]:
    """Three 32x32 grey slices, each with a bright lesion inside the region and its mask."""
    pairs = []
    rng = np.random.default_rng(0)
    for i, (y, x) in enumerate([(5, 21), (7, 23), (8, 20)]):
        grey = rng.uniform(0.0, 0.3, size=(32, 32))
        grey[24:28, 3:7] = 1.0  # a bright distractor outside the region
        lesion = np.zeros((32, 32), dtype=np.uint8)
        lesion[y : y + 3, x : x + 3] = 255
        grey[lesion > 0] = 0.95
        image_path = tmp_path / f"slice{i}.png"
        mask_path = tmp_path / f"slice{i}_mask.png"
        Image.fromarray((grey * 255).astype(np.uint8)).save(image_path)
        Image.fromarray(lesion).save(mask_path)
        pairs.append((image_path, mask_path))
    assert region_2d[6, 22] == 1
    return pairs
