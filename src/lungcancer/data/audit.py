"""Leakage audit: patients shared across splits, and near-duplicate images across splits.

Near-duplicates are found in two steps: a 64-bit DCT perceptual hash (pHash) of each image
proposes pairs within a few bits of each other, and the Pearson correlation of 32x32 thumbnails
confirms them. The hash alone groups unrelated low-texture images; the correlation alone would
compare every pair. Duplicates are grouped transitively (union-find), and `make_splits` keeps
each group in one split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dctn

from lungcancer.config import DataConfig
from lungcancer.data.cache import SampleCache
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.layouts import read_sample
from lungcancer.data.transforms import preprocess
from lungcancer.errors import LungCancerError
from lungcancer.io import Scan

# pHash bits that may differ between near-duplicates (of 64): resizing, re-encoding and small
# intensity changes flip a few. Chest slices of different patients can come as close as 4-8
# bits, so the hash only proposes pairs.
MAX_HASH_DISTANCE = 8
# Thumbnail correlation that confirms a hash match. On LungSim slices (30 patients) pairs of
# different patients reach 0.94 at 32x32 (0.98 at 16x16), copies and rescaled copies exceed
# 0.99, and adjacent slices of one patient mostly 0.99.
MIN_CORRELATION = 0.97
_HASH_SIZE = 32
_THUMB_SIZE = 32
_BLOCK = 1024
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ImageHashes:
    """Perceptual hashes and thumbnails of every sample of an index.

    Attributes:
        values: uint64 pHash per sample.
        thumbnails: (N, 1024) float32, zero-mean unit-norm 32x32 thumbnails.
        ok: False where the sample could not be read (it then joins no group).
        problems: why each unreadable sample failed.
    """

    values: np.ndarray
    thumbnails: np.ndarray
    ok: np.ndarray
    problems: tuple[str, ...] = ()

    def extended(self, more: ImageHashes) -> ImageHashes:
        """These hashes followed by `more` (an index with samples appended)."""
        return ImageHashes(
            values=np.concatenate([self.values, more.values]),
            thumbnails=np.concatenate([self.thumbnails, more.thumbnails]),
            ok=np.concatenate([self.ok, more.ok]),
            problems=self.problems + more.problems,
        )


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    # A copy: cached arrays are read-only memory maps, which torch.from_numpy warns about.
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(tensor, (size, size))[0, 0].numpy()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2D image.

    The image is averaged down to 32x32; the 8x8 lowest DCT frequencies are compared with their
    median, one bit each. Brightness scaling, resizing and mild noise change few bits.
    """
    small = _resized(image, _HASH_SIZE).astype(np.float64)
    low = dctn(small, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def _thumbnail(image: np.ndarray) -> np.ndarray:
    thumb = _resized(image, _THUMB_SIZE).ravel().astype(np.float32)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 0 else thumb


def _view_2d(array: np.ndarray) -> np.ndarray:
    """First channel of a preprocessed sample; the middle slice of a 3D patch."""
    first = array[0]
    return first[first.shape[0] // 2] if first.ndim == 3 else first


def image_hashes(
    index: DatasetIndex,
    cfg: DataConfig | None = None,
    *,
    cache: SampleCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageHashes:
    """Hash every sample's preprocessed image (through the cache when one is given).

    Args:
        index: the dataset.
        cfg: preprocessing used to render each sample (default `DataConfig()`).
        cache: if given, preprocessed arrays are read from and written to it.
        progress: called with (done, total) after each sample.

    Returns:
        Hashes, thumbnails and which samples could be read.
    """
    config = cfg or DataConfig()
    n = len(index.samples)
    values = np.zeros(n, dtype=np.uint64)
    thumbs = np.zeros((n, _THUMB_SIZE * _THUMB_SIZE), dtype=np.float32)
    ok = np.ones(n, dtype=bool)
    problems: list[str] = []
    # Lesions of one volume are adjacent in this order, so the volume is decoded once.
    order = sorted(range(n), key=lambda i: index.samples[i].path)
    last: tuple[str, Scan] | None = None
    for done, i in enumerate(order, start=1):
        sample = index.samples[i]
        try:
            if cache is not None:
                array = cache.load(sample, config, _renderer(sample, config))
            else:
                if last is None or last[0] != sample.path or "npz_array" in sample.extra:
                    last = (sample.path, read_sample(sample))
                array = _render(sample, config, last[1])
        except LungCancerError as exc:
            ok[i] = False
            problems.append(f"{sample.path}: not hashed: {exc.message}")
            continue
        view = _view_2d(np.asarray(array))
        values[i] = perceptual_hash(view)
        thumbs[i] = _thumbnail(view)
        if progress is not None:
            progress(done, n)
    return ImageHashes(values=values, thumbnails=thumbs, ok=ok, problems=tuple(problems))


def _renderer(sample: Sample, cfg: DataConfig) -> Callable[[], np.ndarray]:
    return lambda: _render(sample, cfg, None)


def _render(sample: Sample, cfg: DataConfig, scan: Scan | None) -> np.ndarray:
    return preprocess(
        scan if scan is not None else read_sample(sample),
        cfg,
        slice_index=sample.slice_index,
        center_zyx=sample.center_zyx,
    )


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def near_duplicate_groups(
    hashes: ImageHashes,
    *,
    max_distance: int = MAX_HASH_DISTANCE,
    min_correlation: float = MIN_CORRELATION,
) -> list[list[int]]:
    """Groups (two or more sample positions) of near-duplicate images, transitively merged.

    Args:
        hashes: from `image_hashes`.
        max_distance: pHash bits allowed to differ.
        min_correlation: thumbnail correlation needed to confirm a pair.

    Returns:
        Sorted groups of sample positions, largest first.
    """
    n = len(hashes.values)
    parent = np.arange(n)
    values = hashes.values
    for start in range(0, n, _BLOCK):
        block = values[start : start + _BLOCK]
        distance = np.bitwise_count(block[:, np.newaxis] ^ values[np.newaxis, :])
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = (cols > rows) & hashes.ok[rows] & hashes.ok[cols]
        rows, cols = rows[keep], cols[keep]
        if rows.size == 0:
            continue
        correlation = np.einsum(
            "ij,ij->i", hashes.thumbnails[rows], hashes.thumbnails[cols], dtype=np.float64
        )
        # Flat images (zero-norm thumbnails) are duplicates when their hashes match exactly.
        flat = (np.abs(hashes.thumbnails[rows]).sum(axis=1) == 0) & (
            np.abs(hashes.thumbnails[cols]).sum(axis=1) == 0
        )
        confirmed = (correlation >= min_correlation) | flat
        for a, b in zip(rows[confirmed], cols[confirmed], strict=True):
            root_a, root_b = _find(parent, int(a)), _find(parent, int(b))
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(_find(parent, i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-duplicate images found in more than one split."""

    keys: tuple[str, ...]
    splits: tuple[str, ...]


@dataclass(frozen=True)
class AuditReport:
    """What the leakage audit found.

    Attributes:
        n_samples: samples audited.
        split_sizes: samples per split.
        has_patient_ids: whether every sample has a patient id.
        patient_overlap: "train&test" -> number of patients in both splits.
        overlap_examples: a few shared patient keys (salted hashes, shortened).
        duplicates_checked: whether images were hashed.
        duplicate_groups: near-duplicate groups of two or more images, in any splits.
        cross_split: the groups that straddle splits (leakage).
        warnings: things a user should know that are not leakage by themselves.
    """

    n_samples: int
    split_sizes: dict[str, int]
    has_patient_ids: bool
    patient_overlap: dict[str, int]
    overlap_examples: tuple[str, ...]
    duplicates_checked: bool
    duplicate_groups: int
    cross_split: tuple[DuplicateGroup, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def patients_leak(self) -> bool:
        """True when a patient appears in more than one split."""
        return any(self.patient_overlap.values())

    @property
    def leakage(self) -> bool:
        """True when patients or near-duplicate images are shared across splits."""
        return self.patients_leak or bool(self.cross_split)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict."""
        result = asdict(self)
        result["leakage"] = self.leakage
        return result


def audit(
    index: DatasetIndex,
    splits: Mapping[str, Sequence[int]],
    *,
    hashes: ImageHashes | None = None,
    check_duplicates: bool | None = None,
    cfg: DataConfig | None = None,
    cache: SampleCache | None = None,
) -> AuditReport:
    """Look for leakage between splits.

    Args:
        index: the dataset.
        splits: split name -> sample positions (e.g. `Splits.indices`).
        hashes: precomputed `image_hashes` (computed here when needed and not given).
        check_duplicates: hash images to find near-duplicates across splits; default: only
            when the dataset lacks patient ids (hashing reads every image).
        cfg: preprocessing used to render images for hashing.
        cache: preprocessed-array cache used while hashing.

    Returns:
        The report; `report.leakage` is True when anything is shared across splits.
    """
    split_of = {i: name for name, members in splits.items() for i in members}
    patients: dict[str, set[str]] = {name: set() for name in splits}
    for name, members in splits.items():
        patients[name] = {index.samples[i].patient_id for i in members} - {""}
    overlap: dict[str, int] = {}
    examples: set[str] = set()
    names = [n for n in ("train", "val", "test") if n in splits] + sorted(
        n for n in splits if n not in ("train", "val", "test")
    )
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1 :]:
            shared = patients[a] & patients[b]
            overlap[f"{a}&{b}"] = len(shared)
            examples.update(shared)
    warnings: list[str] = []
    if not index.has_patient_ids:
        warnings.append(
            "the dataset has no patient ids (or not for every image): splits keep near-duplicate "
            "images together, but different images of one patient may still straddle splits"
        )
    class_ids = index.label_ids()
    for name in names:
        present = {class_ids[i] for i in splits[name]}
        absent = [c for i, c in enumerate(index.class_names) if i not in present]
        if splits[name] and absent:
            warnings.append(f"split {name} has no samples of class(es) {', '.join(absent)}")
    do_hash = (not index.has_patient_ids) if check_duplicates is None else check_duplicates
    groups: list[list[int]] = []
    if do_hash:
        if hashes is None:
            hashes = image_hashes(index, cfg, cache=cache)
        warnings.extend(hashes.problems)
        groups = near_duplicate_groups(hashes)
        largest = len(groups[0]) if groups else 0
        if largest > max(10, len(index.samples) // 10):
            # Many different images chained into one group: splits cannot stratify it.
            warnings.append(
                f"one near-duplicate group holds {largest} of {len(index.samples)} images; "
                "if they are not copies of each other, the images are too uniform for the "
                "perceptual hash (add patient ids to the dataset)"
            )
    keys = index.sample_keys()
    cross = []
    for group in groups:
        involved = sorted({split_of[i] for i in group if i in split_of})
        if len(involved) > 1:
            cross.append(DuplicateGroup(keys=tuple(keys[i] for i in group), splits=tuple(involved)))
    return AuditReport(
        n_samples=len(index.samples),
        split_sizes={name: len(splits[name]) for name in names},
        has_patient_ids=index.has_patient_ids,
        patient_overlap=overlap,
        overlap_examples=tuple(sorted(key[:8] for key in examples)[:_MAX_EXAMPLES]),
        duplicates_checked=do_hash,
        duplicate_groups=len(groups),
        cross_split=tuple(cross),
        warnings=tuple(warnings),
    )
