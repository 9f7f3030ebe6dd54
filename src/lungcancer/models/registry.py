"""One registry and one factory for every classifier (the timm pattern).

A model file decorates a small builder with `@register_model`; `create_model` is the only way
the rest of the toolkit builds a network, so checkpoints can rebuild one from its name and args.
The model files register themselves when `lungcancer.models` is imported. Every classifier
subclasses `Classifier` and therefore offers the same surface: features, head,
a resettable classifier, backbone/head parameter groups and the layer Grad-CAM should hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from lungcancer.errors import ConfigError

SPATIAL_DIMS = (2, 3)


class Classifier(nn.Module, ABC):
    """The surface every registered network offers.

    Subclasses set `num_features`, `num_classes`, `spatial_dims`, `in_chans`, `gradcam_layer`
    and `head_prefixes` and implement `forward_features`, `forward_head` and
    `reset_classifier`.

    Attributes:
        gradcam_layer: dotted name (as in `named_modules()`) of the module whose output is the
            last spatial feature map, the layer Grad-CAM hooks.
        head_prefixes: parameter-name prefixes that belong to the classifier head; everything
            else is backbone (frozen first in transfer learning, trained at a lower LR).
    """

    num_features: int
    # Width of the pooled features the final linear layer reads (num_features x pool width).
    head_features: int
    num_classes: int
    spatial_dims: int
    in_chans: int
    gradcam_layer: str
    head_prefixes: tuple[str, ...]

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial feature map, (B, num_features, *spatial)."""

    @abstractmethod
    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify a feature map; `pre_logits` stops before the linear."""

    @abstractmethod
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer with a freshly initialised one for `num_classes`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def is_head_parameter(self, name: str) -> bool:
        """Whether the parameter called `name` belongs to the classifier head."""
        return name.startswith(self.head_prefixes)

    def backbone_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs of the feature extractor."""
        return ((n, p) for n, p in self.named_parameters() if not self.is_head_parameter(n))

    def head_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs of the classifier head."""
        return ((n, p) for n, p in self.named_parameters() if self.is_head_parameter(n))

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) the backbone; the head always stays trainable."""
        for _, param in self.backbone_parameters():
            param.requires_grad_(trainable)


POOLS = ("avg", "avgmax")


class GlobalPool(nn.Module):
    """Global pooling of a (B, C, *spatial) map to (B, C) ("avg") or (B, 2C) ("avgmax").

    "avgmax" concatenates the average and the maximum over space (timm's `catavgmax`): the
    maximum keeps a finding that covers a few cells of the last feature map (a node, a small
    nodule) from being averaged away by the rest of the slice.
    """

    def __init__(self, kind: str = "avg") -> None:
        super().__init__()
        if kind not in POOLS:
            raise ConfigError(
                f"unknown global pooling {kind!r}",
                expected=" or ".join(POOLS),
                found=kind,
                hint="set model.pool to avg or avgmax",
            )
        self.kind = kind
        self.multiplier = 2 if kind == "avgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 2)
        avg = flat.mean(dim=2)
        if self.kind == "avg":
            return avg
        return torch.cat((avg, flat.amax(dim=2)), dim=1)


def new_linear(in_features: int, num_classes: int) -> nn.Linear:
    """A classifier layer initialised the same way for every model (small weights, zero bias)."""
    layer = nn.Linear(in_features, num_classes)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


ModelBuilder = Callable[..., Classifier]
B = TypeVar("B", bound=ModelBuilder)

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(builder: B) -> B:
    """Decorator: make `builder` available to `create_model` under its function name."""
    name = builder.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = builder
    return builder


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    in_chans: int = 1,
    num_classes: int,
    spatial_dims: int = 2,
    pretrained: str | None = None,
    **kwargs: Any,
) -> Classifier:
    """Build a registered classifier, optionally starting from pretrained weights.

    Args:
        name: a name from `list_models()`.
        in_chans: input channels (1 for one CT window; one per window when several are stacked).
        num_classes: output classes.
        spatial_dims: 2 for slices, 3 for volume patches.
        pretrained: None or "" for random initialisation; "imagenet", a URL or a local path of
            a torchvision/timm-format state dict or a lungcancer checkpoint (see
            `lungcancer.models.pretrained.load_pretrained`).
        **kwargs: model-specific options (e.g. `dropout`).

    Returns:
        The network, in training mode.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}",
            expected=", ".join(sorted(_REGISTRY)),
            found=name,
            hint="pick one of the registered models (`lungcancer.models.list_models()`)",
        )
    if spatial_dims not in SPATIAL_DIMS:
        raise ConfigError(
            "spatial_dims must be 2 (slices) or 3 (volume patches)", found=str(spatial_dims)
        )
    if num_classes < 1 or in_chans < 1:
        raise ConfigError(
            "a classifier needs at least one class and one input channel",
            found=f"num_classes={num_classes}, in_chans={in_chans}",
        )
    model = _REGISTRY[name](
        in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, **kwargs
    )
    if pretrained:
        from lungcancer.models.pretrained import load_pretrained

        load_pretrained(model, name, pretrained)
    return model
