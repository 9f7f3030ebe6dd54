"""Preprocessed-sample cache: an epoch decoded from files versus an epoch loaded from the cache.

Usage:
    python benchmarks/bench_cache.py            # 200 PNG slices + a 300-slice 512x512 series
    python benchmarks/bench_cache.py --quick    # 60 PNGs + a 60-slice series (under a minute)

Two datasets, each timed as whole epochs of `ClassificationDataset`-style loading:
- PNG slices (512x512 grey, as in slice datasets) preprocessed to 128x128;
- lesion samples of one DICOM series (each sample decodes the series when not cached).
"decode" is an epoch of a Dataset without cache (read + preprocess per sample), "cache" an
epoch of a Dataset over a filled `SampleCache` (memory-mapped .npy, copied per item). Building
a cached Dataset hashes each file's content once per process; that is timed on its own. The
DICOM reading ratio of bench_io
(read_image versus a raw pydicom loop) is measured and printed in the same run.
Target: cache at least 20x faster than decoding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from bench_io import best_time, time_raw_pydicom, time_read_image, write_series
from lungcancer.config import DataConfig
from lungcancer.data.cache import ContentHasher, SampleCache
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.torch_dataset import ClassificationDataset


def write_pngs(folder: Path, n: int, size: int, seed: int = 0) -> list[Sample]:
    """Write `n` noisy grey PNG slices and return them as samples."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = ((yy - 0.5) / 0.4) ** 2 + ((xx - 0.5) / 0.45) ** 2 < 1
    samples = []
    for i in range(n):
        image = np.where(body, 150, 10) + rng.integers(0, 40, size=(size, size))
        path = folder / f"slice_{i:04d}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        samples.append(Sample(path=str(path), label="a"))
    return samples


def dataset(
    samples: list[Sample], cfg: DataConfig, cache: SampleCache | None
) -> ClassificationDataset:
    """An evaluation Dataset over `samples` (no augmentation: only loading is timed)."""
    index = DatasetIndex(tuple(samples), ("a",), "manifest", "", has_patient_ids=False)
    return ClassificationDataset(index, range(len(samples)), cfg, train=False, cache=cache)


def epoch(data: ClassificationDataset) -> None:
    """Load every item once, as a DataLoader epoch does."""
    for i in range(len(data)):
        data[i]


def compare(
    name: str,
    samples: list[Sample],
    cfg: DataConfig,
    cache_root: Path,
    repeats: int,
) -> float:
    """Time decode and cache epochs; print and return the ratio decode / cache epoch."""
    uncached = dataset(samples, cfg, None)
    decode = best_time(lambda: epoch(uncached), repeats)
    start = time.perf_counter()
    filling = dataset(samples, cfg, SampleCache(cache_root))
    epoch(filling)
    first = time.perf_counter() - start
    # As in a new process: a fresh cache object hashes file contents again (once, when the
    # Dataset is built), then its first epoch opens each .npy, later epochs reuse the maps.
    builds, opens, reuses = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fresh = SampleCache(cache_root, hasher=ContentHasher(shared=False))
        cached = dataset(samples, cfg, fresh)
        built = time.perf_counter()
        epoch(cached)
        opened = time.perf_counter()
        epoch(cached)
        builds.append(built - start)
        opens.append(opened - built)
        reuses.append(time.perf_counter() - opened)
    keys, cold, warm = min(builds), min(opens), min(reuses)
    per = 1000.0 / len(samples)
    print(f"{name}: {len(samples)} samples")
    print(f"  decode epoch (read + preprocess):        {decode * per:10.3f} ms/sample")
    print(f"  first epoch with cache (decode + write): {first * per:10.3f} ms/sample")
    print(f"  cached Dataset built in a new process:   {keys * per:10.3f} ms/sample (hashing)")
    print(f"  cache epoch, opening the .npy files:     {cold * per:10.3f} ms/sample")
    print(f"  cache epoch, memory maps already open:   {warm * per:10.3f} ms/sample")
    ratio = decode / cold
    print(f"  ratio decode / cache epoch (opening):    {ratio:10.1f}x (target >= 20x)")
    print(f"  ratio decode / cache epoch (maps open):  {decode / warm:10.1f}x")
    return ratio


def main(argv: list[str] | None = None) -> None:
    """Build both datasets in a temporary folder and print the timings and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pngs", type=int, default=200, help="PNG slices")
    parser.add_argument("--size", type=int, default=512, help="PNG and DICOM rows/columns")
    parser.add_argument("--slices", type=int, default=300, help="DICOM series slices")
    parser.add_argument("--lesions", type=int, default=4, help="samples in the DICOM series")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 PNGs, 60-slice series")
    args = parser.parse_args(argv)
    if args.quick:
        args.pngs, args.slices, args.repeats = 60, 60, 2
    cfg = DataConfig(image_size=128)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pngs = write_pngs(root / "pngs", args.pngs, args.size)
        compare("PNG slices 512x512 -> 128x128", pngs, cfg, root / "cache", args.repeats)
        series = root / "series"
        paths = write_series(series, args.slices, args.size, args.size)
        lesions = [
            Sample(path=str(series), label="a", slice_index=int(z), center_zyx=(z, 256.0, 256.0))
            for z in np.linspace(args.slices * 0.2, args.slices * 0.8, args.lesions).round()
        ]
        compare(
            f"DICOM series {args.slices}x{args.size}x{args.size}, lesion slices",
            lesions,
            cfg,
            root / "cache",
            max(1, args.repeats - 1),
        )
        raw = time_raw_pydicom(paths, args.repeats)
        ours = time_read_image(series, args.repeats)
        raw = min(raw, time_raw_pydicom(paths, args.repeats))
        print(f"DICOM reading ({args.slices} slices, from bench_io):")
        print(f"  raw pydicom loop {raw:.3f} s, read_image {ours:.3f} s")
        print(f"  ratio read_image / raw pydicom:          {ours / raw:8.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
