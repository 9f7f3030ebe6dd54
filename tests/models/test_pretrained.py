"""Transfer learning from torchvision/timm-format files written here (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.models import create_model
from lungcancer.models.pretrained import load_pretrained, read_state_dict


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.{leaf}": (channels,)
        for leaf in ("weight", "bias", "running_mean", "running_var")
    }


def torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision.models.resnet50's state-dict names and shapes, from its layer recipe."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_ch = 64
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
            shapes.update(_bn(f"{p}.bn1", planes))
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_bn(f"{p}.bn2", planes))
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes.update(_bn(f"{p}.bn3", planes * 4))
            if block == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, in_ch, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * 4))
            in_ch = planes * 4
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def torchvision_densenet121_shapes(legacy: bool = False) -> dict[str, tuple[int, ...]]:
    """torchvision.models.densenet121's names and shapes; `legacy` spells `norm.1` for `norm1`."""
    shapes: dict[str, tuple[int, ...]] = {"features.conv0.weight": (64, 3, 7, 7)}
    shapes.update(_bn("features.norm0", 64))
    ch = 64
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        for layer in range(1, layers + 1):
            p = f"features.denseblock{block}.denselayer{layer}"
            n1, c1, n2, c2 = (
                ("norm.1", "conv.1", "norm.2", "conv.2")
                if legacy
                else ("norm1", "conv1", "norm2", "conv2")
            )
            shapes.update(_bn(f"{p}.{n1}", ch))
            shapes[f"{p}.{c1}.weight"] = (128, ch, 1, 1)
            shapes.update(_bn(f"{p}.{n2}", 128))
            shapes[f"{p}.{c2}.weight"] = (32, 128, 3, 3)
            ch += 32
        if block < 4:
            shapes.update(_bn(f"features.transition{block}.norm", ch))
            shapes[f"features.transition{block}.conv.weight"] = (ch // 2, ch, 1, 1)
            ch //= 2
    shapes.update(_bn("features.norm5", ch))
    shapes["classifier.weight"] = (1000, ch)
    shapes["classifier.bias"] = (1000,)
    return shapes


STEMS = {"resnet50": "conv1.weight", "densenet121": "features.conv0.weight"}
SHAPES = {
    "resnet50": torchvision_resnet50_shapes,
    "densenet121": torchvision_densenet121_shapes,
    "densenet121-legacy": lambda: torchvision_densenet121_shapes(legacy=True),
}


def write_state_dict(
    path: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    torch.save(state, path)
    return state


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("resnet50", "resnet50"),
        ("densenet121", "densenet121"),
        ("densenet121", "densenet121-legacy"),
    ],
)
def test_torchvision_weights_load_with_summed_stem_and_new_head(
    tmp_path: Path, name: str, variant: str
) -> None:
    path = tmp_path / "weights.pth"
    source = write_state_dict(path, SHAPES[variant]())
    torch.manual_seed(0)
    scratch = create_model(name, num_classes=2).eval()
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, pretrained=str(path)).eval()

    stem = model.state_dict()[STEMS[name]]
    torch.testing.assert_close(stem, source[STEMS[name]].sum(dim=1, keepdim=True))
    # A deep weight is copied unchanged, proving the key mapping reached the last block.
    deep = (
        "layer4.2.conv3.weight"
        if name == "resnet50"
        else "features.denseblock4.denselayer16.layers.conv2.weight"
    )
    deep_src = (
        deep
        if name == "resnet50"
        else (
            "features.denseblock4.denselayer16.conv.2.weight"
            if "legacy" in variant
            else "features.denseblock4.denselayer16.conv2.weight"
        )
    )
    torch.testing.assert_close(model.state_dict()[deep], source[deep_src])
    assert dict(model.head_parameters())  # a 2-class head, not ImageNet's 1000
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x), scratch(x))


def test_report_lists_the_dropped_head_and_nothing_missing(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    write_state_dict(path, torchvision_resnet50_shapes())
    model = create_model("resnet50", num_classes=3)
    report = load_pretrained(model, "resnet50", str(path))
    assert report.missing == []
    assert report.unexpected == ["fc.bias", "fc.weight"]
    assert report.adapted == ["conv1.weight"]
    assert report.loaded == len(torchvision_resnet50_shapes()) - 2


@pytest.mark.parametrize(("in_chans", "scale"), [(2, 3 / 2), (5, 3 / 5)])
def test_more_input_channels_repeat_and_scale_the_rgb_filters(
    tmp_path: Path, in_chans: int, scale: float
) -> None:
    path = tmp_path / "d121.pth"
    source = write_state_dict(path, torchvision_densenet121_shapes())
    model = create_model("densenet121", num_classes=2, in_chans=in_chans, pretrained=str(path))
    stem = model.state_dict()["features.conv0.weight"]
    rgb = source["features.conv0.weight"]
    assert stem.shape == (64, in_chans, 7, 7)
    for channel in range(in_chans):
        torch.testing.assert_close(stem[:, channel], rgb[:, channel % 3] * scale)


def test_3d_model_gets_inflated_weights(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    source = write_state_dict(path, torchvision_resnet50_shapes())
    model = create_model("resnet50", num_classes=2, spatial_dims=3, pretrained=str(path))
    conv2 = model.state_dict()["layer1.0.conv2.weight"]
    assert conv2.shape == (64, 64, 3, 3, 3)
    torch.testing.assert_close(conv2.sum(dim=2), source["layer1.0.conv2.weight"])


def test_frozen_backbone_does_not_move_while_head_trains(tmp_path: Path) -> None:
    path = tmp_path / "d121.pth"
    write_state_dict(path, torchvision_densenet121_shapes())
    model = create_model("densenet121", num_classes=2, pretrained=str(path))
    model.set_backbone_trainable(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = model(torch.rand(4, 1, 32, 32)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        moved = not torch.equal(before[name], param)
        assert moved == model.is_head_parameter(name), name


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    write_state_dict(path, torchvision_resnet50_shapes())
    with pytest.raises(CheckpointError, match=r"do not fit densenet121: only 0 of"):
        create_model("densenet121", num_classes=2, pretrained=str(path))


def test_a_file_holding_a_pickled_callable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": os.system}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        read_state_dict(str(path), "resnet50")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"not a torch file", "cannot read"), ("truncated", "cannot read")],
)
def test_unreadable_files_give_clear_errors(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "weights.pth"
    if content == "truncated":
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(str(path), "resnet50")


def test_imagenet_for_the_custom_cnn_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights for 'cnn'"):
        create_model("cnn", num_classes=2, pretrained="imagenet")


def test_unreachable_imagenet_download_says_to_pass_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    # An unroutable address: the download fails the same way as on an offline machine.
    import lungcancer.models.pretrained as pretrained

    monkeypatch.setitem(
        pretrained.IMAGENET_URLS, "resnet50", "http://127.0.0.1:9/resnet50-11ad3fa6.pth"
    )
    with pytest.raises(CheckpointError, match="could not download") as info:
        create_model("resnet50", num_classes=2, pretrained="imagenet")
    assert "--pretrained" in str(info.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


def test_imagenet_finds_a_copy_in_the_torch_hub_cache_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lungcancer.models.pretrained as pretrained

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    name = "resnet50-00000000.pth"
    monkeypatch.setitem(pretrained.IMAGENET_URLS, "resnet50", f"http://127.0.0.1:9/{name}")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    source = write_state_dict(
        tmp_path / "hub" / "checkpoints" / name, torchvision_resnet50_shapes()
    )
    model = create_model("resnet50", num_classes=2, pretrained="imagenet")
    torch.testing.assert_close(
        model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"]
    )
