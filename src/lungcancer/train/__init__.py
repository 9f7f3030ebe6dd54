"""lungcancer.train: the classifier training engine, checkpoints, precision policy, inference.

`train(data_cfg, model_cfg, train_cfg) -> TrainResult` runs a whole training; `load_classifier`
and `predict_files` / `predict_dataset` use its checkpoints. Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungcancer.lazy import lazy_exports

if TYPE_CHECKING:
    from lungcancer.train.api import RunSpec, TrainResult, fit, train
    from lungcancer.train.checkpoint import RunFolder, load_checkpoint, save_checkpoint
    from lungcancer.train.inference import (
        FilePrediction,
        LoadedClassifier,
        load_classifier,
        predict_dataset,
        predict_files,
        write_predictions,
    )
    from lungcancer.train.precision import PrecisionPolicy, resolve_policy

_WHERE = {
    "RunSpec": "api",
    "TrainResult": "api",
    "fit": "api",
    "train": "api",
    "RunFolder": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "FilePrediction": "inference",
    "LoadedClassifier": "inference",
    "load_classifier": "inference",
    "predict_dataset": "inference",
    "predict_files": "inference",
    "write_predictions": "inference",
    "PrecisionPolicy": "precision",
    "resolve_policy": "precision",
}

__all__ = [
    "FilePrediction",
    "LoadedClassifier",
    "PrecisionPolicy",
    "RunFolder",
    "RunSpec",
    "TrainResult",
    "fit",
    "load_checkpoint",
    "load_classifier",
    "predict_dataset",
    "predict_files",
    "resolve_policy",
    "save_checkpoint",
    "train",
    "write_predictions",
]


__getattr__ = lazy_exports(__name__, _WHERE)
