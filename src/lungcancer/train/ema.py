"""An exponential moving average of a classifier's weights (and batch-norm statistics).

Validation metrics of a small data set jump from epoch to epoch with the last few optimizer
steps; the average of the recent weights is a smoother, usually better model (Polyak
averaging, timm's ModelEmaV2). With `train.ema_decay > 0` the trainer validates, selects and
saves the average, and keeps the raw weights in the checkpoint only to resume from.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEma:
    """A frozen copy of `model` whose floating tensors follow the model's by an EMA.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so the average
    does not stay stuck at the random initialisation in a short run. Buffers that are not
    floating point (batch-norm step counters) are copied.

    Args:
        model: the network being trained (already on its device and memory format).
        decay: the per-step decay, in (0, 1); e.g. 0.998 averages about the last 500 steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward `model`'s current weights and buffers."""
        self.updates += 1
        beta = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(value.to(avg.dtype), 1.0 - beta)
            else:
                avg.copy_(value)

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the average exactly."""
        return {"decay": self.decay, "updates": self.updates}

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Continue from a checkpoint's averaged weights and `state()`."""
        self.module.load_state_dict(weights)
        self.updates = int(state.get("updates", 0))
