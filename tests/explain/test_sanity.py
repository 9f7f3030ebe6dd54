"""Adebayo et al.'s model-randomisation check: maps must change when weights are destroyed."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungcancer.explain.sanity import randomisation_check
from lungcancer.models import create_model


def _trained_cnn_input() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=2)
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 6:14, 18:26] = 1.0
    return model, x


def test_maps_change_when_weights_are_randomised() -> None:
    model, x = _trained_cnn_input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_layers = sum(1 for m in model.modules() if list(m.parameters(recurse=False)))
    steps = randomisation_check(model, x, steps=n_layers)
    assert [s.layers_randomised for s in steps] == list(range(1, n_layers + 1))
    assert steps[0].layer == "fc"  # the cascade starts at the output ...
    assert steps[-1].layer == "stages.0.0"  # ... and ends at the first convolution
    final = steps[-1]
    assert final.rank_correlation < 0.9
    assert final.ssim < 0.9
    # The model under test is untouched (a copy is randomised).
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_region_model_maps_decorrelate_after_randomisation(region_model: nn.Module) -> None:
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    steps = randomisation_check(region_model, x, class_index=1, steps=1)
    assert len(steps) == 1
    assert np.isfinite(steps[0].rank_correlation)
    assert -1.0 <= steps[0].rank_correlation <= 1.0
