"""Auxiliary targets: extra per-sample annotations the network also learns to predict.

A stage label is a coarse function of findings a dataset often records beside it: LungSim's
manifest has the tumour's greatest diameter, its T, N and M descriptors and whether it invades
the chest wall or mediastinum; LIDC-style datasets carry diameter, margin and spiculation
ratings. Predicting those from the same pooled features (multi-task learning) hands the
backbone a denser signal than the class alone, where the class depends on a size threshold or a
small node the network has not yet learned to look at.

The auxiliary head only exists during training: it is never part of the classifier's
`state_dict`, so evaluation, predict, export and Grad-CAM see the same model either way. Its
weights and the target encoding are saved under the checkpoint's "aux" entry so `--resume`
continues exactly.

A lesion mask is a denser signal still (`train.aux_mask_weight`): a 1x1 convolution on the
backbone's last feature map predicts, for every cell (32 x 32 input pixels for DenseNet121 at
128 px, 16 x 16 for the cnn), whether the lesion reaches into it: binary cross-entropy against
the max-pooled mask. A small tumour is then something the network is told to find, not only a
few pixels that happen to go with a label. Masks are read on the input grid (the image's own
crop) and move with the image's flips and affine. Samples without a mask file are left out of
this loss (unknown, not "no lesion"); an empty mask file says "no lesion here".

Columns are read from `Sample.extra` (any manifest column). A column whose every present value
parses as a number is a regression target (z-scored with the training split's mean and
standard deviation, Huber loss); any other is categorical (its training split's values are the
classes, cross-entropy). An empty or "nan" cell is missing: it adds nothing to that column's
loss but still counts in the batch mean (see `aux_loss`); LungSim's normal and benign patients
have no T, N or M.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from lungcancer.config import TrainConfig
from lungcancer.data.index import Sample
from lungcancer.errors import ConfigError
from lungcancer.models.registry import Classifier
from lungcancer.train.precision import PrecisionPolicy

# Cells that mean "not recorded". "none" is not among them: it is a finding (no invasion).
MISSING = ("", "nan", "n/a")


@dataclass(frozen=True)
class AuxColumn:
    """How one manifest column becomes a target.

    Attributes:
        name: the manifest column.
        categories: class values of a categorical column (output i = categories[i]); empty
            for a numeric column.
        mean: training-split mean of a numeric column.
        std: training-split standard deviation of a numeric column (>= a small floor).
    """

    name: str
    categories: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def numeric(self) -> bool:
        return not self.categories

    @property
    def outputs(self) -> int:
        """Head outputs this column uses: 1 for a number, one per category."""
        return 1 if self.numeric else len(self.categories)

    def encode(self, raw: str) -> float:
        """A cell as a target: a z-score, a class index, or NaN when missing or unseen."""
        value = raw.strip()
        if value.lower() in MISSING:
            return math.nan
        if self.numeric:
            return (float(value) - self.mean) / self.std
        return float(self.categories.index(value)) if value in self.categories else math.nan


@dataclass(frozen=True)
class AuxSpec:
    """The auxiliary targets of a run, fixed from its training split."""

    columns: tuple[AuxColumn, ...]

    @property
    def outputs(self) -> int:
        return sum(c.outputs for c in self.columns)

    def encode(self, sample: Sample) -> torch.Tensor:
        """One float per column (NaN where the sample has no value)."""
        return torch.tensor(
            [c.encode(sample.extra.get(c.name, "")) for c in self.columns], dtype=torch.float32
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [
                {"name": c.name, "categories": list(c.categories), "mean": c.mean, "std": c.std}
                for c in self.columns
            ]
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> AuxSpec:
        return cls(
            tuple(
                AuxColumn(
                    name=str(c["name"]),
                    categories=tuple(c["categories"]),
                    mean=float(c["mean"]),
                    std=float(c["std"]),
                )
                for c in state["columns"]
            )
        )


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def build_aux_spec(samples: Sequence[Sample], names: Sequence[str]) -> AuxSpec:
    """Target encodings for `names`, from the training samples' manifest columns.

    Raises:
        ConfigError: a column no training sample has a value for (misspelt, or a layout without
            a manifest), with the columns that do exist.
    """
    available = sorted({key for s in samples for key in s.extra})
    columns = []
    for name in names:
        values = [s.extra.get(name, "").strip() for s in samples]
        present = [v for v in values if v.lower() not in MISSING]
        if not present:
            raise ConfigError(
                f"auxiliary target {name!r} has no value in any training sample",
                expected="a manifest column with values for at least some training samples",
                found=f"columns: {', '.join(available) or 'none (this layout has no manifest)'}",
                hint="fix train.aux_targets, or leave it empty to train on the class alone",
            )
        if all(_is_number(v) for v in present):
            numbers = torch.tensor([float(v) for v in present], dtype=torch.float64)
            std = float(numbers.std(unbiased=False)) if len(present) > 1 else 0.0
            columns.append(AuxColumn(name, mean=float(numbers.mean()), std=max(std, 1e-6)))
        else:
            columns.append(AuxColumn(name, categories=tuple(sorted(set(present)))))
    return AuxSpec(tuple(columns))


class AuxTargetDataset(Dataset[tuple[torch.Tensor, ...]]):
    """A classification dataset whose items also carry the auxiliary targets: (image, label,
    column targets) and, with `masks`, the lesion mask on the input grid as a fourth entry.

    Everything else (labels, samples, reseeding) is the wrapped dataset's.
    """

    def __init__(self, base: Any, spec: AuxSpec, *, masks: bool = False) -> None:
        self.base = base
        self.spec = spec
        self.masks = masks
        self.labels: list[int] = list(base.labels)
        self._targets = [spec.encode(s) for s in base.samples]

    def __len__(self) -> int:
        return len(self.base)

    def reseed(self, seed: int) -> None:
        reseed = getattr(self.base, "reseed", None)
        if callable(reseed):
            reseed(seed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self.masks:
            image, label, mask = self.base.item_with_mask(i)
            return image, label, self._targets[i], mask
        image, label = self.base[i]
        return image, label, self._targets[i]


class AuxHead(nn.Module):
    """One linear layer from the pooled features to every column's outputs and, with
    `mask_channels`, a 1x1 convolution from the last feature map to lesion logits per cell."""

    def __init__(self, in_features: int, spec: AuxSpec, mask_channels: int = 0) -> None:
        super().__init__()
        self.spec = spec
        # No columns (a mask loss alone): no layer, an empty output.
        self.fc = nn.Linear(in_features, spec.outputs) if spec.outputs else None
        self.mask = nn.Conv2d(mask_channels, 1, 1) if mask_channels else None

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            return pooled[:, :0]
        return torch.as_tensor(self.fc(pooled))


class WithAux(nn.Module):
    """Classifier + auxiliary head as one module (so DDP syncs both): x -> (logits, column
    outputs) or, with a mask head, (logits, column outputs, mask logits per cell)."""

    def __init__(self, classifier: Classifier, head: AuxHead) -> None:
        super().__init__()
        self.classifier = classifier
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.classifier.forward_features(x)
        logits = self.classifier.forward_head(features)
        columns = self.head(self.classifier.forward_head(features, pre_logits=True))
        if self.head.mask is None:
            return logits, columns
        return logits, columns, self.head.mask(features)


def mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of per-cell lesion logits against the max-pooled input mask.

    A cell's target is 1 when the lesion covers at least half of any input pixel in it. Samples
    whose mask is unknown (NaN) add nothing but count in the batch mean, as in `aux_loss`.

    Args:
        logits: (B, 1, h, w) mask logits on the feature map's grid.
        masks: (B, 1, S, S) lesion share per input pixel, NaN where the sample has no mask.
    """
    logits = logits.float()
    known = ~torch.isnan(masks[:, 0, 0, 0])
    target = F.adaptive_max_pool2d(
        (torch.nan_to_num(masks.float()) >= 0.5).float(), logits.shape[-2:]
    )
    per_cell = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_sample = per_cell.flatten(1).mean(1) * known.float()
    return per_sample.sum() / max(1, len(logits))


def aux_loss(outputs: torch.Tensor, targets: torch.Tensor, spec: AuxSpec) -> torch.Tensor:
    """Mean over columns of each column's per-sample loss, averaged over the whole batch.

    A sample without a value adds 0 to that column but still counts in the batch: the loss is
    then a plain mean over samples, so two DDP processes with half the batch each average to
    exactly the single-process loss (a mean over the values present would not), and a batch
    with one labelled sample does not weigh that sample as much as a full batch.

    Args:
        outputs: (B, spec.outputs) head outputs.
        targets: (B, len(spec.columns)) encoded targets (NaN = missing).
        spec: the encoding.

    Returns:
        A scalar; 0 (with a gradient path) when no sample in the batch has any target.
    """
    outputs = outputs.float()
    batch = max(1, len(outputs))
    total = outputs.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) when all is missing
    start = 0
    for j, column in enumerate(spec.columns):
        out = outputs[:, start : start + column.outputs]
        start += column.outputs
        target = targets[:, j]
        present = ~torch.isnan(target)
        if not present.any():
            continue
        if column.numeric:
            losses = F.smooth_l1_loss(out[present, 0], target[present], reduction="sum")
        else:
            losses = F.cross_entropy(out[present], target[present].long(), reduction="sum")
        total = total + losses / batch
    return total / max(1, len(spec.columns))


@dataclass(frozen=True)
class AuxTraining:
    """A run's auxiliary targets: their encoding, head, training dataset and weighted loss."""

    spec: AuxSpec
    head: AuxHead
    dataset: AuxTargetDataset
    weight: float

    mask_weight: float = 0.0

    def loss(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The weighted auxiliary loss: (column outputs[, mask logits]) against (column
        targets[, masks]), as `WithAux` and `AuxTargetDataset` hand them over."""
        total = self.weight * aux_loss(outputs[0], targets[0], self.spec)
        if self.mask_weight > 0:
            total = total + self.mask_weight * mask_loss(outputs[1], targets[1])
        return total

    def describe(self) -> str:
        parts = [
            f"{c.name} (numeric)" if c.numeric else f"{c.name} ({len(c.categories)} classes)"
            for c in self.spec.columns
        ]
        text = f"auxiliary targets, loss weight {self.weight:g}: {', '.join(parts) or 'none'}"
        if self.mask_weight > 0:
            text += f"; lesion mask per feature-map cell, loss weight {self.mask_weight:g}"
        return text


def aux_training(
    cfg: TrainConfig,
    train_set: Dataset[tuple[torch.Tensor, int]],
    model: Classifier,
    resumed: dict[str, Any] | None,
    policy: PrecisionPolicy,
) -> AuxTraining | None:
    """The auxiliary head and targets when `train.aux_targets` names any or
    `train.aux_mask_weight` is set (else None).

    The encoding comes from the training split, or from the checkpoint when resuming, so a
    resumed run predicts the very same targets. The head is placed as `policy` places the
    model: on its device, and in its memory layout, since the mask head convolves the
    backbone's feature map (left contiguous, its weight's gradient came back channels-last and
    DistributedDataParallel warned and copied it every step).
    """
    saved = (resumed or {}).get("aux")
    saved_names = tuple(c["name"] for c in saved["spec"]["columns"]) if saved else ()
    saved_mask = saved is not None and "mask.weight" in saved["state_dict"]
    masks = cfg.aux_mask_weight > 0
    if resumed is not None and (saved_names != tuple(cfg.aux_targets) or saved_mask != masks):
        raise ConfigError(
            "--resume with other auxiliary targets than the run was started with",
            expected=f"train.aux_targets = {list(saved_names)} and a lesion-mask loss "
            f"{'on' if saved_mask else 'off'} (as in last.pt)",
            found=f"train.aux_targets = {list(cfg.aux_targets)}, train.aux_mask_weight = "
            f"{cfg.aux_mask_weight:g}",
            hint="resume with the run's own config.yaml, or start a new run (--out)",
        )
    if cfg.aux_mask_weight < 0:
        raise ConfigError(
            "train.aux_mask_weight must not be negative",
            expected="0 (off) or a positive weight, e.g. 1",
            found=str(cfg.aux_mask_weight),
        )
    if not cfg.aux_targets and not masks:
        return None
    samples = getattr(train_set, "samples", None)
    if samples is None:
        raise ConfigError(
            "train.aux_targets needs a dataset with per-sample manifest fields",
            expected="a lungcancer ClassificationDataset (train() builds one)",
            found=type(train_set).__name__,
            hint="leave train.aux_targets empty for this dataset",
        )
    if cfg.aux_targets and not cfg.aux_weight > 0:
        raise ConfigError(
            "train.aux_weight must be positive when train.aux_targets is set",
            expected="aux_weight > 0, e.g. 0.5",
            found=str(cfg.aux_weight),
        )
    if masks:
        _check_masks(train_set, samples)
    spec = AuxSpec.from_dict(saved["spec"]) if saved else build_aux_spec(samples, cfg.aux_targets)
    head = AuxHead(model.head_features, spec, model.num_features if masks else 0)
    if saved:
        head.load_state_dict(saved["state_dict"])
    policy.prepare_model(head, 2)  # in place: Module.to moves and relayouts the module itself
    return AuxTraining(
        spec,
        head,
        AuxTargetDataset(train_set, spec, masks=masks),
        cfg.aux_weight,
        cfg.aux_mask_weight,
    )


def _check_masks(train_set: Any, samples: Sequence[Sample]) -> None:
    """A mask loss needs 2D inputs, a dataset that serves masks and some sample with one."""
    dims = getattr(getattr(train_set, "cfg", None), "spatial_dims", 2)
    if dims != 2 or not callable(getattr(train_set, "item_with_mask", None)):
        raise ConfigError(
            "train.aux_mask_weight works on 2D slices from a lungcancer ClassificationDataset",
            expected="data.spatial_dims 2",
            found=f"data.spatial_dims {dims}, dataset {type(train_set).__name__}",
            hint="set train.aux_mask_weight: 0 for this data",
        )
    if not any(s.mask_path for s in samples):
        raise ConfigError(
            "train.aux_mask_weight is set but no training sample has a lesion mask",
            expected="a mask_path column in the manifest (an empty mask for lesion-free slices)",
            found=f"{len(samples)} training samples, none with a mask",
            hint="add masks to the manifest, or set train.aux_mask_weight: 0",
        )
