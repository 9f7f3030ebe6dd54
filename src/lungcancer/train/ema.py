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


def ramped_decay(decay: float, updates: int) -> float:
    """min(decay, (1 + n) / (10 + n)): short averages first, so an average does not stay stuck
    at the random initialisation in a short run."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def ema_step(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, for every floating tensor of the state
    (weights and batch-norm statistics); other tensors (step counters) are copied."""
    current = model.state_dict()
    for name, avg in average.state_dict().items():
        value = current[name].detach()
        if avg.is_floating_point():
            avg.lerp_(value.to(avg.dtype), 1.0 - decay)
        else:
            avg.copy_(value)


class WeightEma:
    """A frozen copy of `model` whose floating tensors follow the model's by an EMA.

    The decay ramps up over the first updates (`ramped_decay`); buffers that are not floating
    point (batch-norm step counters) are copied (`ema_step`).

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

    def update(self, model: nn.Module) -> None:
        """Move the average one step toward `model`'s current weights and buffers."""
        self.updates += 1
        ema_step(self.module, model, ramped_decay(self.decay, self.updates))

    def restart(self) -> None:
        """Start the average afresh from the model's next weights (the ramp begins again), e.g.
        when the training inputs change size and the older weights no longer fit."""
        self.updates = 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the average exactly."""
        return {"decay": self.decay, "updates": self.updates}

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Continue from a checkpoint's averaged weights and `state()`."""
        self.module.load_state_dict(weights)
        self.updates = int(state.get("updates", 0))
