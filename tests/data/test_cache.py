"""SampleCache: written once, memory-mapped afterwards, keyed by content and preprocessing."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from data_builders import pattern, write_png
from io_builders import write_ct_series

from lungcancer.config import DataConfig
from lungcancer.data.cache import ContentHasher, SampleCache
from lungcancer.data.index import Sample
from lungcancer.io import Scan, write_volume


class _Counter:
    def __init__(self, value: np.ndarray) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.value


def test_second_load_decodes_nothing_and_is_memory_mapped(tmp_path: Path) -> None:
    sample = Sample(path=str(write_png(tmp_path / "a.png", pattern(0))), label="a")
    compute = _Counter(np.full((1, 4, 4), 0.5, dtype=np.float32))
    cache = SampleCache(tmp_path / "cache")
    first = cache.load(sample, DataConfig(), compute)
    again = cache.load(sample, DataConfig(), compute)
    fresh = SampleCache(tmp_path / "cache").load(sample, DataConfig(), compute)
    assert compute.calls == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(fresh, compute.value)
    assert isinstance(fresh, np.memmap) and not fresh.flags.writeable
    assert (cache.hits, cache.misses) == (1, 1)


def test_key_follows_content_selector_and_preprocessing_only(tmp_path: Path) -> None:
    path = write_png(tmp_path / "a.png", pattern(0))
    sample = Sample(path=str(path), label="a")
    cache = SampleCache(tmp_path / "cache")
    cfg = DataConfig()
    key = cache.key(sample, cfg)
    assert cache.key(sample, replace(cfg, seed=9, augment=False, source="x")) == key
    assert cache.key(sample, replace(cfg, image_size=64)) != key
    assert cache.key(replace(sample, slice_index=2), cfg) != key
    assert cache.key(replace(sample, label="b", patient_id="k"), cfg) == key
    write_png(path, pattern(1))
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    assert SampleCache(tmp_path / "cache").key(sample, cfg) != key


def test_detached_mhd_data_and_dicom_series_contents_are_hashed(tmp_path: Path) -> None:
    hasher = ContentHasher()
    scan = Scan(array=np.zeros((2, 4, 4), dtype=np.float32), spacing_mm=(1.0, 1.0, 1.0))
    write_volume(scan, tmp_path / "v.mhd", compress=False)
    before = hasher.digest(tmp_path / "v.mhd")
    raw = next(p for p in tmp_path.iterdir() if p.suffix in (".raw", ".zraw"))
    raw.write_bytes(b"\x01" * raw.stat().st_size)
    os.utime(raw, ns=(2, 2))
    assert ContentHasher().digest(tmp_path / "v.mhd") != before
    write_ct_series(tmp_path / "s1", rows=4, columns=4, seed=0)
    write_ct_series(tmp_path / "s2", rows=4, columns=4, seed=1)
    assert hasher.digest(tmp_path / "s1") != hasher.digest(tmp_path / "s2")


def test_an_unreadable_cache_file_is_recomputed(tmp_path: Path) -> None:
    sample = Sample(path=str(write_png(tmp_path / "a.png", pattern(0))), label="a")
    cache = SampleCache(tmp_path / "cache")
    compute = _Counter(np.ones((1, 2, 2), dtype=np.float32))
    cache.load(sample, DataConfig(), compute)
    cache.path_for(cache.key(sample, DataConfig())).write_bytes(b"garbage")
    fresh = SampleCache(tmp_path / "cache")
    np.testing.assert_array_equal(fresh.load(sample, DataConfig(), compute), compute.value)
    assert compute.calls == 2
