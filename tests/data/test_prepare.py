"""prepare_data, ClassificationDataset and preprocess_file: what training and predict call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import chest_slice_hu, class_folders, pattern, sphere_volume, write_png
from torch.utils.data import DataLoader

from lungcancer.config import DataConfig
from lungcancer.data.cache import SampleCache
from lungcancer.data.prepare import SLICES_PER_VOLUME, prepare_data, preprocess_file
from lungcancer.data.torch_dataset import ClassificationDataset
from lungcancer.errors import ConfigError, DatasetError
from lungcancer.io import Scan, write_volume
from lungcancer.io.phi import patient_key


def _manifest_dataset(root: Path, split_for_patient: dict[str, str] | None = None) -> Path:
    rows = ["path,label,patient_id,split"]
    for p in range(12):
        label = "ab"[p % 2]
        for k in range(2):
            name = f"p{p}_{k}.png"
            write_png(root / name, pattern(p * 10 + k))
            split = (split_for_patient or {}).get(f"p{p}", "")
            if split_for_patient and p == 0 and k == 1:
                split = "test"  # the same patient in train and test: leakage
            rows.append(f"{name},{label},p{p},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def _cfg(source: Path, tmp_path: Path, **changes: object) -> DataConfig:
    values = {"source": str(source), "image_size": 16, "cache_dir": str(tmp_path / "cache")}
    values.update(changes)
    return DataConfig(**values)  # type: ignore[arg-type]


def test_prepare_splits_saves_and_reuses(tmp_path: Path) -> None:
    cfg = _cfg(_manifest_dataset(tmp_path / "d"), tmp_path)
    prepared = prepare_data(cfg, tmp_path / "run")
    assert prepared.split_file == tmp_path / "run" / "splits.json"
    assert prepared.class_names == ("a", "b")
    assert not prepared.audit.leakage
    assert sum(len(v) for v in prepared.splits.values()) == 24
    reused = prepare_data(
        _cfg(cfg.source, tmp_path, split_file=str(prepared.split_file), seed=99), tmp_path / "r2"
    )
    assert reused.splits == prepared.splits
    assert not (tmp_path / "r2" / "splits.json").exists()


def test_prepare_refuses_patients_shared_between_splits(tmp_path: Path) -> None:
    splits = {f"p{p}": ("test" if p >= 9 else "train") for p in range(12)}
    cfg = _cfg(_manifest_dataset(tmp_path / "d", splits), tmp_path)
    with pytest.raises(DatasetError, match="patients are shared between splits"):
        prepare_data(cfg, tmp_path / "run")


def test_prepare_without_a_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dataset given"):
        prepare_data(DataConfig(), tmp_path)


def test_prepare_rejects_a_split_file_of_another_fold(tmp_path: Path) -> None:
    cfg = _cfg(_manifest_dataset(tmp_path / "d"), tmp_path, folds=3, fold=0)
    prepared = prepare_data(cfg, tmp_path / "run")
    other = _cfg(cfg.source, tmp_path, folds=3, fold=1, split_file=str(prepared.split_file))
    with pytest.raises(DatasetError, match="other cross-validation settings"):
        prepare_data(other, tmp_path / "run2")


def test_dataset_items_labels_and_augmentation_only_when_training(tmp_path: Path) -> None:
    class_folders(tmp_path / "d", {"a": 3, "b": 3})
    cfg = _cfg(tmp_path / "d", tmp_path)
    prepared = prepare_data(cfg, tmp_path / "run")
    cache = SampleCache(cfg.cache_dir)
    everything = list(range(len(prepared.index.samples)))
    evaluation = ClassificationDataset(prepared.index, everything, cfg, train=False, cache=cache)
    image, label = evaluation[0]
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32
    assert evaluation.labels == [0, 0, 0, 1, 1, 1] and label == 0
    assert evaluation.patient_ids == [""] * 6
    assert torch.equal(evaluation[0][0], image)
    training = ClassificationDataset(prepared.index, everything, cfg, train=True, cache=cache)
    augmented = [training[0][0] for _ in range(4)]
    assert any(not torch.equal(a, image) for a in augmented)
    again = ClassificationDataset(prepared.index, everything, cfg, train=True, cache=cache)
    assert all(torch.equal(a, again[0][0]) for a in augmented[:1])
    # The training set seen without augmentation (precise BN's view): evaluation's items, and
    # the training set's own augmentation stream goes on where it was.
    plain = again.without_augmentation()
    assert all(torch.equal(plain[i][0], evaluation[i][0]) for i in range(6))
    assert not plain.train and again.train
    assert torch.equal(again[0][0], augmented[1])  # the second draw, as if no view was taken


def test_dataset_serves_masks_on_the_input_grid_cached_and_nan_without_a_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "d"
    rows = ["path,label,patient_id,mask_path"]
    for p in range(6):
        image = np.full((32, 32), 0.1)
        image[8:16, 16:24] = 0.9  # a square "lesion" at the same place in every image
        write_png(root / f"p{p}.png", image)
        mask = ""
        if p < 4:  # p4 and p5 have no mask file
            write_png(root / f"p{p}_mask.png", (image > 0.5).astype(float))
            mask = f"p{p}_mask.png"
        rows.append(f"p{p}.png,{'ab'[p % 2]},p{p},{mask}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(root / "manifest.csv", tmp_path)
    prepared = prepare_data(cfg, tmp_path / "run")
    everything = list(range(6))
    cache = SampleCache(cfg.cache_dir)
    plain = ClassificationDataset(prepared.index, everything, cfg, train=False, cache=cache)
    masked = ClassificationDataset(
        prepared.index, everything, cfg, train=False, cache=cache, masks=True
    )
    by_patient = {Path(s.path).stem: i for i, s in enumerate(masked.samples)}
    image, label, mask = masked.item_with_mask(by_patient["p0"])
    assert (image.shape, label) == ((1, 16, 16), plain[by_patient["p0"]][1])
    assert torch.equal(image, plain[by_patient["p0"]][0]) and mask.shape == (1, 16, 16)
    # 32 px resized to 16: the square (rows 8-15, columns 16-23) covers rows 4-7, columns 8-11.
    assert torch.equal(mask[0] >= 0.5, torch.from_numpy(image[0].numpy() > 0.5))
    # Resized like the image (anti-aliased): the share of each input pixel the lesion covers.
    assert mask[0, 4:8, 8:12].min() > 0.7 and abs(float(mask.sum()) - 16.0) < 1.0
    assert float(mask[0, :3].sum()) == 0.0 and float(mask[0, :, 13:].sum()) == 0.0
    misses = cache.misses
    masked.item_with_mask(by_patient["p0"])
    assert cache.misses == misses  # the second time both arrays come from the cache
    # Without a cache the scan is decoded once for both arrays, to the same result.
    uncached = ClassificationDataset(prepared.index, everything, cfg, train=False, masks=True)
    image_again, _, mask_again = uncached.item_with_mask(by_patient["p0"])
    assert torch.equal(image_again, image) and torch.equal(mask_again, mask)
    unknown = masked.item_with_mask(by_patient["p4"])[2]
    assert torch.isnan(unknown).all() and unknown.shape == (1, 16, 16)
    # Training: the mask moves with the image (same flips and affine).
    training = ClassificationDataset(
        prepared.index, everything, cfg, train=True, cache=cache, masks=True
    )
    for _ in range(6):
        moved_image, _, moved = training.item_with_mask(by_patient["p1"])
        lesion = moved[0] >= 0.5
        assert lesion.sum() >= 8
        assert moved_image[0][lesion].mean() > moved_image[0][~lesion].mean() + 0.4


def test_dataloader_batches_in_3d(tmp_path: Path) -> None:
    sphere_volume(tmp_path / "d" / "malignant", "c1", centres_zyx=((3, 6, 6), (8, 17, 17)))
    sphere_volume(tmp_path / "d" / "benign", "c2")
    cfg = _cfg(
        tmp_path / "d",
        tmp_path,
        spatial_dims=3,
        patch_size_3d=8,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    prepared = prepare_data(cfg, tmp_path / "run")
    dataset = ClassificationDataset(prepared.index, prepared.splits["train"], cfg, train=True)
    images, labels = next(iter(DataLoader(dataset, batch_size=3)))
    assert images.shape == (3, 1, 8, 8, 8) and labels.tolist() == dataset.labels


def test_preprocess_file_for_2d_volumes_with_and_without_masks(tmp_path: Path) -> None:
    cfg = DataConfig(image_size=16)
    png = write_png(tmp_path / "slice.png", pattern(0))
    assert [name for name, _ in preprocess_file(png, cfg)] == ["image"]
    image, mask = sphere_volume(tmp_path, "case", centres_zyx=((3, 6, 6), (8, 16, 16)))
    lesions = preprocess_file(image, cfg, mask_path=mask)
    assert [name.split(" (")[0] for name, _ in lesions] == ["lesion 1", "lesion 2"]
    assert all(array.shape == (1, 16, 16) for _, array in lesions)
    volume = np.stack([chest_slice_hu(32)] * 20).astype(np.float32)
    write_volume(Scan(array=volume, spacing_mm=(5.0, 1.0, 1.0)), tmp_path / "ct.nrrd")
    slices = preprocess_file(tmp_path / "ct.nrrd", cfg)
    assert len(slices) == SLICES_PER_VOLUME and slices[0][0] == "slice 0"
    patches = preprocess_file(tmp_path / "ct.nrrd", DataConfig(spatial_dims=3, patch_size_3d=8))
    assert len(patches) == 27 and patches[0][1].shape == (1, 8, 8, 8)


def test_split_file_is_plain_json(tmp_path: Path) -> None:
    cfg = _cfg(_manifest_dataset(tmp_path / "d"), tmp_path)
    prepared = prepare_data(cfg, tmp_path / "run")
    document = json.loads(prepared.split_file.read_text())
    assert set(document["splits"]) == {"train", "val", "test"}


def test_dataloader_workers_read_the_cache_filled_by_the_main_process(tmp_path: Path) -> None:
    class_folders(tmp_path / "d", {"a": 2, "b": 2})
    cfg = _cfg(tmp_path / "d", tmp_path)
    prepared = prepare_data(cfg, tmp_path / "run")  # hashing fills the cache (no patient ids)
    everything = list(range(len(prepared.index.samples)))
    cache = SampleCache(cfg.cache_dir)
    data = ClassificationDataset(prepared.index, everything, cfg, train=False, cache=cache)
    in_main = torch.stack([data[i][0] for i in everything])
    assert cache.misses == 0
    loader = DataLoader(data, batch_size=4, num_workers=1)
    from_worker, labels = next(iter(loader))
    assert torch.equal(from_worker, in_main) and labels.tolist() == [0, 0, 1, 1]


def _extra_dataset(
    root: Path, patients: list[str], labels: str = "ab", ids: bool = True, seed: int = 500
) -> Path:
    """A manifest of 2 images per patient; its own split column says test (to be ignored)."""
    rows = ["path,label,patient_id,split"]
    for p, patient in enumerate(patients):
        for k in range(2):
            name = f"{patient}_{k}.png"
            write_png(root / name, pattern(seed + p * 10 + k))
            rows.append(f"{name},{labels[p % len(labels)]},{patient if ids else ''},test")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_train_extra_only_trains_and_leaves_val_and_test_as_they_were(tmp_path: Path) -> None:
    source = _manifest_dataset(tmp_path / "d")
    alone = prepare_data(_cfg(source, tmp_path), tmp_path / "alone")
    extra = _extra_dataset(tmp_path / "x", [f"x{p}" for p in range(5)])
    cfg = _cfg(source, tmp_path, train_extra=(str(extra),))
    prepared = prepare_data(cfg, tmp_path / "run")

    assert prepared.splits["val"] == alone.splits["val"]
    assert prepared.splits["test"] == alone.splits["test"]
    added = list(range(24, 34))
    assert prepared.splits["train"] == alone.splits["train"] + added
    assert len(prepared.index.samples) == 34
    # Their manifest said "test"; as training-only data they train.
    assert {prepared.index.samples[i].split for i in added} == {"train"}
    assert [prepared.index.label_ids()[i] for i in added] == [0, 0, 1, 1] * 2 + [0, 0]
    assert prepared.class_names == alone.class_names
    # The split file describes the main dataset alone, as without extras.
    saved = json.loads(prepared.split_file.read_text())["splits"]
    assert saved == json.loads(alone.split_file.read_text())["splits"]
    assert not prepared.audit.leakage
    assert prepared.audit.split_sizes["train"] == len(alone.splits["train"]) + 10


def test_train_extra_refuses_patients_of_the_val_or_test_split(tmp_path: Path) -> None:
    source = _manifest_dataset(tmp_path / "d")
    alone = prepare_data(_cfg(source, tmp_path), tmp_path / "alone")
    # Manifest ids are stored as salted keys; the extra manifest holds raw ids like the main.
    raw = {patient_key(f"p{p}"): f"p{p}" for p in range(12)}
    test_patient = raw[alone.index.samples[alone.splits["test"][0]].patient_id]
    train_patient = raw[alone.index.samples[alone.splits["train"][0]].patient_id]
    clash = _extra_dataset(tmp_path / "x", ["x0", test_patient])
    with pytest.raises(DatasetError, match="shares patient ids") as info:
        prepare_data(_cfg(source, tmp_path, train_extra=(str(clash),)), tmp_path / "r1")
    assert "--id-prefix" in str(info.value)
    # More images of a training patient are no leakage.
    same = _extra_dataset(tmp_path / "y", ["y0", train_patient])
    prepared = prepare_data(_cfg(source, tmp_path, train_extra=(str(same),)), tmp_path / "r2")
    assert len(prepared.splits["train"]) == len(alone.splits["train"]) + 4


def test_train_extra_with_a_class_the_main_dataset_lacks(tmp_path: Path) -> None:
    source = _manifest_dataset(tmp_path / "d")
    extra = _extra_dataset(tmp_path / "x", ["x0", "x1", "x2"], labels="abc")
    with pytest.raises(DatasetError, match="classes the main dataset does not") as info:
        prepare_data(_cfg(source, tmp_path, train_extra=(str(extra),)), tmp_path / "r1")
    assert "c" in str(info.value)
    # With the class list given, the extra class is left out as it would be in the main set.
    listed = _cfg(source, tmp_path, train_extra=(str(extra),), classes=("a", "b"))
    prepared = prepare_data(listed, tmp_path / "r2")
    extra_labels = {prepared.index.samples[i].label for i in range(24, len(prepared.index.samples))}
    assert extra_labels == {"a", "b"}
    assert len(prepared.index.samples) == 28


def test_train_extra_without_patient_ids_is_checked_for_duplicates_of_test(
    tmp_path: Path,
) -> None:
    source = _manifest_dataset(tmp_path / "d")
    alone = prepare_data(_cfg(source, tmp_path), tmp_path / "alone")
    test_path = Path(alone.index.samples[alone.splits["test"][0]].path)
    extra = _extra_dataset(tmp_path / "x", ["x0", "x1"], ids=False)
    # One "new" training image is a copy of a test image: leakage the ids cannot show.
    (tmp_path / "x" / "x0_0.png").write_bytes(test_path.read_bytes())
    prepared = prepare_data(_cfg(source, tmp_path, train_extra=(str(extra),)), tmp_path / "run")
    assert prepared.audit.duplicates_checked
    assert prepared.audit.leakage
    assert len(prepared.audit.cross_split) == 1


def test_train_extra_may_hold_a_single_class(tmp_path: Path) -> None:
    source = _manifest_dataset(tmp_path / "d")
    normals = _extra_dataset(tmp_path / "x", ["x0", "x1", "x2"], labels="a")
    cfg = _cfg(source, tmp_path, train_extra=(str(normals),))
    prepared = prepare_data(cfg, tmp_path / "run")
    assert [prepared.index.samples[i].label for i in range(24, 30)] == ["a"] * 6
    # Listed classes: the extra need not hold all of them.
    listed = prepare_data(
        _cfg(source, tmp_path, train_extra=(str(normals),), classes=("a", "b")), tmp_path / "run2"
    )
    assert len(listed.splits["train"]) == len(prepared.splits["train"])


def test_train_extra_beside_a_main_dataset_without_ids_flags_copies_of_its_test_images(
    tmp_path: Path,
) -> None:
    # Neither dataset has patient ids: the main one is hashed for its split, the extra after.
    main = tmp_path / "d"
    rows = ["path,label"]
    for i in range(16):
        write_png(main / f"m{i}.png", pattern(900 + i))
        rows.append(f"m{i}.png,{'ab'[i % 2]}")
    (main / "manifest.csv").write_text("\n".join(rows) + "\n")
    alone = prepare_data(_cfg(main / "manifest.csv", tmp_path), tmp_path / "alone")
    test_path = Path(alone.index.samples[alone.splits["test"][0]].path)
    extra = _extra_dataset(tmp_path / "x", ["x0", "x1"], ids=False)
    (tmp_path / "x" / "x0_0.png").write_bytes(test_path.read_bytes())
    cfg = _cfg(main / "manifest.csv", tmp_path, train_extra=(str(extra),))
    prepared = prepare_data(cfg, tmp_path / "run")
    assert prepared.splits["test"] == alone.splits["test"]
    assert len(prepared.audit.cross_split) == 1
