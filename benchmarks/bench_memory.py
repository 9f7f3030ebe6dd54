"""Peak resident memory of real training runs on CPU: 2D at 224x224 batch 32, 3D on 64^3 patches.

Usage:
    python benchmarks/bench_memory.py                 # every case below (default batch 32)
    python benchmarks/bench_memory.py --quick         # cnn 2D, cnn 3D, densenet121 2D
    python benchmarks/bench_memory.py --case 2d:densenet121:32   # one case (used internally)

Each case runs `lungcancer.train.api.fit` (the loop `lungcancer train` uses: precision policy,
AdamW, validation, checkpoint writes) for one epoch of two steps on in-memory random images, in
a fresh subprocess, and reads that process's peak RSS (getrusage ru_maxrss), so imports, the
optimizer state, autocast copies and the checkpoint write all count, and cases do not inherit
each other's heap. Target: every case under 8 GB. Printed as GB and as a ratio of the budget.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

BUDGET_GB = 8.0
CASES = (
    "2d:resnet50:32",
    "2d:densenet121:32",
    "2d:cnn:32",
    "3d:resnet50:32",
    "3d:densenet121:32",
    "3d:cnn:32",
)
QUICK_CASES = ("2d:cnn:32", "3d:cnn:32", "2d:densenet121:32")


def run_case(case: str) -> float:
    """Train one case in this process; return its peak RSS in GB."""
    import torch
    from torch.utils.data import Dataset

    from lungcancer.config import DataConfig, ModelConfig, TrainConfig
    from lungcancer.train.api import RunSpec, fit
    from lungcancer.train.checkpoint import RunFolder

    dims_text, name, batch_text = case.split(":")
    dims, batch = int(dims_text[0]), int(batch_text)
    shape = (1, 224, 224) if dims == 2 else (1, 64, 64, 64)

    class RandomImages(Dataset[tuple[torch.Tensor, int]]):
        def __init__(self, n: int, seed: int) -> None:
            self.images = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
            self.labels = [i % 2 for i in range(n)]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.images[i], self.labels[i]

    with tempfile.TemporaryDirectory() as tmp:
        train_cfg = TrainConfig(
            out_dir=tmp, epochs=1, batch_size=batch, warmup_epochs=0, patience=0
        )
        spec = RunSpec(
            model_name=name,
            model_args={"in_chans": 1, "num_classes": 2, "spatial_dims": dims, "dropout": 0.2},
            class_names=("benign", "malignant"),
            data_cfg=DataConfig(spatial_dims=dims, image_size=224, patch_size_3d=64),
            model_cfg=ModelConfig(name=name, spatial_dims=dims),
            train_cfg=train_cfg,
        )
        # Two full steps, then a validation pass of one batch.
        with RunFolder(tmp, echo=False).locked() as run:
            fit(spec, RandomImages(2 * batch + 1, 0), RandomImages(batch, 1), run)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def measure(case: str) -> float:
    """Peak RSS (GB) of `case`, run in a fresh subprocess."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--case", case],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("peak_rss_gb="):
            return float(line.split("=", 1)[1])
    raise RuntimeError(f"case {case} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    """Run the cases and print peak RSS against the 8 GB budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="run one case here, as dims:model:batch")
    parser.add_argument("--quick", action="store_true", help="the three cheapest cases")
    args = parser.parse_args(argv)
    if args.case:
        print(f"peak_rss_gb={run_case(args.case):.3f}")
        return
    print(f"peak RSS of one epoch of fit() (2 steps + validation), budget {BUDGET_GB:g} GB:")
    for case in QUICK_CASES if args.quick else CASES:
        dims, name, batch = case.split(":")
        size = "224x224" if dims == "2d" else "64^3"
        peak = measure(case)
        print(
            f"  {dims} {name} {size} batch {batch}: peak RSS {peak:.2f} GB, "
            f"{peak / BUDGET_GB:.2f} of the budget ({'under' if peak < BUDGET_GB else 'OVER'})"
        )


if __name__ == "__main__":
    main()
