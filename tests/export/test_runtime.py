"""Predicting with the .onnx file alone gives the PyTorch path's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from lungcancer.errors import CheckpointError
from lungcancer.export.convert import export_classifier
from lungcancer.export.runtime import load_onnx_classifier, predict_files_onnx
from lungcancer.train.inference import load_classifier, predict_files


@pytest.fixture
def onnx_file(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    clf = load_classifier(tiny_checkpoint, precision="fp32")
    return export_classifier(clf, "onnx", tmp_path / "tiny.onnx").path


def test_onnx_predictions_equal_torch_predictions(
    tiny_checkpoint: Path, onnx_file: Path, images: dict[str, Path]
) -> None:
    torch_clf = load_classifier(tiny_checkpoint, precision="fp32")
    onnx_clf = load_onnx_classifier(onnx_file)
    assert onnx_clf.class_names == torch_clf.class_names
    assert onnx_clf.data_config == torch_clf.data_config
    paths = [images["blob"], images["plain"], images["volume"], images["volume"]]
    masks = [None, None, None, images["mask"]]
    want = predict_files(torch_clf, paths, mask_paths=masks)
    got = predict_files_onnx(onnx_clf, paths, mask_paths=masks)
    assert [(r.path, r.item, r.aggregate) for r in got] == [
        (r.path, r.item, r.aggregate) for r in want
    ]
    assert any(r.aggregate for r in got)  # the volume without a mask has a per-scan row
    for a, b in zip(got, want, strict=True):
        assert a.predicted == b.predicted
        diffs = [abs(a.probabilities[c] - b.probabilities[c]) for c in b.probabilities]
        assert max(diffs) <= 1e-4


def test_onnx_without_metadata_is_refused(tmp_path: Path, onnx_file: Path) -> None:
    proto = onnx.load(str(onnx_file))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(CheckpointError, match="no lungcancer metadata"):
        load_onnx_classifier(bare)


def test_missing_and_non_onnx_files_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_onnx_classifier(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_onnx_classifier(junk)
