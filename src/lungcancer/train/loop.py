"""One epoch of training, one pass of evaluation, and the metrics early stopping watches.

No file I/O happens here (that is `lungcancer.train.api`'s rank-0 job), and the sampler is
passed in, so a multi-process (DDP) run can swap in a sharding sampler without touching the
loops.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lungcancer.errors import TrainingError
from lungcancer.train.precision import PrecisionPolicy
from lungcancer.train.schedule import WarmupCosine

BALANCE_MODES = ("sampler", "weights", "none")


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's data order and augmentation, distinct per (seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**31)


class EpochSampler(Sampler[int]):
    """Indices of one epoch, a pure function of (seed, epoch), so a resumed run replays them.

    With `balance="sampler"` indices are drawn with replacement, each sample weighted by the
    inverse of its class frequency (what `WeightedRandomSampler` does); otherwise a shuffle.
    `set_epoch(epoch, skip)` picks the epoch and drops the first `skip` indices (the batches an
    interrupted run had already trained on).

    Args:
        labels: class id per sample.
        balance: "sampler" for class-balanced drawing, anything else shuffles.
        seed: the run's seed.
    """

    def __init__(self, labels: Sequence[int], *, balance: str, seed: int) -> None:
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.balance = balance
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        counts = torch.bincount(self.labels).double()
        self.weights = 1.0 / counts[self.labels]

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch whose order `__iter__` yields, minus its first `skip` indices."""
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.labels)
        if self.balance == "sampler":
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        return iter(order[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, len(self.labels) - self.skip)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Loss weights inversely proportional to class frequency, averaging 1 over present classes.

    A class absent from training gets weight 0 (it never occurs in a target anyway).
    """
    counts = torch.bincount(torch.as_tensor(list(labels)), minlength=num_classes).double()
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    present = int((counts > 0).sum())
    return (weights * present / weights.sum()).float()


@dataclass(frozen=True)
class LowResPhase:
    """A cheap first phase: optimizer steps before `until_step` train on smaller inputs.

    The networks end in global pooling, so the same weights take any input size; the cheaper
    early steps buy more of them within a CPU budget, and the steps after `until_step` at the
    full size settle the weights (and batch-norm statistics) at the size that is validated and
    deployed. Two ways to make an input smaller:

    - resize (`px`): anti-aliased, bilinear with antialiasing in 2D, area averaging in 3D.
      Every structure then looks smaller by px / size, so sizes in mm (a T threshold) shift.
    - crop (`crop_px`): the centre of the input at the same pixel size, so nothing changes
      scale; only the margin is left out (on a lung-centred input, the body wall and the air
      around it). Targets on the input's grid (a lesion mask) are cropped with it.

    Attributes:
        px: side length of the resized input, in pixels (voxels in 3D); 0 when cropping.
        until_step: the first optimizer step (0-based, counted over the run) at full size.
        crop_px: the centre crop's size per spatial axis ((rows, columns) in 2D), or ().
    """

    px: int
    until_step: int
    crop_px: tuple[int, ...] = ()

    def describe(self) -> str:
        """The phase's input in words, for the run log."""
        if self.crop_px:
            return f"inputs cropped to their central {' x '.join(map(str, self.crop_px))} px"
        return f"inputs resized to {self.px} px"

    def apply(
        self, images: torch.Tensor, targets: Sequence[torch.Tensor], step: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`images` (B, C, *spatial) made smaller while `step` is in the phase, and `targets`
        on the same grid (same spatial shape) cropped with them; other targets unchanged.

        Resizing leaves the targets alone: a lesion mask is pooled to the feature map's grid
        anyway, and the resized image still spans the whole of it.
        """
        targets = list(targets)
        if step >= self.until_step:
            return images, targets
        if not self.crop_px:
            return self.resize(images, step), targets
        grid = tuple(images.shape[2:])
        if len(self.crop_px) != len(grid):
            raise ValueError(f"a {len(self.crop_px)}-axis crop for inputs of shape {grid}")
        index = tuple(
            slice((n - c) // 2, (n - c) // 2 + c) if c < n else slice(None)
            for n, c in zip(grid, self.crop_px, strict=True)
        )
        crop = (slice(None), slice(None), *index)
        cropped = [
            t[crop] if t.ndim == images.ndim and tuple(t.shape[2:]) == grid else t for t in targets
        ]
        return images[crop], cropped

    def resize(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """`images` (B, C, *spatial) resized to `px` across while `step` is in the phase."""
        if step >= self.until_step or all(n == self.px for n in images.shape[2:]):
            return images
        size = (self.px,) * (images.ndim - 2)
        if images.ndim == 4:
            return F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return F.interpolate(images, size=size, mode="area")


@dataclass
class EpochProgress:
    """Running totals of the epoch in progress (kept so an interrupted epoch can resume).

    Attributes:
        steps: optimizer steps taken this epoch.
        seen: training images consumed this epoch.
        loss_sum: sum of per-image losses.
        correct: correctly classified training images (argmax of the logits).
        seconds: time spent in this epoch's training steps.
    """

    steps: int = 0
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.seen)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.seen)

    @property
    def images_per_s(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    loss_fn: nn.Module,
    policy: PrecisionPolicy,
    *,
    progress: EpochProgress,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    aux_loss_fn: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
    | None = None,
    low_res: LowResPhase | None = None,
) -> EpochProgress:
    """Train for one pass over `loader`, updating `progress` in place after every step.

    Args:
        model: the classifier (set to training mode here).
        loader: batches of (images, labels).
        optimizer: its groups' rates are set by `schedule` before each step.
        schedule: the per-step learning-rate schedule.
        loss_fn: criterion on (logits, labels).
        policy: device, autocast and memory format.
        progress: totals so far (non-zero when resuming an interrupted epoch).
        grad_clip: max global gradient norm; 0 disables clipping.
        scaler: gradient scaler for fp16 AMP, else None.
        on_batch: called with the batch size after each step (progress bars).
        should_stop: polled after each step; True ends the epoch early (Ctrl-C), leaving
            `progress` at a batch boundary so the epoch can resume from there.
        aux_loss_fn: with auxiliary targets, the weighted loss on (aux outputs, aux targets);
            the model then returns (logits, *aux outputs) and batches are
            (images, labels, *aux targets) (see `lungcancer.train.aux`).
        low_res: resize or crop the inputs of the run's early steps (see `LowResPhase`); a
            lesion mask target is cropped with them, and needs no resizing, as it is pooled to
            the feature map's grid.

    Returns:
        `progress`, completed or (after a stop request) partial.

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    model.train()
    for images, labels, *aux_targets in loader:
        started = time.perf_counter()
        x = policy.prepare_input(images)
        if low_res is not None:
            # Made smaller on the device; prepare_input again restores the memory format.
            x, aux_targets = low_res.apply(x, aux_targets, schedule.step_count)
            x = policy.prepare_input(x)
        y = labels.to(policy.device, non_blocking=True)
        schedule.apply()
        with policy.autocast():
            if aux_loss_fn is None:
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            else:
                logits, *aux_out = model(x)
                aux_y = [t.to(policy.device, non_blocking=True) for t in aux_targets]
                loss = loss_fn(logits.float(), y) + aux_loss_fn(aux_out, aux_y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} at step {progress.steps + 1} of this "
                "epoch; the run stopped and the last good checkpoint is kept",
                expected="a finite loss",
                found=str(loss.item()),
                hint="lower the learning rate (--lr), keep gradient clipping on, check the "
                "data for NaNs, or try --precision fp32",
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.advance()
        batch = len(y)
        progress.steps += 1
        progress.seen += batch
        progress.loss_sum += float(loss.detach()) * batch
        progress.correct += int((logits.detach().argmax(1) == y).sum())
        progress.seconds += time.perf_counter() - started
        if on_batch is not None:
            on_batch(batch)
        if should_stop is not None and should_stop():
            break
    return progress


@dataclass(frozen=True)
class Predictions:
    """Labels and class probabilities of a pass over a dataset, in dataset order."""

    labels: np.ndarray
    probabilities: np.ndarray
    loss: float


@torch.inference_mode()
def evaluate_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    policy: PrecisionPolicy,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Class probabilities and mean cross-entropy (no smoothing, no weights) over `loader`."""
    model.eval()
    all_labels: list[np.ndarray] = []
    all_probs: list[np.ndarray] = []
    loss_sum = 0.0
    for images, labels in loader:
        x = policy.prepare_input(images)
        y = labels.to(policy.device)
        with policy.autocast():
            logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        all_probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        all_labels.append(labels.numpy())
        if on_batch is not None:
            on_batch(len(y))
    n = sum(len(a) for a in all_labels)
    return Predictions(
        labels=np.concatenate(all_labels) if all_labels else np.zeros(0, dtype=np.int64),
        probabilities=np.concatenate(all_probs) if all_probs else np.zeros((0, 0)),
        loss=loss_sum / max(1, n),
    )


def gather_predictions(predictions: Predictions) -> Predictions:
    """All processes' predictions in one (identity in a single-process run).

    Metrics are computed from the gathered set, never averaged per process, so AUC and F1 are
    those of the whole validation split.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return predictions
    parts: list[Predictions | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, predictions)
    present = [p for p in parts if p is not None and len(p.labels)]
    n = sum(len(p.labels) for p in present)
    return Predictions(
        labels=np.concatenate([p.labels for p in present]),
        probabilities=np.concatenate([p.probabilities for p in present]),
        loss=sum(p.loss * len(p.labels) for p in present) / max(1, n),
    )


@dataclass(frozen=True)
class EpochMetrics:
    """Validation metrics of one epoch.

    Attributes:
        loss: mean cross-entropy.
        accuracy: fraction of argmax predictions that are right.
        macro_auc: mean one-vs-rest ROC-AUC over the classes present (NaN if fewer than 2).
        macro_f1: macro F1 over the classes present in labels or predictions.
        absent_classes: class names with no sample in this split.
    """

    loss: float
    accuracy: float
    macro_auc: float
    macro_f1: float
    absent_classes: tuple[str, ...]


def epoch_metrics(predictions: Predictions, class_names: Sequence[str]) -> EpochMetrics:
    """Accuracy, macro ROC-AUC (one-vs-rest) and macro F1 of gathered predictions.

    Classes absent from the labels are left out of the AUC (it is undefined for them) and
    reported in `absent_classes` so the caller can warn.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    labels, probs = predictions.labels, predictions.probabilities
    if len(labels) == 0:
        nan = float("nan")
        return EpochMetrics(predictions.loss, nan, nan, nan, tuple(class_names))
    predicted = probs.argmax(axis=1)
    present = sorted(set(labels.tolist()))
    absent = tuple(name for i, name in enumerate(class_names) if i not in present)
    if len(present) >= 2:
        macro_auc = float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))
    else:
        macro_auc = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macro_f1 = float(f1_score(labels, predicted, average="macro", zero_division=0))
    return EpochMetrics(
        loss=predictions.loss,
        accuracy=float((predicted == labels).mean()),
        macro_auc=macro_auc,
        macro_f1=macro_f1,
        absent_classes=absent,
    )


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    sampler: Sampler[int] | None,
    workers: int,
    seed: int,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader whose worker seeds derive from `seed` (so augmentation repeats)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
