"""ResNet50 in 2D and 3D: MONAI's ResNet with the canonical ImageNet topology.

The 7x7 stride-2 stem, the 3x3 max-pool, bottleneck blocks (3, 4, 6, 3) with the stride on the
3x3 conv and bias-free 1x1 downsample convs: exactly torchvision's layout, so its ImageNet
weights load by name (about 23.5M parameters without the head, about 4.1 GMACs at 224x224).
"""

from __future__ import annotations

from typing import cast

import torch
from monai.networks.nets import ResNet
from torch import nn

from lungcancer.models.registry import Classifier, GlobalPool, new_linear, register_model


class ResNetClassifier(ResNet, Classifier):
    """A MONAI ResNet with the `Classifier` surface (dropout before the final linear).

    Args:
        layers: bottleneck blocks per stage.
        in_chans: input channels.
        num_classes: output classes.
        spatial_dims: 2 or 3.
        dropout: dropout probability before the classifier.
    """

    head_prefixes = ("fc.",)
    gradcam_layer = "layer4"

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        *,
        in_chans: int,
        num_classes: int,
        spatial_dims: int,
        dropout: float = 0.0,
        pool: str = "avg",
    ) -> None:
        super().__init__(
            block="bottleneck",
            layers=list(layers),
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_chans,
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=False,
            shortcut_type="B",
            num_classes=num_classes,
            # torchvision's downsample convs have no bias; matching it keeps the weights loadable.
            bias_downsample=False,
        )
        self.in_chans = in_chans
        self.spatial_dims = spatial_dims
        self.num_features = 512 * 4
        self.num_classes = num_classes
        self.global_pool = GlobalPool(pool)
        self.head_features = self.num_features * self.global_pool.multiplier
        self.head_drop = nn.Dropout(dropout)
        self.fc = new_linear(self.head_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return torch.as_tensor(self.layer4(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(features))
        return x if pre_logits else torch.as_tensor(cast(nn.Linear, self.fc)(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = new_linear(self.head_features, num_classes)


@register_model
def resnet50(
    *,
    in_chans: int = 1,
    num_classes: int,
    spatial_dims: int = 2,
    dropout: float = 0.0,
    pool: str = "avg",
) -> ResNetClassifier:
    """ResNet50 (He et al. 2016), 2D or 3D."""
    return ResNetClassifier(
        (3, 4, 6, 3),
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        dropout=dropout,
        pool=pool,
    )
