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
from lungcancer.train.inference import FilePrediction


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
    from lungcancer.data import preprocess_file

    masks = list(mask_paths) if mask_paths is not None else [None] * len(paths)
    if len(masks) != len(paths):
        raise ConfigError(
            "give one mask per input (or none at all)",
            expected=f"{len(paths)} masks",
            found=f"{len(masks)} masks",
        )
    rows: list[FilePrediction] = []
    for path, mask in zip(paths, masks, strict=True):
        items = preprocess_file(path, clf.data_config, mask_path=mask)
        arrays = [array for _, array in items]
        probs = np.concatenate(
            [
                clf.probabilities(np.stack(arrays[i : i + batch_size]))
                for i in range(0, len(arrays), batch_size)
            ]
        )
        for (name, _), p in zip(items, probs, strict=True):
            rows.append(_row(clf.class_names, str(path), name, p, aggregate=False))
        if len(items) > 1:
            mean = probs.mean(axis=0)
            rows.append(
                _row(clf.class_names, str(path), f"scan (mean of {len(items)})", mean, True)
            )
    return rows


def _row(
    class_names: Sequence[str], path: str, item: str, probs: np.ndarray, aggregate: bool
) -> FilePrediction:
    # Rounded as the PyTorch path rounds them, so both engines write the same files.
    named = {c: round(float(p), 6) for c, p in zip(class_names, probs, strict=True)}
    return FilePrediction(path, item, named, class_names[int(np.argmax(probs))], aggregate)
