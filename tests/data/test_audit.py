"""Leakage audit: planted near-duplicates and shared patients are found; clean splits pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from data_builders import class_folders, pattern, write_png
from PIL import Image

from lungcancer.data.audit import (
    ImageHashes,
    audit,
    image_hashes,
    near_duplicate_groups,
    perceptual_hash,
)
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.layouts import load_index


def test_phash_is_stable_under_resizing_and_brightness_but_tells_images_apart() -> None:
    base = pattern(1, size=64)
    resized = np.asarray(
        Image.fromarray((base * 255).astype(np.uint8)).resize((48, 48)), dtype=np.float64
    )
    near = [perceptual_hash(base * 0.8 + 0.1), perceptual_hash(resized / 255)]
    others = [perceptual_hash(pattern(seed, size=64)) for seed in range(2, 12)]
    reference = perceptual_hash(base)
    assert all(bin(reference ^ h).count("1") <= 8 for h in near)
    assert all(bin(reference ^ h).count("1") > 8 for h in others)


def _planted(root: Path) -> DatasetIndex:
    class_folders(root, {"a": 6, "b": 6})
    source = np.asarray(Image.open(root / "a" / "img_000.png"), dtype=np.float64) / 255
    write_png(root / "b" / "copy_of_a0.png", source)  # exact copy, in the other class
    write_png(root / "a" / "brighter_a0.png", np.clip(source * 0.9 + 0.08, 0, 1))
    other = np.asarray(Image.open(root / "b" / "img_003.png"), dtype=np.float64) / 255
    upsized = np.asarray(Image.fromarray((other * 255).astype(np.uint8)).resize((40, 40)))
    write_png(root / "b" / "resized_b3.png", upsized / 255)
    return load_index(root)


def test_planted_duplicates_are_grouped_and_distinct_images_are_not(tmp_path: Path) -> None:
    index = _planted(tmp_path)
    keys = index.sample_keys()
    groups = [sorted(keys[i] for i in g) for g in near_duplicate_groups(image_hashes(index))]
    assert sorted(groups) == [
        ["a/brighter_a0.png", "a/img_000.png", "b/copy_of_a0.png"],
        ["b/img_003.png", "b/resized_b3.png"],
    ]


def test_audit_reports_duplicates_across_splits(tmp_path: Path) -> None:
    index = _planted(tmp_path)
    keys = index.sample_keys()
    position = {k: i for i, k in enumerate(keys)}
    test = [position["b/copy_of_a0.png"], position["b/img_005.png"]]
    splits = {"train": [i for i in range(len(keys)) if i not in test], "test": test}
    report = audit(index, splits)
    assert report.duplicates_checked and report.duplicate_groups == 2
    assert report.leakage and not report.patients_leak
    assert len(report.cross_split) == 1
    assert "b/copy_of_a0.png" in report.cross_split[0].keys
    assert report.cross_split[0].splits == ("test", "train")
    assert any("no patient ids" in w for w in report.warnings)


def test_audit_counts_shared_patients_and_shows_only_hashed_keys() -> None:
    samples = tuple(
        Sample(path=f"/d/{i}.png", label="ab"[i % 2], patient_id=f"{i // 2:016x}") for i in range(8)
    )
    index = DatasetIndex(samples, ("a", "b"), "manifest", "/d", has_patient_ids=True)
    report = audit(index, {"train": [0, 1, 2, 4], "val": [5], "test": [3, 6, 7]})
    assert report.patient_overlap == {"train&val": 1, "train&test": 1, "val&test": 0}
    assert report.patients_leak and report.leakage
    assert not report.duplicates_checked
    assert all(len(key) == 8 for key in report.overlap_examples)


def test_clean_splits_report_no_leakage(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 3, "b": 3})
    index = load_index(tmp_path)
    report = audit(index, {"train": [0, 1, 3, 4], "test": [2, 5]})
    assert not report.leakage and report.duplicate_groups == 0
    assert report.to_dict()["leakage"] is False


def test_unreadable_images_are_listed_not_fatal(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 3, "b": 3})
    index = load_index(tmp_path)
    # Damaged after indexing (or a format only decoding can check, such as JPEG).
    (tmp_path / "b" / "img_001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    hashes = image_hashes(index)
    assert int((~hashes.ok).sum()) == 1
    assert "img_001.png: not hashed" in hashes.problems[0]


def test_a_giant_duplicate_group_is_flagged() -> None:
    n = 30
    samples = tuple(Sample(path=f"/d/{i}.png", label="ab"[i % 2]) for i in range(n))
    index = DatasetIndex(samples, ("a", "b"), "folders", "/d", has_patient_ids=False)
    rng = np.random.default_rng(0)
    same = rng.standard_normal(1024) + 0.01 * rng.standard_normal((n, 1024))  # all but equal
    same -= same.mean(axis=1, keepdims=True)
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    hashes = ImageHashes(
        values=np.zeros(n, dtype=np.uint64),
        thumbnails=same.astype(np.float32),
        ok=np.ones(n, dtype=bool),
    )
    report = audit(index, {"train": list(range(n))}, hashes=hashes, check_duplicates=True)
    assert report.duplicate_groups == 1
    assert any("one near-duplicate group holds 30 of 30 images" in w for w in report.warnings)
