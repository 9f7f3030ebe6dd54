"""One small training run for the DDP test: in-process (the reference) or as a torchrun worker.

The probe network has no BatchNorm and no dropout: per-process batch statistics would make a
DDP step differ from a single-process step on the same global batch, which is the thing the
test compares. Run as a script under `torchrun --nproc_per_node 2`, each worker trains on its
shard and writes its final weights and history to the report folder given on the command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from train_builders import BlobDataset, BlobsWithFields

from lungcancer.config import DataConfig, ModelConfig, TrainConfig
from lungcancer.models import registry
from lungcancer.models.registry import Classifier, new_linear
from lungcancer.train.api import RunSpec, TrainResult, fit
from lungcancer.train.checkpoint import RunFolder, load_checkpoint
from lungcancer.train.distributed import distributed_session

PROBE = "ddp_probe"
TRAIN_SAMPLES = 24
# Odd on purpose: the two validation shards differ in size and nothing may be padded there.
VAL_SAMPLES = 9


class ProbeNet(Classifier):
    """Two strided convolutions, global pooling and a linear head."""

    head_prefixes = ("fc.",)

    def __init__(self, *, in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.in_chans, self.num_classes, self.spatial_dims = in_chans, num_classes, 2
        self.num_features = self.head_features = 16
        self.gradcam_layer = "features.2"
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc = new_linear(16, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.features(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else torch.as_tensor(self.fc(pooled))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = new_linear(16, num_classes)


def build_probe(
    *, in_chans: int = 1, num_classes: int, spatial_dims: int = 2, dropout: float = 0.0
) -> ProbeNet:
    """The registry builder (spatial_dims and dropout are fixed: 2D, none)."""
    return ProbeNet(in_chans=in_chans, num_classes=num_classes)


def run(out_dir: Path, *, batch_size: int, epochs: int = 2, aux: bool = False) -> TrainResult:
    """Train the probe with fit(); the batch size is per process; `aux` adds aux targets."""
    train_cfg = TrainConfig(
        out_dir=str(out_dir),
        epochs=epochs,
        batch_size=batch_size,
        lr=3e-3,
        warmup_epochs=1,
        precision="fp32",
        patience=0,
        threads=1,
        balance="sampler",
        device="cpu",
        aux_targets=("side_mm", "kind") if aux else (),
    )
    spec = RunSpec(
        model_name=PROBE,
        model_args={"in_chans": 1, "num_classes": 2, "spatial_dims": 2, "dropout": 0.0},
        class_names=("benign", "malignant"),
        data_cfg=DataConfig(image_size=32, augment=False),
        model_cfg=ModelConfig(name=PROBE, dropout=0.0),
        train_cfg=train_cfg,
    )
    with RunFolder(out_dir, echo=False).locked() as folder:
        train_set = BlobsWithFields(TRAIN_SAMPLES, seed=1)
        return fit(spec, train_set, BlobDataset(VAL_SAMPLES, seed=2), folder)


def main(out_dir: str, report_dir: str, batch_size: str, aux: str) -> None:
    """torchrun entry point: train, then report the history this rank computed."""
    registry._REGISTRY[PROBE] = build_probe
    torch.set_num_threads(1)
    with distributed_session("cpu") as context:
        assert context is not None, "run me under torchrun"
        result = run(Path(out_dir), batch_size=int(batch_size), aux=aux == "aux")
        report = {"history": result.history, "world_size": context.world_size}
        (Path(report_dir) / f"rank{context.rank}.json").write_text(json.dumps(report))


def result_weights(out_dir: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a run's last checkpoint."""
    return dict(load_checkpoint(Path(out_dir) / "last.pt")["state_dict"])


if __name__ == "__main__":
    main(*sys.argv[1:5])
