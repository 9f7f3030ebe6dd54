"""Run a trained classifier: load a checkpoint, predict a dataset or image files.

Preprocessing always comes from the checkpoint's data config, so a prediction sees exactly the
window, size and spacing the model was trained on; nobody re-specifies it by hand.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lungcancer.config import DataConfig, ModelConfig, from_dict
from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.io.atomic import atomic_write_text
from lungcancer.models import Classifier, create_model
from lungcancer.train.checkpoint import load_checkpoint
from lungcancer.train.precision import PrecisionPolicy, resolve_policy


@dataclass(frozen=True)
class LoadedClassifier:
    """A classifier ready to predict.

    Attributes:
        model: the network, in eval mode, on the policy's device.
        class_names: class list (probability column i is class i).
        data_config: the preprocessing it was trained with.
        model_config: how it was built.
        checkpoint: the full checkpoint dict (metrics, history, versions, ...).
        policy: device and precision used for inference.
        path: the checkpoint file.
    """

    model: Classifier
    class_names: tuple[str, ...]
    data_config: DataConfig
    model_config: ModelConfig
    checkpoint: dict[str, Any]
    policy: PrecisionPolicy
    path: Path


def load_classifier(
    ckpt_path: str | Path, device: str = "cpu", *, precision: str = "auto", threads: int = 0
) -> LoadedClassifier:
    """Rebuild a classifier from a checkpoint (loaded with weights_only=True).

    Args:
        ckpt_path: a best.pt or last.pt written by training.
        device: "cpu", "cuda" or "auto".
        precision: "auto" (bf16 on CPUs with native BF16, AMP on CUDA), "fp32", "bf16", "fp16".
        threads: CPU threads the policy records (0: one per physical core); applied by
            `clf.policy.apply_threads()`, not here, so loading never changes global state.

    Returns:
        The model in eval mode with its classes, configs and checkpoint.

    Raises:
        CheckpointError: the file is missing, unsafe, of another format, or its weights do not
            fit the model it names.
    """
    path = Path(ckpt_path)
    ckpt = load_checkpoint(path)
    try:
        data_cfg = from_dict(DataConfig, ckpt["data_config"])
        model_cfg = from_dict(ModelConfig, ckpt["model_config"])
        model = create_model(ckpt["model"]["name"], **ckpt["model"]["args"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(
            "the checkpoint's model or config cannot be rebuilt by this version",
            path=path,
            found=str(exc),
            hint="use the lungcancer version that wrote it (see checkpoint['versions'])",
        ) from exc
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            "the checkpoint's weights do not fit the model it names",
            path=path,
            expected=f"weights of {ckpt['model']['name']} with args {ckpt['model']['args']}",
            found=str(exc).splitlines()[0],
            hint="the file was edited or written by another version; retrain or re-export it",
        ) from exc
    policy = resolve_policy(precision, device, threads=threads)
    prepared = policy.prepare_model(model, int(ckpt["model"]["args"]["spatial_dims"]))
    assert isinstance(prepared, Classifier)
    return LoadedClassifier(
        model=prepared.eval(),
        class_names=tuple(ckpt["class_names"]),
        data_config=data_cfg,
        model_config=model_cfg,
        checkpoint=ckpt,
        policy=policy,
        path=path,
    )


@torch.inference_mode()
def predict_arrays(clf: LoadedClassifier, arrays: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Class probabilities of preprocessed inputs stacked into one batch.

    Args:
        clf: the classifier.
        arrays: float32 arrays shaped (C, H, W) or (C, D, H, W), as `preprocess` returns them.

    Returns:
        (N, num_classes) float32 probabilities.
    """
    batch = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))
    x = clf.policy.prepare_input(batch)
    with clf.policy.autocast():
        logits = clf.model(x).float()
    return torch.softmax(logits, dim=1).cpu().numpy()


@torch.inference_mode()
def predict_dataset(
    clf: LoadedClassifier, dataset: Dataset[tuple[torch.Tensor, int]], batch_size: int = 64
) -> np.ndarray:
    """Class probabilities for every item of a dataset, in dataset order.

    Args:
        clf: the classifier.
        dataset: yields (tensor, label) pairs (e.g. `lungcancer.data.ClassificationDataset`
            built with `train=False` and the checkpoint's data config).
        batch_size: images per forward pass.

    Returns:
        (N, num_classes) float32 probabilities.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts: list[np.ndarray] = []
    for images, _labels in loader:
        x = clf.policy.prepare_input(images)
        with clf.policy.autocast():
            logits = clf.model(x).float()
        parts.append(torch.softmax(logits, dim=1).cpu().numpy())
    if not parts:
        return np.zeros((0, len(clf.class_names)), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class FilePrediction:
    """One prediction row.

    Attributes:
        path: the input file (or series folder).
        item: which part of it: "image", "slice Z", "lesion K (...)", "patch ...", or
            "scan (mean of N)" for the per-scan aggregate.
        probabilities: class name -> probability.
        predicted: the most probable class.
        aggregate: True for the per-scan mean over the file's items.
    """

    path: str
    item: str
    probabilities: dict[str, float]
    predicted: str
    aggregate: bool = False


def predict_files(
    clf: LoadedClassifier,
    paths: Sequence[str | Path],
    *,
    mask_paths: Sequence[str | Path | None] | None = None,
    batch_size: int = 64,
) -> list[FilePrediction]:
    """Predict image files with the checkpoint's preprocessing.

    A 2D image gives one row. A volume gives one row per lesion (with a mask) or per sampled
    slice/patch (without), then a per-scan row with the mean probabilities.

    Args:
        clf: the classifier.
        paths: PNG/JPG, DICOM files or series folders, NIfTI, NRRD, MetaImage.
        mask_paths: a lesion mask per path (None entries for none), or None.
        batch_size: items per forward pass.

    Returns:
        Rows in input order, each file's aggregate after its items.

    Raises:
        ImageReadError: a file is not an image (UnsupportedModalityError for e.g. MR).
        ConfigError: `mask_paths` does not match `paths` in length.
    """
    return predict_file_rows(
        paths,
        mask_paths,
        data_config=clf.data_config,
        class_names=clf.class_names,
        probabilities=lambda batch: predict_arrays(clf, batch),
        batch_size=batch_size,
    )


def predict_file_rows(
    paths: Sequence[str | Path],
    mask_paths: Sequence[str | Path | None] | None,
    *,
    data_config: DataConfig,
    class_names: Sequence[str],
    probabilities: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 64,
) -> list[FilePrediction]:
    """The rows of `predict_files` for any engine that maps a batch to probabilities.

    Shared by the PyTorch and ONNX Runtime paths so both write the same files.

    Args:
        paths: image files or DICOM series folders.
        mask_paths: a lesion mask per path (None entries for none), or None.
        data_config: the model's preprocessing.
        class_names: the model's classes, in output order.
        probabilities: (N, C, ...) float32 batch -> (N, num_classes) probabilities.
        batch_size: items per call of `probabilities`.
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
        items = preprocess_file(path, data_config, mask_path=mask)
        arrays = [array for _, array in items]
        probs = np.concatenate(
            [
                probabilities(np.stack(arrays[i : i + batch_size]))
                for i in range(0, len(arrays), batch_size)
            ]
        )
        for (name, _), p in zip(items, probs, strict=True):
            rows.append(_row(class_names, str(path), name, p, aggregate=False))
        if len(items) > 1:
            mean = probs.mean(axis=0)
            rows.append(_row(class_names, str(path), f"scan (mean of {len(items)})", mean, True))
    return rows


def _row(
    class_names: Sequence[str], path: str, item: str, probs: np.ndarray, aggregate: bool
) -> FilePrediction:
    named = {c: round(float(p), 6) for c, p in zip(class_names, probs, strict=True)}
    return FilePrediction(path, item, named, class_names[int(np.argmax(probs))], aggregate)


def predictions_json(rows: Sequence[FilePrediction]) -> str:
    """Rows as a JSON array of objects."""
    return json.dumps([asdict(r) for r in rows], indent=2)


def predictions_csv(rows: Sequence[FilePrediction], class_names: Sequence[str]) -> str:
    """Rows as CSV: path, item, aggregate, predicted, then p_<class> per class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "item", "aggregate", "predicted", *[f"p_{c}" for c in class_names]])
    for r in rows:
        probs = [f"{r.probabilities[c]:.6f}" for c in class_names]
        writer.writerow([r.path, r.item, int(r.aggregate), r.predicted, *probs])
    return buffer.getvalue()


def write_predictions(
    rows: Sequence[FilePrediction], class_names: Sequence[str], out: str | Path
) -> Path:
    """Write rows to `out` as CSV (.csv) or JSON (.json), atomically."""
    target = Path(out)
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(
            "unknown predictions file type",
            path=target,
            expected="a .csv or .json file name",
            found=suffix or "no extension",
        )
    text = predictions_json(rows) if suffix == ".json" else predictions_csv(rows, class_names)
    atomic_write_text(target, text)
    return target
