"""A small custom CNN that trains fast on a CPU.

Four stages, each halving the resolution with a strided 3x3 conv followed by a second 3x3 conv,
both with batch norm and ReLU, then global average pooling: about 0.7M parameters and a fifth of
DenseNet121's multiply-adds per image. Channel counts are multiples of 32, which
keeps oneDNN's bf16/AMX kernels on their fast path.
"""

from __future__ import annotations

import torch
from torch import nn

from lungcancer.models.registry import Classifier, GlobalPool, new_linear, register_model


def _conv_bn_relu(spatial_dims: int, in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    return [
        conv(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        norm(out_ch),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(Classifier):
    """Stages of (strided conv, conv) with BN + ReLU, global average pooling and a linear head.

    Args:
        widths: output channels of each stage; each stage halves the resolution.
        in_chans: input channels.
        num_classes: output classes.
        spatial_dims: 2 or 3.
        dropout: dropout probability before the classifier.
        pool: global pooling, "avg" or "avgmax" (see `GlobalPool`).
    """

    head_prefixes = ("fc.",)

    def __init__(
        self,
        widths: tuple[int, ...],
        *,
        in_chans: int,
        num_classes: int,
        spatial_dims: int,
        dropout: float = 0.0,
        pool: str = "avg",
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.gradcam_layer = f"stages.{len(widths) - 1}"
        stages: list[nn.Module] = []
        previous = in_chans
        for width in widths:
            layers = _conv_bn_relu(spatial_dims, previous, width, stride=2)
            layers += _conv_bn_relu(spatial_dims, width, width, stride=1)
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = GlobalPool(pool)
        self.head_features = self.num_features * self.pool.multiplier
        self.head_drop = nn.Dropout(dropout)
        self.fc = new_linear(self.head_features, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.stages(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.pool(features))
        return x if pre_logits else torch.as_tensor(self.fc(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = new_linear(self.head_features, num_classes)


@register_model
def cnn(
    *,
    in_chans: int = 1,
    num_classes: int,
    spatial_dims: int = 2,
    dropout: float = 0.0,
    pool: str = "avg",
) -> SmallCNN:
    """The custom CNN: four stages of 32, 64, 128 and 160 channels."""
    return SmallCNN(
        (32, 64, 128, 160),
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        dropout=dropout,
        pool=pool,
    )
