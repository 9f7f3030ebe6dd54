"""Running an exported classifier with ONNX Runtime, from the .onnx file alone.

The file's metadata holds the class names and the preprocessing config, so predictions need
neither the checkpoint nor PyTorch's model code, and come out in the same form as the PyTorch
path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.config import DataConfig, from_dict
from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.export.convert import ONNX_FORMAT
from lungcancer.train.inference import FilePrediction, predict_file_rows


@dataclass(frozen=True)
class OnnxClassifier:
    """An exported classifier ready to run.

    Attributes:
        path: the .onnx file.
        class_names: class names, index = output column.
        data_config: the preprocessing the model was trained with.
        model_config: the model's name and arguments (as saved).
        session: the ONNX Runtime session (CPU).
    """

    path: Path
    class_names: tuple[str, ...]
    data_config: DataConfig
    model_config: dict[str, Any]
    session: Any = field(repr=False)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (B, num_classes) of preprocessed inputs (B, C, ...)."""
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self.session.run(["probabilities"], {"image": inputs})[0])


def load_onnx_classifier(path: str | Path, *, threads: int = 0) -> OnnxClassifier:
    """Open an .onnx file written by `lungcancer export`.

    Args:
        path: the .onnx file.
        threads: intra-op threads for ONNX Runtime; 0 lets it choose (physical cores).

    Raises:
        CheckpointError: missing file, not ONNX, or an ONNX model without lungcancer metadata.
    """
    import onnxruntime as ort

    onnx_path = Path(path)
    if not onnx_path.is_file():
        raise CheckpointError(
            "ONNX model not found",
            path=onnx_path,
            expected="a .onnx file written by `lungcancer export --format onnx`",
            hint="check the path",
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise CheckpointError(
            "the file is not a readable ONNX model",
            path=onnx_path,
            found=str(exc).splitlines()[0][:200],
            hint="export the checkpoint again with `lungcancer export CKPT --format onnx`",
        ) from exc
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("lungcancer_format") != ONNX_FORMAT:
        raise CheckpointError(
            "the ONNX model carries no lungcancer metadata (class names, preprocessing)",
            path=onnx_path,
            expected=f"metadata lungcancer_format={ONNX_FORMAT!r}",
            found=str(meta.get("lungcancer_format", "none")),
            hint="export with `lungcancer export CKPT --format onnx`",
        )
    try:
        class_names = tuple(str(n) for n in json.loads(meta["class_names"]))
        data_config = from_dict(DataConfig, json.loads(meta["data_config"]))
        model_config = json.loads(meta.get("model_config", "null")) or {}
    except (KeyError, ValueError, ConfigError) as exc:
        raise CheckpointError(
            "the ONNX model's lungcancer metadata is damaged",
            path=onnx_path,
            found=str(exc),
            hint="export the checkpoint again",
        ) from exc
    return OnnxClassifier(onnx_path, class_names, data_config, model_config, session)


def predict_files_onnx(
    clf: OnnxClassifier,
    paths: Sequence[str | Path],
    *,
    mask_paths: Sequence[str | Path | None] | None = None,
    batch_size: int = 64,
) -> list[FilePrediction]:
    """`train.inference.predict_files` with ONNX Runtime instead of PyTorch.

    Same inputs, same items per file (`data.preprocess_file` with the exported data config),
    same rows (including the per-scan mean), so the output files are interchangeable.

    Args:
        clf: the ONNX classifier.
        paths: image files or DICOM series folders.
        mask_paths: a lesion mask per path (None entries for none), or None.
        batch_size: items per run of the session.

    Returns:
        Rows in input order, each file's aggregate after its items.
    """
    return predict_file_rows(
        paths,
        mask_paths,
        data_config=clf.data_config,
        class_names=clf.class_names,
        probabilities=clf.probabilities,
        batch_size=batch_size,
    )
