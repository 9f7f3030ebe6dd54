"""Inference latency: ONNX Runtime (CPU, fp32) against eager PyTorch (fp32 and the bf16 policy).

Usage:
    python benchmarks/bench_export.py               # cnn and densenet121, 128x128, batch 1 and 32
    python benchmarks/bench_export.py --quick       # cnn only, fewer repeats
    python benchmarks/bench_export.py --threads 1   # on a shared, busy machine

Every number comes from this one run on this machine: the models are exported with
`lungcancer.export` (parity checked), then each engine runs the same input batch. The engines
are timed in turn within every repeat (so load changes hit all of them), times are the medians
after warm-up, and ratios are PyTorch time / ONNX Runtime time (above 1: ONNX Runtime faster).
The bf16 column uses the toolkit's precision policy (bf16 autocast + channels_last) and is only
measured where the CPU has native bf16 (AVX512-BF16/AMX).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lungcancer.config import DataConfig, ModelConfig
from lungcancer.export.convert import export_onnx
from lungcancer.export.runtime import load_onnx_classifier
from lungcancer.models import create_model
from lungcancer.train.precision import cpu_supports_bf16, physical_cores, resolve_policy


@dataclass
class _Bundle:
    model: torch.nn.Module
    class_names: tuple[str, ...]
    data_config: DataConfig
    model_config: Any


def interleaved_median_ms(
    engines: dict[str, Callable[[], object]], *, warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time (ms) of each engine, timing them in turn within every repeat.

    Interleaving spreads any change in machine load (other processes on a shared box) over all
    engines alike, so the ratios stay fair even when the absolute times drift.
    """
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, fn in engines.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_model(
    name: str, size: int, batches: tuple[int, ...], repeats: int, threads: int, folder: Path
) -> None:
    """Export one model and print a line per batch size."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).eval()
    bundle = _Bundle(
        model, ("a", "b", "c", "d"), DataConfig(image_size=size), ModelConfig(name=name)
    )
    report = export_onnx(bundle, folder / f"{name}.onnx")
    onnx_clf = load_onnx_classifier(report.path, threads=threads)
    # The bf16 policy's model: same weights, channels_last, run under bf16 autocast.
    policy = resolve_policy("bf16", "cpu") if cpu_supports_bf16() else None
    bf16_model = create_model(name, num_classes=4).eval()
    bf16_model.load_state_dict(model.state_dict())
    if policy is not None:
        bf16_model = policy.prepare_model(bf16_model, 2).eval()
    for batch in batches:
        x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(batch))
        x_np = x.numpy()
        reps = max(3, repeats // batch)

        @torch.inference_mode()
        def eager_fp32(x: torch.Tensor = x) -> object:
            return model(x)

        engines: dict[str, Callable[[], object]] = {
            "fp32": eager_fp32,
            "ort": lambda x_np=x_np: onnx_clf.probabilities(x_np),
        }
        if policy is not None:
            x_bf16 = policy.prepare_input(x)

            @torch.inference_mode()
            def eager_bf16(x: torch.Tensor = x_bf16) -> object:
                assert policy is not None
                with policy.autocast():
                    return bf16_model(x)

            engines["bf16"] = eager_bf16
        ms = interleaved_median_ms(engines, warmup=2, repeats=reps)
        line = (
            f"{name:12s} batch {batch:3d}: eager fp32 {ms['fp32']:9.1f} ms | "
            f"ONNX Runtime fp32 {ms['ort']:9.1f} ms | fp32/ORT {ms['fp32'] / ms['ort']:5.2f}x"
        )
        if "bf16" in ms:
            line += f" | eager bf16 {ms['bf16']:9.1f} ms | bf16/ORT {ms['bf16'] / ms['ort']:5.2f}x"
        print(line, flush=True)
    print(f"{'':12s} parity of the export: max |dp| {report.max_abs_diff:.1e}", flush=True)


def main() -> None:
    """Parse flags and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=32, help="repeats at batch 1")
    parser.add_argument("--quick", action="store_true", help="cnn only, fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for both engines (0: physical cores); on a shared, busy machine use 1, "
        "as OpenMP's spinning threads slow down by orders of magnitude when cores are taken",
    )
    args = parser.parse_args()
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    models = ("cnn",) if args.quick else ("cnn", "densenet121")
    repeats = 8 if args.quick else args.repeats
    print(
        f"torch {torch.__version__}, {threads} threads, {args.size}x{args.size}, "
        f"CPU bf16: {'yes' if cpu_supports_bf16() else 'no (bf16 rows skipped)'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            bench_model(name, args.size, (1, 32), repeats, threads, Path(tmp))


if __name__ == "__main__":
    main()
