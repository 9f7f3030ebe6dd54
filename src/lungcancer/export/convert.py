"""Export a trained classifier to ONNX or TorchScript, with a parity check.

Both formats hold the network with its softmax, so they output logits and probabilities, and
both carry the metadata a deployment needs without the checkpoint: the class names and the
preprocessing config (window, size, spacing, dimensionality). The exported file is checked on
sample inputs of two batch sizes against the eager PyTorch model; the file is only written when
the largest absolute difference of the probabilities is within the tolerance.

ONNX: opset 17 (ONNX Runtime 1.14+ and every current runtime run it), a dynamic batch axis,
input `image` (B, C, H, W) or (B, C, D, H, W) in [0, 1], outputs `logits` and `probabilities`.
We use PyTorch's TorchScript-based exporter (`dynamo=False`): it needs no extra package
(the torch.export-based one requires onnxscript), exports our convolutional nets exactly, and
takes seconds rather than minutes on a CPU.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lungcancer.config import DataConfig, to_dict
from lungcancer.errors import ConfigError, ExportError
from lungcancer.io.atomic import atomic_path

OPSET = 17
ONNX_FORMAT = "lungcancer-classifier-onnx"
TORCHSCRIPT_FORMAT = "lungcancer-classifier-torchscript"
METADATA_VERSION = 1
PARITY_TOLERANCE = 1e-4
TORCHSCRIPT_METADATA_FILE = "lungcancer.json"
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


class ExportableClassifier(Protocol):
    """What exporting needs from a loaded classifier (`train.inference.LoadedClassifier`)."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def class_names(self) -> Any: ...

    @property
    def data_config(self) -> DataConfig: ...

    @property
    def model_config(self) -> Any: ...


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how closely it reproduces the PyTorch model.

    Attributes:
        path: the written file.
        format: "onnx" or "torchscript".
        opset: the ONNX opset (None for TorchScript).
        max_abs_diff: largest absolute difference of the probabilities on the samples.
        tolerance: the largest difference accepted.
        n_samples: inputs compared (over two batch sizes).
        input_shape: one input's shape, (C, H, W) or (C, D, H, W).
    """

    path: Path
    format: str
    opset: int | None
    max_abs_diff: float
    tolerance: float
    n_samples: int
    input_shape: tuple[int, ...]


class _WithSoftmax(nn.Module):
    """The classifier followed by softmax: the exported graph returns both tensors.

    Build it in eval mode: the ONNX exporter restores the wrapper's mode afterwards, and a
    wrapper left in training mode would switch the wrapped model to training mode too.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image)
        return logits, torch.softmax(logits, dim=1)


def input_shape(clf: ExportableClassifier) -> tuple[int, ...]:
    """The shape of one network input, from the preprocessing config."""
    cfg = clf.data_config
    channels = int(getattr(clf.model, "in_chans", len(cfg.windows)))
    if cfg.spatial_dims == 3:
        side = cfg.patch_size_3d
        return (channels, side, side, side)
    return (channels, cfg.image_size, cfg.image_size)


def sample_inputs(shape: tuple[int, ...], *, seed: int = 0) -> list[torch.Tensor]:
    """Two batches (3 and 1 inputs) in [0, 1], so the dynamic batch axis is exercised too."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand((n, *shape), generator=generator) for n in (3, 1)]


def metadata(clf: ExportableClassifier, fmt: str, opset: int | None) -> dict[str, str]:
    """String key/values stored in the exported file."""
    model_config = clf.model_config
    if model_config is not None and not isinstance(model_config, dict):
        model_config = to_dict(model_config)
    from lungcancer import __version__

    return {
        "lungcancer_format": ONNX_FORMAT if fmt == "onnx" else TORCHSCRIPT_FORMAT,
        "lungcancer_metadata_version": str(METADATA_VERSION),
        "lungcancer_version": __version__,
        "class_names": json.dumps(list(clf.class_names)),
        "data_config": json.dumps(to_dict(clf.data_config)),
        "model_config": json.dumps(model_config),
        "opset": "" if opset is None else str(opset),
        "outputs": "logits, probabilities",
    }


def _eager_probabilities(model: nn.Module, batches: list[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        return [torch.softmax(model(b).float(), dim=1).numpy() for b in batches]


def _parity(
    expected: list[np.ndarray],
    run: Callable[[torch.Tensor], np.ndarray],
    batches: list[torch.Tensor],
    tolerance: float,
    path: Path,
    fmt: str,
) -> float:
    worst = 0.0
    for batch, want in zip(batches, expected, strict=True):
        got = run(batch)
        if got.shape != want.shape:
            raise ExportError(
                f"the {fmt} export returns outputs of the wrong shape",
                path=path,
                expected=str(want.shape),
                found=str(got.shape),
                hint="report this model; the export did not keep the batch axis dynamic",
            )
        worst = max(worst, float(np.max(np.abs(got - want))))
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(
            f"the {fmt} export does not reproduce the model's probabilities",
            path=path,
            expected=f"max |difference| <= {tolerance:g}",
            found=f"{worst:.3g}",
            hint="nothing was written; report the model and versions (torch, onnx, runtime)",
        )
    return worst


def export_onnx(
    clf: ExportableClassifier,
    out: str | Path,
    *,
    opset: int = OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export to ONNX with metadata; write it only if ONNX Runtime matches PyTorch.

    Args:
        clf: the loaded classifier (model in eval mode).
        out: the .onnx file to write.
        opset: ONNX opset version.
        tolerance: largest accepted absolute difference of probabilities.

    Returns:
        The report, with the measured difference.

    Raises:
        ExportError: the export fails or its outputs differ from PyTorch's.
    """
    import onnx
    import onnxruntime as ort

    target = Path(out)
    model = clf.model.eval().cpu()
    shape = input_shape(clf)
    batches = sample_inputs(shape)
    expected = _eager_probabilities(model, batches)
    with atomic_path(target) as tmp:
        with warnings.catch_warnings():
            # The TorchScript-based exporter warns that it is no longer the default; we choose
            # it on purpose (see the module docstring), and tracer notes are not actionable.
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    _WithSoftmax(model).eval(),
                    (batches[0],),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["image"],
                    output_names=["logits", "probabilities"],
                    dynamic_axes={
                        "image": {0: "batch"},
                        "logits": {0: "batch"},
                        "probabilities": {0: "batch"},
                    },
                )
            except Exception as exc:  # the exporter raises many unrelated types
                raise ExportError(
                    "the model cannot be exported to ONNX",
                    path=target,
                    found=f"{type(exc).__name__}: {exc}",
                    hint=f"try another opset (this used {opset}) or --format torchscript",
                ) from exc
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, metadata(clf, "onnx", opset))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])

        def run(batch: torch.Tensor) -> np.ndarray:
            return np.asarray(session.run(["probabilities"], {"image": batch.numpy()})[0])

        worst = _parity(expected, run, batches, tolerance, target, "ONNX")
    return ExportReport(
        target, "onnx", opset, worst, tolerance, sum(len(b) for b in batches), shape
    )


def export_torchscript(
    clf: ExportableClassifier, out: str | Path, *, tolerance: float = PARITY_TOLERANCE
) -> ExportReport:
    """Export to TorchScript (traced) with metadata in the archive's extra files.

    The metadata is `lungcancer.json` inside the archive; read it with
    `torch.jit.load(path, _extra_files={"lungcancer.json": ""})`.

    Raises:
        ExportError: tracing fails or the traced model's outputs differ from the model's.
    """
    target = Path(out)
    model = clf.model.eval().cpu()
    shape = input_shape(clf)
    batches = sample_inputs(shape)
    expected = _eager_probabilities(model, batches)
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(metadata(clf, "torchscript", None))}
    with atomic_path(target) as tmp:
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, but TorchScript is the format
            # asked for (C++/mobile runtimes load it); our parity check replaces check_trace.
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(_WithSoftmax(model).eval(), batches[0], check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files=extra)
                loaded = torch.jit.load(str(tmp), map_location="cpu")
            except Exception as exc:  # tracing raises many unrelated types
                raise ExportError(
                    "the model cannot be traced to TorchScript",
                    path=target,
                    found=f"{type(exc).__name__}: {exc}",
                    hint="try --format onnx",
                ) from exc

        def run(batch: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return np.asarray(loaded(batch)[1].numpy())

        worst = _parity(expected, run, batches, tolerance, target, "TorchScript")
    return ExportReport(
        target, "torchscript", None, worst, tolerance, sum(len(b) for b in batches), shape
    )


def export_classifier(
    clf: ExportableClassifier,
    fmt: str,
    out: str | Path,
    *,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export to `fmt` ("onnx" or "torchscript"); see `export_onnx`/`export_torchscript`."""
    if fmt == "onnx":
        return export_onnx(clf, out, tolerance=tolerance)
    if fmt == "torchscript":
        return export_torchscript(clf, out, tolerance=tolerance)
    raise ConfigError("unknown export format", expected=" or ".join(FORMATS), found=fmt)


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """`model.pt` -> `model.onnx` / `model.torchscript.pt`, beside the checkpoint."""
    path = Path(checkpoint)
    stem = path.name.split(".")[0] or "model"
    return path.with_name(stem + SUFFIXES.get(fmt, "." + fmt))
