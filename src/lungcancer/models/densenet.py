"""DenseNet121 in 2D and 3D: MONAI's DenseNet with torchvision's layer layout.

Growth rate 32, blocks (6, 12, 24, 16), 64 stem features: about 7M parameters, and every
backbone weight has a torchvision counterpart (`features.denseblockN.denselayerM.layers.*` here
is `features.denseblockN.denselayerM.*` there; see `lungcancer.models.pretrained`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from monai.networks.nets import DenseNet
from torch import nn

from lungcancer.models.registry import Classifier, GlobalPool, new_linear, register_model


class DenseNetClassifier(DenseNet, Classifier):
    """A MONAI DenseNet with the `Classifier` surface.

    The final ReLU lives in `features.relu5` and is not in-place, so the feature map Grad-CAM
    hooks is not overwritten after the hook has seen it.

    Args:
        block_config: dense layers per block.
        in_chans: input channels.
        num_classes: output classes.
        spatial_dims: 2 or 3.
        dropout: dropout probability before the classifier.
    """

    head_prefixes = ("class_layers.",)
    gradcam_layer = "features.relu5"

    def __init__(
        self,
        block_config: tuple[int, ...],
        *,
        in_chans: int,
        num_classes: int,
        spatial_dims: int,
        dropout: float = 0.0,
        pool: str = "avg",
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_chans,
            out_channels=num_classes,
            init_features=64,
            growth_rate=32,
            block_config=block_config,
        )
        self.in_chans = in_chans
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        out_layer = self.class_layers.out
        assert isinstance(out_layer, nn.Linear)
        self.num_features = out_layer.in_features
        self.features.add_module("relu5", nn.ReLU(inplace=False))
        global_pool = GlobalPool(pool)
        self.head_features = self.num_features * global_pool.multiplier
        self.class_layers = nn.Sequential(
            OrderedDict(
                pool=global_pool,
                drop=nn.Dropout(dropout),
                out=new_linear(self.head_features, num_classes),
            )
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.features(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        head = self.class_layers[:-1] if pre_logits else self.class_layers
        return torch.as_tensor(head(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.class_layers[-1] = new_linear(self.head_features, num_classes)


@register_model
def densenet121(
    *,
    in_chans: int = 1,
    num_classes: int,
    spatial_dims: int = 2,
    dropout: float = 0.0,
    pool: str = "avg",
) -> DenseNetClassifier:
    """DenseNet121 (Huang et al. 2017), 2D or 3D."""
    return DenseNetClassifier(
        (6, 12, 24, 16),
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        dropout=dropout,
        pool=pool,
    )
