"""Every registered model, in 2D and 3D: shapes, gradients, the shared surface, topology."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lungcancer.errors import ConfigError
from lungcancer.models import Classifier, create_model, list_models
from lungcancer.models.registry import GlobalPool

INPUT_SHAPES = {2: (2, 1, 64, 64), 3: (2, 1, 32, 32, 32)}
CASES = [(name, dims) for name in list_models() for dims in (2, 3)]


def test_the_three_builtin_models_are_registered() -> None:
    assert {"resnet50", "densenet121", "cnn"} <= set(list_models())


@pytest.mark.parametrize(("name", "spatial_dims"), CASES)
def test_forward_backward_and_surface(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, spatial_dims=spatial_dims)
    assert isinstance(model, Classifier)
    x = torch.randn(INPUT_SHAPES[spatial_dims])

    features = model.forward_features(x)
    assert features.ndim == 2 + spatial_dims
    assert features.shape[:2] == (2, model.num_features)
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 3)

    logits.sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"


@pytest.mark.parametrize(("name", "spatial_dims"), CASES)
def test_gradcam_layer_outputs_the_feature_map(name: str, spatial_dims: int) -> None:
    model = create_model(name, num_classes=2, spatial_dims=spatial_dims).eval()
    layer = dict(model.named_modules())[model.gradcam_layer]
    seen: list[torch.Tensor] = []
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    x = torch.randn(INPUT_SHAPES[spatial_dims])
    with torch.no_grad():
        features = model.forward_features(x)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], features)


@pytest.mark.parametrize("name", list_models())
def test_reset_classifier_and_parameter_groups(name: str) -> None:
    model = create_model(name, num_classes=3)
    model.reset_classifier(5)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)
    head = dict(model.head_parameters())
    backbone = dict(model.backbone_parameters())
    assert head and backbone
    assert set(head).isdisjoint(backbone)
    assert len(head) + len(backbone) == len(list(model.parameters()))
    assert sum(p.numel() for p in head.values()) == (model.num_features + 1) * 5

    model.set_backbone_trainable(False)
    assert not any(p.requires_grad for p in backbone.values())
    assert all(p.requires_grad for p in head.values())


# torchvision's published parameter counts (RGB stem, 1000-class head) minus the head.
@pytest.mark.parametrize(
    ("name", "backbone_params", "head_params"),
    [("resnet50", 23_508_032, 2048 * 1000 + 1000), ("densenet121", 6_953_856, 1024 * 1000 + 1000)],
)
def test_canonical_topology_parameter_counts(
    name: str, backbone_params: int, head_params: int
) -> None:
    model = create_model(name, in_chans=3, num_classes=1000)
    assert sum(p.numel() for _, p in model.backbone_parameters()) == backbone_params
    assert sum(p.numel() for _, p in model.head_parameters()) == head_params


def test_resnet50_costs_about_4_1_gmacs_at_224() -> None:
    model = create_model("resnet50", in_chans=3, num_classes=1000).to("meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    gmacs = counter.get_total_flops() / 2e9  # the counter counts a multiply-add as 2 FLOPs
    assert 4.0 < gmacs < 4.2


def test_custom_cnn_is_small_and_cheaper_than_densenet() -> None:
    cnn = create_model("cnn", num_classes=2)
    assert sum(p.numel() for p in cnn.parameters()) < 1_000_000
    macs = {}
    for name in ("cnn", "densenet121"):
        model = create_model(name, num_classes=2).to("meta")
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.empty(1, 1, 128, 128, device="meta"))
        macs[name] = counter.get_total_flops()
    assert macs["cnn"] < macs["densenet121"] / 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "vgg16", "num_classes": 2}, "unknown model"),
        ({"name": "cnn", "num_classes": 2, "spatial_dims": 4}, "spatial_dims"),
        ({"name": "cnn", "num_classes": 0}, "at least one class"),
    ],
)
def test_bad_requests_raise_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model(**kwargs)  # type: ignore[arg-type]


def test_dropout_is_passed_through() -> None:
    model = create_model("cnn", num_classes=2, dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_avgmax_pooling_doubles_the_head_width_and_sees_one_hot_cell(name: str) -> None:
    torch.manual_seed(0)
    avg = create_model(name, num_classes=3, pool="avg").eval()
    both = create_model(name, num_classes=3, pool="avgmax").eval()
    x = torch.randn(2, 1, 64, 64)
    assert both.forward_head(both.forward_features(x), pre_logits=True).shape == (
        2,
        2 * avg.forward_head(avg.forward_features(x), pre_logits=True).shape[1],
    )
    assert both(x).shape == (2, 3)
    # One bright cell of the last map: the average barely moves, the maximum carries it whole.
    feats = torch.zeros(1, 4, 8, 8)
    feats[0, :, 3, 5] = 6.4
    pooled = GlobalPool("avgmax")(feats)
    torch.testing.assert_close(pooled, torch.tensor([[0.1] * 4 + [6.4] * 4]))


def test_unknown_pooling_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="avgmax"):
        create_model("cnn", num_classes=2, pool="median")
