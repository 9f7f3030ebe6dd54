"""Grad-CAM and Grad-CAM++ for any classifier with a `gradcam_layer`, in 2D and 3D.

The formulas are MONAI's (`monai.visualize.GradCAM`/`GradCAMpp`, after Selvaraju et al. 2017
and Chattopadhyay et al. 2018). We compute them with our own short hook because MONAI's
wrapper registers hooks that are never removed (a served model would gather one per request),
switches in-place flags of the hooked module, and its default normaliser maps the maximum to
0; we also want the logits of the very same forward pass, so the map and the probabilities
shown next to it can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungcancer.errors import ConfigError

Method = Literal["gradcam", "gradcampp"]
METHODS: tuple[str, ...] = ("gradcam", "gradcampp")


@dataclass(frozen=True)
class CamResult:
    """Class activation maps of one batch.

    Attributes:
        maps: float32 (B, *spatial) at the input's resolution, each scaled so its maximum is 1
            (a map with no positive evidence stays all zero).
        class_indices: the class each map explains.
        probabilities: float32 (B, num_classes), softmax of the logits of the same pass.
    """

    maps: np.ndarray
    class_indices: tuple[int, ...]
    probabilities: np.ndarray


def find_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """The module Grad-CAM hooks: `layer`, else the model's `gradcam_layer`.

    Raises:
        ConfigError: the name does not exist in the model, or the model names no layer.
    """
    name = layer if layer is not None else getattr(model, "gradcam_layer", None)
    if not isinstance(name, str):
        raise ConfigError(
            "the model does not say which layer Grad-CAM should use",
            expected="a `gradcam_layer` attribute or an explicit layer name",
            found=type(model).__name__,
            hint="pass layer='<module name>' (see model.named_modules())",
        )
    modules = dict(model.named_modules())
    if name not in modules:
        raise ConfigError(
            f"layer {name!r} is not a module of {type(model).__name__}",
            expected="a name from model.named_modules()",
            found=name,
        )
    return name, modules[name]


def _weights(
    method: str, activation: torch.Tensor, gradient: torch.Tensor, score: torch.Tensor
) -> torch.Tensor:
    """Per-channel weights (B, C, 1, ...) of the activation map."""
    b, c, *spatial = gradient.shape
    ones = [1] * len(spatial)
    if method == "gradcam":
        return gradient.reshape(b, c, -1).mean(2).reshape(b, c, *ones)
    # Grad-CAM++ with the exponential link, as in the paper and MONAI: the higher-order
    # derivatives of exp(score) reduce to powers of the first-order gradient.
    grad2 = gradient.pow(2)
    denominator = 2 * grad2 + (activation * gradient.pow(3)).reshape(b, c, -1).sum(-1).reshape(
        b, c, *ones
    )
    denominator = torch.where(denominator != 0.0, denominator, torch.ones_like(denominator))
    alpha = grad2 / (denominator + 1e-7)
    positive = F.relu(score.exp().reshape(b, 1, *ones) * gradient)
    return (alpha * positive).reshape(b, c, -1).sum(-1).reshape(b, c, *ones)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    class_index: int | Sequence[int] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
) -> CamResult:
    """Grad-CAM (or Grad-CAM++) maps for a batch, upsampled to the input's size.

    The model is run in eval mode (restored afterwards) with gradients enabled even under
    `torch.no_grad()`; no parameter's `.grad` is touched.

    Args:
        model: a classifier returning logits (B, num_classes).
        x: input batch (B, C, H, W) or (B, C, D, H, W).
        class_index: the class to explain, one for the batch or one per sample; None explains
            each sample's predicted class.
        method: "gradcam" or "gradcampp".
        layer: module name to hook; defaults to `model.gradcam_layer`.

    Returns:
        The maps, the explained classes and the class probabilities.
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown explanation method {method!r}", expected=" or ".join(METHODS), found=method
        )
    _, module = find_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        # Keep the original output and pass a copy downstream: an in-place op after the hooked
        # layer then cannot overwrite what we saw, and the gradient w.r.t. the copy is the
        # gradient w.r.t. the original.
        captured.append(output)
        return output.clone()

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            first = next(model.parameters(), None)
            device = first.device if first is not None else x.device
            inputs = x.detach().float().to(device).requires_grad_(True)
            logits = model(inputs)
            if not captured:
                raise ConfigError(
                    "the Grad-CAM layer was not used by the forward pass",
                    found=layer or str(getattr(model, "gradcam_layer", "")),
                )
            activation = captured[-1]
            batch = logits.shape[0]
            if class_index is None:
                targets = logits.argmax(1)
            elif isinstance(class_index, int):
                targets = torch.full((batch,), class_index, dtype=torch.long, device=device)
            else:
                targets = torch.as_tensor(list(class_index), dtype=torch.long, device=device)
            if targets.shape[0] != batch or int(targets.max()) >= logits.shape[1]:
                raise ConfigError(
                    "class index out of range",
                    expected=f"{batch} index(es) below {logits.shape[1]}",
                    found=str(targets.tolist()),
                )
            score = logits.gather(1, targets[:, None]).squeeze(1)
            (gradient,) = torch.autograd.grad(score.sum(), activation)
        weights = _weights(method, activation.detach(), gradient, score.detach())
        cam = F.relu((weights * activation.detach()).sum(1, keepdim=True))
        mode = "bilinear" if cam.ndim == 4 else "trilinear"
        cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode, align_corners=False)
        cam = cam[:, 0]
        peak = cam.reshape(batch, -1).amax(1).clamp_min(1e-12)
        cam = cam / peak.reshape(batch, *([1] * (cam.ndim - 1)))
        probabilities = torch.softmax(logits.detach().float(), dim=1)
    finally:
        handle.remove()
        model.train(was_training)
    return CamResult(
        maps=cam.cpu().numpy().astype(np.float32),
        class_indices=tuple(int(t) for t in targets.tolist()),
        probabilities=probabilities.cpu().numpy().astype(np.float32),
    )
