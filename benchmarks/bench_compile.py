"""Does `torch.compile` speed up a classifier training step on this CPU?

Usage:
    python benchmarks/bench_compile.py [--models densenet121,cnn] [--rounds 5] [--threads 1]
    python benchmarks/bench_compile.py --device cuda     # on a GPU, in its AMP policy

One training step (forward, cross-entropy, backward, AdamW) at 128 x 128, batch 32, two input
channels, six classes, in the device's precision policy (on this CPU fp32 channels_last; on a
GPU AMP + channels_last), eager against
`torch.compile(model)` (inductor), the two alternating so background load hits both alike.
Prints the compile time (the first compiled step) and the median of the paired rounds'
speed-ups. The training engine does not compile: on the development CPU (no AVX512-BF16)
DenseNet121 gained nothing and the cnn 8% (README, *Precision policy*), less than the compile
time returns within a 15-minute budget.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lungcancer.models import create_model
from lungcancer.train.precision import PrecisionPolicy, resolve_policy

BATCH, SIZE, CHANNELS, CLASSES = 32, 128, 2, 6


def _step(name: str, compiled: bool, policy: PrecisionPolicy) -> Callable[[], None]:
    torch.manual_seed(0)
    model = policy.prepare_model(create_model(name, in_chans=CHANNELS, num_classes=CLASSES), 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model
    x = policy.prepare_input(torch.randn(BATCH, CHANNELS, SIZE, SIZE))
    y = torch.randint(0, CLASSES, (BATCH,)).to(policy.device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with policy.autocast():
            loss = loss_fn(forward(x).float(), y)
        loss.backward()
        optimizer.step()
        if policy.device.type == "cuda":
            torch.cuda.synchronize(policy.device)  # kernels run asynchronously

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="densenet121,cnn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    policy = resolve_policy("auto", args.device, threads=args.threads)
    policy.apply_threads()
    print(policy.describe())
    for name in args.models.split(","):
        eager, compiled = _step(name, False, policy), _step(name, True, policy)
        started = time.perf_counter()
        compiled()
        print(f"{name}: compile + first step {time.perf_counter() - started:.1f} s")
        eager()
        compiled()
        ratios = []
        for _ in range(args.rounds):
            seconds = []
            for step in (eager, compiled):
                started = time.perf_counter()
                step()
                step()
                seconds.append((time.perf_counter() - started) / 2)
            ratios.append(seconds[0] / seconds[1])
            print(f"  eager {seconds[0]:.2f} s/step, compiled {seconds[1]:.2f} s/step")
        print(f"  median speed-up of torch.compile: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
