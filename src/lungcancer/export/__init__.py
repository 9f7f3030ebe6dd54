"""Deployment formats: ONNX and TorchScript export with a parity check, and ONNX inference."""

from lungcancer.export.convert import ExportReport, export_classifier
from lungcancer.export.runtime import OnnxClassifier, load_onnx_classifier, predict_files_onnx

__all__ = [
    "ExportReport",
    "OnnxClassifier",
    "export_classifier",
    "load_onnx_classifier",
    "predict_files_onnx",
]
