"""Transfer learning: load torchvision/timm-format ImageNet weights into our MONAI networks.

ImageNet weights were trained on RGB; CT is one channel (or one per window). The stem's filters
are summed over RGB, which is what the network computes when a grey image is fed as three equal
channels; for more input channels the filters repeat and are scaled so activations keep their
size (timm's `adapt_input_conv`). For 3D networks every 2D kernel is inflated along depth and
divided by its depth (I3D), so a volume that is constant along z gives the 2D activations.
The classifier head is always new: ImageNet's 1,000 classes mean nothing for CT.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import urllib.error
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.models.registry import Classifier

log = logging.getLogger("lungcancer.models")

# torchvision's reference weights (the file names carry the first hex digits of their SHA-256,
# which `check_hash` verifies).
IMAGENET_URLS = {
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
}

# Below this fraction of backbone tensors loaded, the file is for another architecture.
MIN_MATCHED_FRACTION = 0.5

# torchvision's DenseNet names `denselayerN.norm1`; its old files say `denselayerN.norm.1`.
# MONAI nests the same modules one level deeper, in `denselayerN.layers`.
_DENSE_LAYER_KEY = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(.+)$")


@dataclass(frozen=True)
class PretrainedReport:
    """What a pretrained load did.

    Attributes:
        source: the path, URL or "imagenet" the weights came from.
        loaded: model tensors filled from the file (as is or adapted).
        adapted: names of tensors whose input channels were adapted or that were inflated to 3D.
        missing: backbone tensors the file did not provide (they keep their random init).
        unexpected: file tensors with no place in the model (the old head among them).
        mismatched: tensors present in both with shapes that cannot be adapted.
    """

    source: str
    loaded: int
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the run log."""
        return (
            f"pretrained weights from {self.source}: {self.loaded} tensors loaded "
            f"({len(self.adapted)} adapted), {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched; head is new"
        )


def read_state_dict(source: str, model_name: str) -> dict[str, torch.Tensor]:
    """Fetch a state dict from "imagenet", a URL, or a local file, never executing code.

    Args:
        source: "imagenet" (torchvision's file for `model_name`, through torch.hub's cache),
            an http(s) URL, or a path to a `.pth`/`.pt` state dict or lungcancer checkpoint.
        model_name: the registered model the weights are for.

    Returns:
        Tensor name -> tensor, as stored in the file.
    """
    if source == "imagenet":
        if model_name not in IMAGENET_URLS:
            raise ConfigError(
                f"there are no ImageNet weights for {model_name!r}",
                expected=f"--pretrained imagenet with {', '.join(sorted(IMAGENET_URLS))}",
                found=model_name,
                hint="train it from scratch (leave --pretrained empty) or pass a weights PATH",
            )
        loaded = _download(IMAGENET_URLS[model_name], check_hash=True)
    elif source.startswith(("http://", "https://")):
        loaded = _download(source, check_hash=False)
    else:
        loaded = _load_file(Path(source))
    return _unwrap(loaded, source)


def remap_keys(model_name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision/timm tensor names to ours (names already ours pass through)."""
    remapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        # Weights saved from DataParallel/DDP or torch.compile carry a wrapper prefix.
        name = key.removeprefix("module.").removeprefix("_orig_mod.")
        if model_name == "densenet121":
            match = _DENSE_LAYER_KEY.match(name)
            if match:
                prefix, kind, index, leaf = match.groups()
                name = f"{prefix}.layers.{kind}{index}.{leaf}"
        remapped[name] = value
    return remapped


def adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-conv weight (out, in, *k) trained on `in` channels to `in_chans`."""
    source_chans = weight.shape[1]
    if source_chans == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / source_chans)
    tiled = weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :in_chans]
    return tiled * (source_chans / in_chans)


def inflate_to_3d(weight: torch.Tensor, depth: int) -> torch.Tensor:
    """I3D inflation of a 2D conv weight (out, in, kh, kw) to (out, in, depth, kh, kw)."""
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def load_pretrained(model: Classifier, model_name: str, source: str) -> PretrainedReport:
    """Load pretrained weights into `model`'s backbone and give it a fresh head.

    Args:
        model: a freshly built classifier.
        model_name: its registered name (selects the key mapping and the ImageNet URL).
        source: "imagenet", a URL, or a local path.

    Returns:
        What was loaded, adapted, missing and unexpected.

    Raises:
        CheckpointError: the file cannot be read, is unsafe, or too few tensors fit the model.
    """
    file_tensors = remap_keys(model_name, read_state_dict(source, model_name))
    target = model.state_dict()
    merged: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    mismatched: list[str] = []
    used: set[str] = set()
    for name, current in target.items():
        if model.is_head_parameter(name) or name not in file_tensors:
            continue
        used.add(name)
        value = file_tensors[name].to(current.dtype)
        fitted = _fit(value, current.shape)
        if fitted is None:
            mismatched.append(f"{name}: file {tuple(value.shape)}, model {tuple(current.shape)}")
            continue
        if fitted.shape != value.shape:
            adapted.append(name)
        merged[name] = fitted
    backbone = [n for n in target if not model.is_head_parameter(n) and _counts(n)]
    missing = [n for n in backbone if n not in merged]
    unexpected = sorted(k for k in file_tensors if k not in used and _counts(k))
    loaded = sum(1 for n in merged if _counts(n))
    if loaded < MIN_MATCHED_FRACTION * len(backbone):
        raise CheckpointError(
            f"the weights do not fit {model_name}: only {loaded} of {len(backbone)} backbone "
            "tensors match by name and shape",
            path=source,
            expected=f"a torchvision/timm-format {model_name} state dict "
            f"(e.g. {', '.join(backbone[:2])})",
            found=f"{len(file_tensors)} tensors, e.g. {', '.join(list(file_tensors)[:3])}; "
            f"{len(mismatched)} with wrong shapes",
            hint="pass weights of the same architecture, or leave --pretrained empty",
        )
    model.load_state_dict(merged, strict=False)
    model.reset_classifier(model.num_classes)
    report = PretrainedReport(
        source=source,
        loaded=loaded,
        adapted=adapted,
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )
    log.info(report.summary())
    if missing:
        log.warning("tensors not in the pretrained file (random init): %s", ", ".join(missing))
    return report


def _counts(name: str) -> bool:
    # BatchNorm's batch counter is bookkeeping, not a weight; files often omit it.
    return not name.endswith("num_batches_tracked")


def _fit(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """`value` reshaped to `shape` by channel adaptation and/or 3D inflation, else None."""
    if value.shape == shape:
        return value
    if value.ndim == 4 and len(shape) == 5:
        value = inflate_to_3d(value, shape[2])
    same_filters = value.shape[0] == shape[0] and value.shape[2:] == shape[2:]
    if value.ndim == len(shape) >= 3 and same_filters:
        value = adapt_input_channels(value, shape[1])
    return value if value.shape == shape else None


def _download(url: str, *, check_hash: bool) -> Any:
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=check_hash, weights_only=True
        )
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        raise CheckpointError(
            "could not download the pretrained weights (no network?)",
            path=url,
            expected="a reachable URL or a cached copy",
            found=str(exc),
            hint=f"download {url} on a machine with internet access and pass its local PATH "
            f"to --pretrained, or copy it to {cache} so that 'imagenet' finds it",
        ) from exc
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise _unsafe(url, exc) from exc
        raise _unreadable(Path(url), "downloaded weights", exc) from exc
    except RuntimeError as exc:
        raise CheckpointError(
            "the downloaded weights are corrupt or not the expected file",
            path=url,
            found=str(exc),
            hint="delete the cached copy under torch.hub's checkpoints folder and retry",
        ) from exc


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(
            "pretrained weights file not found",
            path=path,
            expected="'imagenet', an http(s) URL, or an existing .pth/.pt file",
            hint="check the path given to --pretrained",
        )
    return safe_torch_load(path, what="pretrained weights file")


def safe_torch_load(path: Path, *, what: str) -> Any:
    """`torch.load(weights_only=True)` with errors a user can act on.

    Args:
        path: the file to read.
        what: how to name the file in errors ("checkpoint", "pretrained weights file").

    Returns:
        The loaded object (tensors, containers and plain Python values only).

    Raises:
        CheckpointError: the file is unreadable, not a torch file, or holds Python objects
            (a pickled callable or class) whose loading could run code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise _unsafe(str(path), exc) from exc
        raise _unreadable(path, what, exc) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(path, what, exc) from exc


def _unreadable(path: Path, what: str, exc: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot read the {what}",
        path=path,
        expected="a file written by torch.save",
        found=f"{type(exc).__name__}: {_first_line(exc)}",
        hint="re-download or re-export the file; a partial copy or another format fails here",
    )


def _first_line(exc: Exception) -> str:
    # torch's weights-only errors bury the cause (e.g. "unsupported GLOBAL posix.system")
    # under a generic paragraph; show the line that names it.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "global" in line.lower() or "operand" in line.lower():
            return line
    return lines[0] if lines else type(exc).__name__


def _unsafe(where: str, exc: Exception) -> CheckpointError:
    return CheckpointError(
        "refusing to load: the file holds Python objects, not only tensors, and loading it "
        "could run code",
        path=where,
        expected="tensors, containers and plain values (torch.load(weights_only=True))",
        found=_first_line(exc),
        hint="re-save only the weights: torch.save(model.state_dict(), PATH) where you trust it",
    )


def _unwrap(loaded: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a raw state dict, a lungcancer checkpoint or a training file."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = loaded.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(
            "the pretrained file holds no state dict",
            path=source,
            expected="a mapping of tensor names to tensors",
            found=type(loaded).__name__,
        )
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
