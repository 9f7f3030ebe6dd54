"""Deployment formats: ONNX and TorchScript export with a parity check, and ONNX inference."""
