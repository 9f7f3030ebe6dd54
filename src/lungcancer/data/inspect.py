"""What the toolkit understood of a dataset: classes, counts, patients, formats, spacing, HU."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lungcancer.data.index import DatasetIndex
from lungcancer.data.layouts import load_index, read_sample
from lungcancer.errors import ImageReadError, LungCancerError
from lungcancer.io import detect_format

# Files fully decoded for the spacing and intensity summaries (format detection reads all).
DEFAULT_FILES_READ = 24


@dataclass(frozen=True)
class RangeSummary:
    """Minimum, median and maximum of one quantity over the files read."""

    min: float
    median: float
    max: float


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset as the toolkit sees it.

    Attributes:
        source: the path given.
        layout: the layout used.
        n_samples: samples (images, or lesions of volumes).
        class_names: classes in class-id order.
        counts: class -> split ("train", "val", "test", or "unassigned") -> samples.
        has_patient_ids: whether every sample has a patient id.
        n_patients: distinct patients (0 when there are no ids).
        formats: detected file format -> number of files.
        files_read: files decoded for the summaries below (a seeded random sample).
        spacing_mm: per axis (z, y, x) range of voxel spacing over the files read.
        intensity: "HU", "unit" or "mixed" over the files read.
        intensity_p1_p99: range of the files' 1st and 99th intensity percentiles.
        shapes: distinct image shapes (z, y, x) over the files read, most common first.
        problems: files skipped by the layout reader, and files that failed to decode here.
    """

    source: str
    layout: str
    n_samples: int
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    has_patient_ids: bool
    n_patients: int
    formats: dict[str, int]
    files_read: int
    spacing_mm: dict[str, RangeSummary]
    intensity: str
    intensity_p1_p99: dict[str, RangeSummary]
    shapes: list[str]
    problems: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict."""
        return asdict(self)


def _range(values: list[float]) -> RangeSummary:
    array = np.asarray(values, dtype=np.float64)
    return RangeSummary(
        min=round(float(array.min()), 3),
        median=round(float(np.median(array)), 3),
        max=round(float(array.max()), 3),
    )


def _formats(index: DatasetIndex, problems: list[str]) -> dict[str, int]:
    formats: Counter[str] = Counter()
    for path in sorted({s.path for s in index.samples}):
        if path.lower().endswith(".npz"):
            formats["medmnist-npz"] += 1
            continue
        try:
            formats[detect_format(path)] += 1
        except ImageReadError as exc:
            problems.append(f"{path}: {exc.message}")
    return dict(formats.most_common())


def summarize(
    index: DatasetIndex, *, source: str = "", files: int = DEFAULT_FILES_READ, seed: int = 0
) -> DatasetSummary:
    """Summarise an index, decoding up to `files` of its images (a seeded random sample).

    Args:
        index: the dataset.
        source: the path the user gave (reported back).
        files: how many images to decode for spacing and intensity summaries.
        seed: which random sample of images.

    Returns:
        The summary.
    """
    problems = list(index.problems)
    counts: dict[str, dict[str, int]] = {name: {} for name in index.class_names}
    for sample in index.samples:
        split = sample.split or "unassigned"
        counts[sample.label][split] = counts[sample.label].get(split, 0) + 1
    formats = _formats(index, problems)
    rng = np.random.default_rng(seed)
    # One sample per file: several lesions of one volume would repeat the same statistics.
    first_of_file: dict[str, int] = {}
    for i, sample in enumerate(index.samples):
        first_of_file.setdefault(f"{sample.path}#{sample.extra.get('npz_index', '')}", i)
    candidates = sorted(first_of_file.values())
    picks = sorted(rng.choice(candidates, size=min(files, len(candidates)), replace=False))
    spacings: list[tuple[float, float, float]] = []
    low: list[float] = []
    high: list[float] = []
    kinds: set[str] = set()
    shapes: Counter[str] = Counter()
    for i in picks:
        sample = index.samples[int(i)]
        try:
            scan = read_sample(sample)
        except LungCancerError as exc:
            problems.append(f"{sample.path}: could not be read: {exc.message}")
            continue
        spacings.append(scan.spacing_mm)
        p1, p99 = np.percentile(scan.array, [1, 99])
        low.append(float(p1))
        high.append(float(p99))
        kinds.add(scan.intensity)
        shapes["x".join(str(v) for v in scan.shape)] += 1
    spacing = {}
    if spacings:
        for axis, name in enumerate(("z", "y", "x")):
            spacing[name] = _range([s[axis] for s in spacings])
    intensity = {"p1": _range(low), "p99": _range(high)} if low else {}
    return DatasetSummary(
        source=source or index.root,
        layout=index.layout,
        n_samples=len(index.samples),
        class_names=index.class_names,
        counts=counts,
        has_patient_ids=index.has_patient_ids,
        n_patients=len({s.patient_id for s in index.samples if s.patient_id}),
        formats=formats,
        files_read=len(spacings),
        spacing_mm=spacing,
        intensity=kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else ""),
        intensity_p1_p99=intensity,
        shapes=[shape for shape, _ in shapes.most_common(5)],
        problems=tuple(problems),
    )


def inspect_dataset(
    source: str | Path,
    *,
    layout: str = "auto",
    files: int = DEFAULT_FILES_READ,
    seed: int = 0,
) -> DatasetSummary:
    """Load a dataset and summarise it (see `summarize`)."""
    index = load_index(source, layout=layout)
    return summarize(index, source=str(source), files=files, seed=seed)
