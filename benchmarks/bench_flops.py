"""FLOP utilisation of training steps against this CPU's measured matmul peak, fp32 and bf16.

Usage:
    python benchmarks/bench_flops.py            # resnet50 and densenet121, 224x224, batch 16
    python benchmarks/bench_flops.py --quick    # 128x128, batch 8, fewer repeats

The peak is measured here, not taken from a data sheet: the best rate of large square
matrix multiplications (torch.mm) in fp32 and in bf16 (bf16 runs on AMX/AVX512-BF16 where the
CPU has them). A model's FLOPs per training step (forward + backward, one batch) are counted
with torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as two FLOPs, as the
matmul peak does. Achieved FLOP/s = counted FLOPs / best step time, and utilisation = achieved
/ peak of the same precision: fp32 steps against the fp32 peak, steps under the toolkit's
precision policy (bf16 autocast + channels_last) against the bf16 peak. Every figure is a ratio
of numbers measured in this one run; on a shared machine absolute rates drift, ratios less so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lungcancer.models import create_model
from lungcancer.train.precision import PrecisionPolicy, physical_cores, resolve_policy


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best FLOP/s of an n x n by n x n matrix product in `dtype`."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    seconds = best_seconds(lambda: torch.mm(a, b), repeats)
    return 2.0 * n**3 / seconds


def _step(model: nn.Module, policy: PrecisionPolicy, x: torch.Tensor, y: torch.Tensor) -> None:
    with policy.autocast():
        loss = nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()


def step_flops(name: str, batch: int, size: int) -> float:
    """FLOPs of one forward + backward pass of `name` on a batch (counted, not timed)."""
    model = create_model(name, num_classes=2)
    x = torch.rand(batch, 1, size, size)
    y = torch.zeros(batch, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        _step(model, resolve_policy("fp32", "cpu"), x, y)
    return float(counter.get_total_flops())


def step_seconds(name: str, policy: PrecisionPolicy, batch: int, size: int, repeats: int) -> float:
    """Best wall time of one forward + backward pass under `policy`."""
    torch.manual_seed(0)
    model = policy.prepare_model(create_model(name, num_classes=2), 2).train()
    x = policy.prepare_input(torch.rand(batch, 1, size, size))
    y = torch.zeros(batch, dtype=torch.long)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        _step(model, policy, x, y)

    return best_seconds(step, repeats)


def main(argv: list[str] | None = None) -> None:
    """Measure the peaks, then each model's utilisation in fp32 and under the policy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,densenet121")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--matmul", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128x128, batch 8, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.repeats = 128, 8, 2
    threads = physical_cores()
    torch.set_num_threads(threads)
    fp32_policy = resolve_policy("fp32", "cpu", threads=threads)
    policy = resolve_policy("auto", "cpu", threads=threads)
    peaks = {"fp32": matmul_peak(torch.float32, args.matmul, args.repeats + 2)}
    peaks["bf16"] = matmul_peak(torch.bfloat16, args.matmul, args.repeats + 2)
    print(f"torch {torch.__version__}, {threads} threads; policy: {policy.describe()}")
    print(
        f"matmul peak ({args.matmul}x{args.matmul}): fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s (bf16/fp32 {peaks['bf16'] / peaks['fp32']:.2f}x)"
    )
    print(f"training step, {args.size}x{args.size}, batch {args.batch}, forward + backward:")
    for name in args.models.split(","):
        flops = step_flops(name, args.batch, args.size)
        for mode, p in (("fp32", fp32_policy), (policy.name, policy)):
            seconds = step_seconds(name, p, args.batch, args.size, args.repeats)
            achieved = flops / seconds
            peak = peaks["bf16" if p.name == "bf16" else "fp32"]
            print(
                f"  {name} {mode}: {flops / 1e9:.1f} GFLOP/step, {seconds:.3f} s/step, "
                f"{achieved / 1e9:.1f} GFLOP/s, utilisation {achieved / peak:.3f} of the "
                f"{'bf16' if p.name == 'bf16' else 'fp32'} matmul peak"
            )


if __name__ == "__main__":
    main()
