"""Does `torch.compile` speed up a classifier training step on this CPU?

Usage:
    python benchmarks/bench_compile.py [--models densenet121,cnn] [--rounds 5] [--threads 1]
    python benchmarks/bench_compile.py --device cuda     # on a GPU, in its AMP policy

Training steps (forward, cross-entropy, backward, AdamW) at 128 x 128, batch 32, two input
channels, six classes, in the device's precision policy (on this CPU fp32 channels_last; on a
GPU AMP + channels_last): eager against `torch.compile(model)` (inductor), timed by
`bench_train`'s paired rounds (both modes back to back in each round, so background load hits
both alike). Prints the compile time (the first compiled step) and the median of the rounds'
speed-ups. The training engine does not compile: on the development CPU (no AVX512-BF16) a
DenseNet121 step compiled ran at 0.95x eager and the cnn's at 1.07x (README, *Precision
policy*), less than the compile time returns within a 15-minute budget.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_train import _median_ratio, _paired_rates, _steps_per_second
from lungcancer.models import create_model
from lungcancer.train.precision import resolve_policy

BATCH, SIZE, CHANNELS, CLASSES = 32, 128, 2, 6
STEPS = 2  # per mode and round


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
    torch.manual_seed(0)
    batch = torch.randn(BATCH, CHANNELS, SIZE, SIZE).to(policy.device)
    labels = torch.randint(0, CLASSES, (BATCH,)).to(policy.device)
    for name in args.models.split(","):
        models = {}
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            net = policy.prepare_model(
                create_model(name, in_chans=CHANNELS, num_classes=CLASSES), 2
            )
            models[mode] = (torch.compile(net) if mode == "compiled" else net, policy)
        started = time.perf_counter()
        _steps_per_second(*models["compiled"], batch, labels, 1)
        print(f"{name}: compile + first step {time.perf_counter() - started:.1f} s")
        # bench_train's paired rounds: both modes back to back in each round, after a warm-up.
        rates = _paired_rates(models, batch, labels, steps=STEPS, rounds=args.rounds)
        for eager, compiled in zip(rates["eager"], rates["compiled"], strict=True):
            print(f"  eager {1 / eager:.2f} s/step, compiled {1 / compiled:.2f} s/step")
        ratio, spread = _median_ratio(rates["compiled"], rates["eager"])
        print(f"  median speed-up of torch.compile: {ratio:.2f}x (range {spread})")


if __name__ == "__main__":
    main()
