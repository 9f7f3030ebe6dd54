"""ONNX and TorchScript export: parity with PyTorch, metadata, and failure without a file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lungcancer.config import DataConfig, ModelConfig, from_dict
from lungcancer.errors import ConfigError, ExportError
from lungcancer.export.convert import (
    ONNX_FORMAT,
    OPSET,
    TORCHSCRIPT_METADATA_FILE,
    default_output,
    export_classifier,
)
from lungcancer.models import create_model


@dataclass(frozen=True)
class Bundle:
    model: nn.Module
    class_names: tuple[str, ...]
    data_config: DataConfig
    model_config: Any


def _bundle(name: str = "cnn", spatial_dims: int = 2) -> Bundle:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, spatial_dims=spatial_dims).eval()
    cfg = DataConfig(image_size=32, patch_size_3d=16, spatial_dims=spatial_dims)
    return Bundle(model, ("a", "b", "c"), cfg, ModelConfig(name=name, spatial_dims=spatial_dims))


@pytest.mark.parametrize(("name", "spatial_dims"), [("cnn", 2), ("cnn", 3), ("densenet121", 2)])
def test_onnx_matches_pytorch_and_carries_metadata(
    tmp_path: Path, name: str, spatial_dims: int
) -> None:
    clf = _bundle(name, spatial_dims)
    report = export_classifier(clf, "onnx", tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4 and report.opset == OPSET
    assert not clf.model.training  # exporting must not switch the model to training mode
    proto = onnx.load(str(report.path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["lungcancer_format"] == ONNX_FORMAT
    assert json.loads(props["class_names"]) == ["a", "b", "c"]
    assert from_dict(DataConfig, json.loads(props["data_config"])) == clf.data_config
    assert proto.opset_import[0].version == OPSET
    # Any batch size runs, and the probabilities agree with eager PyTorch.
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, *report.input_shape)
    logits, probs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = torch.softmax(clf.model(x), 1).numpy()
    assert probs.shape == (5, 3) and logits.shape == (5, 3)
    assert np.max(np.abs(probs - want)) <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch_and_carries_metadata(tmp_path: Path) -> None:
    clf = _bundle()
    report = export_classifier(clf, "torchscript", tmp_path / "m.torchscript.pt")
    assert report.max_abs_diff <= 1e-4 and report.opset is None
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    loaded = torch.jit.load(str(report.path), _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_METADATA_FILE])
    assert json.loads(meta["class_names"]) == ["a", "b", "c"]
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        _, probs = loaded(x)
        want = torch.softmax(clf.model(x), 1)
    assert torch.max(torch.abs(probs - want)) <= 1e-4


def test_failed_parity_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="does not reproduce") as info:
        export_classifier(_bundle(), "onnx", target, tolerance=-1.0)
    assert "nothing was written" in str(info.value)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_default_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="onnx or torchscript"):
        export_classifier(_bundle(), "tflite", tmp_path / "m")
    assert default_output("runs/x/best.pt", "onnx") == Path("runs/x/best.onnx")
    assert default_output("best.pt", "torchscript") == Path("best.torchscript.pt")
