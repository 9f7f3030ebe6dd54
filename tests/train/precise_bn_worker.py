"""Precise BN under torchrun: each rank recomputes the statistics from batches of its own, and
writes what it ends with to the report folder given on the command line. Also the probe
network and batches the in-process tests use."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from lungcancer.train.distributed import distributed_session
from lungcancer.train.precise_bn import recompute_batch_norm
from lungcancer.train.precision import resolve_policy


def probe() -> nn.Sequential:
    """conv -> BN -> dropout -> conv -> BN: the second BN sees what dropout leaves."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Dropout(0.5),
        nn.Conv2d(3, 2, 1),
        nn.BatchNorm2d(2),
    )


def batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` batches of 4 one-channel 6x6 images, each batch with its own mean and spread."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(4, 1, 6, 6, generator=g) * (i + 1) + i, torch.zeros(4, dtype=torch.long))
        for i in range(n)
    ]


def main(report_dir: str) -> None:
    torch.set_num_threads(1)
    with distributed_session("cpu") as context:
        assert context is not None, "run me under torchrun"
        model = probe()
        policy = resolve_policy("fp32", "cpu", threads=1)
        recompute_batch_norm(model, batches(2, seed=context.rank), policy, context=context)
        torch.save(model.state_dict(), Path(report_dir) / f"rank{context.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
