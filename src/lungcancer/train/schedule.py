"""The optimisation recipe: AdamW parameter groups and a warmup + cosine learning rate.

Norm weights and biases get no weight decay (decaying them only fights the normalisation, as in
nanoGPT and timm). Backbone groups carry an `lr_scale` so pretrained features move slower than
the new head; the schedule multiplies every group's rate by its scale at each step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lungcancer.models.registry import Classifier


def param_groups(
    model: Classifier, *, weight_decay: float, backbone_lr_scale: float
) -> list[dict[str, Any]]:
    """AdamW groups: {backbone, head} x {decayed, not decayed}, each with an `lr_scale`.

    Args:
        model: the classifier.
        weight_decay: decoupled weight decay for conv and linear weights.
        backbone_lr_scale: backbone learning rate as a fraction of the head's.

    Returns:
        Non-empty parameter groups for `torch.optim.AdamW`.
    """
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "head" if model.is_head_parameter(name) else "backbone"
        # 1-D tensors are biases and norm scales; >= 2-D ones are conv/linear weights.
        groups.setdefault((part, param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "name": f"{part}{'' if decay else '_no_decay'}",
            "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": backbone_lr_scale if part == "backbone" else 1.0,
        }
        for (part, decay), params in sorted(groups.items())
    ]


def build_optimizer(
    model: Classifier, *, lr: float, weight_decay: float, backbone_lr_scale: float
) -> torch.optim.AdamW:
    """AdamW over `param_groups` (rates are set by `WarmupCosine` before each step)."""
    groups = param_groups(model, weight_decay=weight_decay, backbone_lr_scale=backbone_lr_scale)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


class WarmupCosine:
    """Linear warmup to `base_lr`, then cosine decay to `min_lr_ratio * base_lr`, per step.

    Args:
        optimizer: its groups' `lr_scale` entries scale the rate (1.0 when absent).
        base_lr: peak learning rate of the head.
        warmup_steps: steps of linear warmup.
        total_steps: steps of the whole run (warmup included).
        min_lr_ratio: final rate as a fraction of the peak.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.01,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)
        self.min_lr_ratio = min_lr_ratio
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        """The head's learning rate at optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)

    def apply(self) -> float:
        """Set every group's rate for the coming step; returns the head's rate."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def advance(self) -> None:
        """Count one optimizer step."""
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs."""
        return {
            "step_count": self.step_count,
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_lr_ratio": self.min_lr_ratio,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the saved step. The curve comes from the current config, so resuming
        with the same config continues exactly and resuming with more epochs stretches it."""
        self.step_count = int(state["step_count"])
