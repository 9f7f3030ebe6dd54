"""DICOM series reading: `read_image(folder)` versus a plain pydicom loop over the same files.

Usage:
    python benchmarks/bench_io.py              # 300 slices of 512x512 int16, as in the issue
    python benchmarks/bench_io.py --slices 40  # quick run

Prints the best-of-N times and their ratio (target: read_image within 1.5x of raw pydicom).
Other benchmarks can reuse `write_series` and the timers (e.g. to add a cache-load ratio).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungcancer.io import read_image


def write_series(
    folder: Path, n_slices: int = 300, rows: int = 512, columns: int = 512, seed: int = 0
) -> list[Path]:
    """Write an uncompressed int16 CT series (one file per slice) and return the paths.

    Args:
        folder: where to write (created).
        n_slices: number of slices.
        rows: image rows.
        columns: image columns.
        seed: for the pixel noise.

    Returns:
        The file paths, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    body = ((yy - rows / 2) / (rows * 0.4)) ** 2 + ((xx - columns / 2) / (columns * 0.45)) ** 2
    base = np.where(body < 1.0, 1024 + 40, 0).astype(np.int16)
    series_uid, study_uid = generate_uid(), generate_uid()
    paths: list[Path] = []
    for index in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.PatientID = "BENCH"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, -400.0 + 1.25 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.25
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        noise = rng.integers(-20, 20, size=(rows, columns), dtype=np.int16)
        ds.PixelData = (base + noise).astype("<i2").tobytes()
        path = folder / f"IM{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def raw_pydicom_volume(paths: list[Path]) -> np.ndarray:
    """The plain loop a user would write: dcmread, pixel_array, rescale, stack."""
    slices = []
    for path in paths:
        ds = pydicom.dcmread(path)
        slices.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(slices).astype(np.float32)


def pydicom_decode_only(paths: list[Path]) -> int:
    """The floor: dcmread and pixel_array of every file, no rescale, no volume."""
    n_pixels = 0
    for path in paths:
        n_pixels += pydicom.dcmread(path).pixel_array.size
    return n_pixels


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Best wall time of `repeats` calls, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def time_raw_pydicom(paths: list[Path], repeats: int = 3) -> float:
    """Best time of `raw_pydicom_volume` over the files."""
    return best_time(lambda: raw_pydicom_volume(paths), repeats)


def time_read_image(folder: Path, repeats: int = 3) -> float:
    """Best time of `lungcancer.io.read_image(folder)`."""
    return best_time(lambda: read_image(folder), repeats)


def main(argv: list[str] | None = None) -> None:
    """Write a series, check both readers agree, and print their times and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows and columns")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        paths = write_series(folder, args.slices, args.size, args.size)
        np.testing.assert_array_equal(read_image(folder).array, raw_pydicom_volume(paths))
        # Warm the page cache and imports for both before timing either.
        raw_seconds = time_raw_pydicom(paths, args.repeats)
        ours_seconds = time_read_image(folder, args.repeats)
        raw_seconds = min(raw_seconds, time_raw_pydicom(paths, args.repeats))
        floor_seconds = best_time(lambda: pydicom_decode_only(paths), args.repeats)
    print(f"series: {args.slices} slices of {args.size}x{args.size} int16, uncompressed")
    print(f"raw pydicom loop (dcmread + pixel_array + rescale + stack): {raw_seconds:.3f} s")
    print(f"lungcancer.io.read_image(folder):                           {ours_seconds:.3f} s")
    print(f"pydicom decode only (dcmread + pixel_array, no volume):     {floor_seconds:.3f} s")
    print(f"ratio read_image / raw pydicom loop: {ours_seconds / raw_seconds:.2f}x (target <=1.5x)")
    print(f"ratio read_image / decode only:      {ours_seconds / floor_seconds:.2f}x")


if __name__ == "__main__":
    main()
