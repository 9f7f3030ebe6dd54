"""Inference latency per slice and per 300-slice volume: naive fp32 against the precision policy.

Usage:
    python benchmarks/bench_inference.py            # densenet121, 512x512 slices, 300-slice series
    python benchmarks/bench_inference.py --quick    # cnn, 60-slice series, fewer repeats

Three timings, each in plain fp32 (contiguous) and under the toolkit's policy (bf16 autocast +
channels_last on CPUs with native BF16, fp32 channels_last on others), from one untrained
checkpoint (weights do not change the timing):
- slice: one 512x512 DICOM file to probabilities, `predict_files` (read, preprocess, forward);
- volume: a DICOM series folder to per-scan probabilities, `predict_files` as `lungcancer
  predict` runs it (read the series, sample slices, forward, average);
- every slice: all slices of that series through the network in batches of 64 (the forward cost
  of scoring a whole scan), reported per slice.
The precisions alternate within every repeat so load on a shared machine hits both alike;
times are medians. Ratios: fp32 / policy (above 1: the policy is faster) and the batched
per-slice cost against the single-slice latency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_io import write_series
from bench_train import _untrained_checkpoint, _write_dicom_slice
from lungcancer.train.inference import load_classifier, predict_arrays, predict_files
from lungcancer.train.precision import physical_cores


def interleaved_medians(engines: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed in turn within every repeat (after a warm-up)."""
    for fn in engines.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, fn in engines.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    """Time slice, volume and whole-scan inference in both precisions and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--slices", type=int, default=300, help="slices in the series")
    parser.add_argument("--image-size", type=int, default=128, help="network input side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="cnn, 60 slices, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.slices, args.repeats = "cnn", 60, 3
    torch.set_num_threads(physical_cores())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dicom = _write_dicom_slice(root / "slice.dcm")
        series = root / "series"
        write_series(series, args.slices, 512, 512)
        checkpoint = _untrained_checkpoint(root / "model.pt", args.model, args.image_size)
        models = {p: load_classifier(checkpoint, precision=p) for p in ("fp32", "auto")}
        # One token, layout included: without native BF16 both sides compute in fp32 and differ
        # only in layout (contiguous against channels_last).
        chosen = models["auto"].policy
        policy_name = f"{chosen.name}+{chosen.layout}" if chosen.channels_last else chosen.name
        arrays = [array for _, array in _all_slices(series, models["fp32"])]

        def scan(clf: object) -> None:
            with torch.inference_mode():
                for i in range(0, len(arrays), 64):
                    predict_arrays(clf, arrays[i : i + 64])  # type: ignore[arg-type]

        results = {}
        for what, run in (
            ("slice", lambda clf: predict_files(clf, [dicom])),
            ("volume", lambda clf: predict_files(clf, [series])),
            ("every slice", scan),
        ):
            engines = {p: (lambda clf=clf, run=run: run(clf)) for p, clf in models.items()}
            results[what] = interleaved_medians(engines, args.repeats)
    print(
        f"{args.model}, input {args.image_size}x{args.image_size}, {physical_cores()} threads, "
        f"policy {policy_name}; medians of {args.repeats}"
    )
    for what, label in (
        ("slice", "per slice (512x512 DICOM file -> probabilities)"),
        ("volume", f"per {args.slices}-slice volume (series folder -> per-scan probabilities)"),
    ):
        fp32, policy = results[what]["fp32"], results[what]["auto"]
        print(
            f"  {label}: fp32 {fp32 * 1000:.0f} ms, {policy_name} {policy * 1000:.0f} ms, "
            f"fp32/policy {fp32 / policy:.2f}x"
        )
    fp32, policy = (results["every slice"][p] / len(arrays) for p in ("fp32", "auto"))
    print(
        f"  every slice of the volume, batches of 64: fp32 {fp32 * 1000:.1f} ms/slice, "
        f"{policy_name} {policy * 1000:.1f} ms/slice, fp32/policy {fp32 / policy:.2f}x; "
        f"batched/single-slice latency {policy / results['slice']['auto']:.3f}"
    )


def _all_slices(series: Path, clf: object) -> list[tuple[str, np.ndarray]]:
    """Every axial slice of a series, preprocessed with the checkpoint's settings."""
    from lungcancer.data.transforms import preprocess
    from lungcancer.io import read_image

    scan = read_image(series)
    cfg = clf.data_config  # type: ignore[attr-defined]
    return [(f"z={z}", preprocess(scan, cfg, slice_index=z)) for z in range(scan.shape[0])]


if __name__ == "__main__":
    main()
