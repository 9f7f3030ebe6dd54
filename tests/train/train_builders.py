"""Tiny data for the training tests: in-memory datasets, run specs, image files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lungcancer.config import DataConfig, ModelConfig, TrainConfig
from lungcancer.data.index import Sample
from lungcancer.train.api import RunSpec


class BlobDataset(Dataset[tuple[torch.Tensor, int]]):
    """Noise images; class k > 0 adds a bright square whose size grows with k.

    Args:
        n: samples.
        num_classes: classes, assigned round-robin (or from `labels`).
        size: image side in pixels.
        seed: image content seed.
        labels: explicit class ids (overrides round-robin).
        nan_from: items at positions >= this are all-NaN (to break training on purpose).
    """

    def __init__(
        self,
        n: int,
        num_classes: int = 2,
        size: int = 32,
        seed: int = 0,
        labels: list[int] | None = None,
        nan_from: int | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.labels = labels if labels is not None else [i % num_classes for i in range(n)]
        images = rng.normal(0.3, 0.1, size=(len(self.labels), 1, size, size)).astype(np.float32)
        # Where each square is, (y, x, side), or None: the lesion masks of BlobsWithMasks.
        self.boxes: list[tuple[int, int, int] | None] = []
        for i, label in enumerate(self.labels):
            self.boxes.append(None)
            if label:
                side = 4 + 3 * label
                y, x = rng.integers(0, size - side, size=2)
                images[i, 0, y : y + side, x : x + side] += 0.6
                self.boxes[i] = (int(y), int(x), side)
        self.images = torch.from_numpy(images)
        self.nan_from = nan_from
        self.calls = 0

    def __len__(self) -> int:
        return len(self.labels)

    def as_volumes(self, depth: int = 16) -> BlobDataset:
        """The same samples as (1, depth, H, W) volumes: each image repeated along z."""
        self.images = self.images.unsqueeze(2).repeat(1, 1, depth, 1, 1)
        return self

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.calls += 1
        image = self.images[i]
        if self.nan_from is not None and self.calls > self.nan_from:
            image = torch.full_like(image, float("nan"))
        return image, self.labels[i]


class BlobsWithFields(BlobDataset):
    """BlobDataset whose samples carry manifest fields: the square's side and a category."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, num_classes=2, seed=seed)
        self.samples = [
            Sample(
                path=f"/blob{i}.png",
                label=str(y),
                extra={"side_mm": str(4 + 3 * y) if y else "", "kind": "square" if y else "noise"},
            )
            for i, y in enumerate(self.labels)
        ]

    def reseed(self, seed: int) -> None:  # the training loop calls it every epoch
        pass


class BlobsWithMasks(BlobsWithFields):
    """BlobsWithFields with a lesion mask per sample, as ClassificationDataset serves them:
    the square's mask (empty for noise images); every `unknown_every`-th sample has no mask
    file (NaN). Without `with_masks` no sample has a mask."""

    def __init__(self, n: int, seed: int, unknown_every: int = 5, with_masks: bool = True):
        super().__init__(n, seed)
        self.unknown = [with_masks is False or i % unknown_every == 0 for i in range(n)]
        self.samples = [
            dataclasses.replace(s, mask_path="" if self.unknown[i] else f"/blob{i}_mask.png")
            for i, s in enumerate(self.samples)
        ]
        self.mask_calls = 0

    def item_with_mask(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        self.mask_calls += 1
        image, label = self[i]
        mask = torch.zeros((1, *image.shape[1:]))
        box = self.boxes[i]
        if self.unknown[i]:
            mask.fill_(float("nan"))
        elif box is not None:
            y, x, side = box
            mask[0, y : y + side, x : x + side] = 1.0
        return image, label, mask


def make_spec(
    class_names: tuple[str, ...] = ("benign", "malignant"),
    model: str = "cnn",
    pretrained: str = "",
    spatial_dims: int = 2,
    **train: object,
) -> RunSpec:
    train_defaults: dict[str, object] = {
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_epochs": 1,
        "precision": "fp32",
        "patience": 0,
        "threads": 1,
    }
    train_defaults.update(train)
    train_cfg = TrainConfig(**train_defaults)  # type: ignore[arg-type]
    model_cfg = ModelConfig(
        name=model, pretrained=pretrained, dropout=0.1, spatial_dims=spatial_dims
    )
    return RunSpec(
        model_name=model,
        model_args={
            "in_chans": 1,
            "num_classes": len(class_names),
            "spatial_dims": spatial_dims,
            "dropout": 0.1,
        },
        class_names=class_names,
        data_cfg=DataConfig(image_size=32, patch_size_3d=16, spatial_dims=spatial_dims),
        model_cfg=model_cfg,
        train_cfg=train_cfg,
    )


def write_png_dataset(root: Path, per_class: int = 12, size: int = 32) -> Path:
    """A folder-per-class PNG dataset with patient ids in the file names."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("benign", "malignant")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.normal(0.3, 0.08, size=(size, size))
            if label:
                y, x = rng.integers(2, size - 12, size=2)
                image[y : y + 10, x : x + 10] += 0.6
            pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"patient_{label}{i:02d}_a.png")
    return root
