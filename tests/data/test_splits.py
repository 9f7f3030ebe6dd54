"""Splits: by patient, stratified, seeded, k-fold, fixed splits kept, saved and reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungcancer.data.audit import ImageHashes
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.splits import layout_splits, load_splits, make_splits, save_splits
from lungcancer.errors import ConfigError, DatasetError


def _index(
    n_patients: int = 40,
    per_patient: int = 3,
    classes: tuple[str, ...] = ("a", "b"),
    split_of: dict[int, str] | None = None,
    with_ids: bool = True,
) -> DatasetIndex:
    samples = []
    for p in range(n_patients):
        label = classes[p % len(classes)]
        for k in range(per_patient):
            samples.append(
                Sample(
                    path=f"/data/{label}/p{p:03d}_{k}.png",
                    label=label,
                    patient_id=f"key{p:03d}" if with_ids else "",
                    split=(split_of or {}).get(p, ""),
                )
            )
    return DatasetIndex(
        samples=tuple(samples),
        class_names=classes,
        layout="folders",
        root="/data",
        has_patient_ids=with_ids,
    )


def _patients(index: DatasetIndex, members: list[int]) -> set[str]:
    return {index.samples[i].patient_id for i in members}


def test_no_patient_is_in_two_splits_and_every_sample_is_used() -> None:
    index = _index()
    splits = make_splits(index, val_fraction=0.2, test_fraction=0.2, seed=1)
    train, val, test = (splits.indices[n] for n in ("train", "val", "test"))
    assert not _patients(index, train) & _patients(index, test)
    assert not _patients(index, train) & _patients(index, val)
    assert not _patients(index, val) & _patients(index, test)
    assert sorted(train + val + test) == list(range(len(index.samples)))
    assert "patient" in splits.grouping


def test_splits_are_stratified_and_near_the_requested_shares() -> None:
    index = _index(n_patients=60, classes=("a", "b", "c"))
    splits = make_splits(index, val_fraction=0.15, test_fraction=0.2, seed=0)
    labels = index.label_ids()
    for name, share in (("test", 0.2), ("val", 0.15)):
        counts = np.bincount([labels[i] for i in splits.indices[name]], minlength=3)
        per_class = np.bincount(labels, minlength=3)
        np.testing.assert_allclose(counts / per_class, share, atol=0.06)


def test_same_seed_same_split_other_seed_other_split() -> None:
    index = _index()
    first = make_splits(index, seed=7).indices
    assert make_splits(index, seed=7).indices == first
    assert make_splits(index, seed=8).indices != first


def test_k_folds_cover_the_non_test_pool_once() -> None:
    index = _index(n_patients=50)
    folds = [make_splits(index, folds=5, fold=k, seed=2) for k in range(5)]
    tests = {tuple(f.indices["test"]) for f in folds}
    assert len(tests) == 1
    vals = [set(f.indices["val"]) for f in folds]
    pool = set(range(len(index.samples))) - set(folds[0].indices["test"])
    assert set().union(*vals) == pool
    assert sum(len(v) for v in vals) == len(pool)
    for f in folds:
        assert not _patients(index, f.indices["train"]) & _patients(index, f.indices["val"])


def test_fixed_test_folder_is_kept_and_val_carved_from_train() -> None:
    split_of = {p: ("test" if p < 8 else "train") for p in range(40)}
    index = _index(split_of=split_of)
    splits = make_splits(index, val_fraction=0.2, test_fraction=0.5, seed=0)
    assert _patients(index, splits.indices["test"]) == {f"key{p:03d}" for p in range(8)}
    assert splits.indices["val"] and splits.fixed == ("test", "train")
    assert layout_splits(index).keys() == {"test", "train"}


def test_near_duplicates_never_straddle_splits_without_patient_ids() -> None:
    index = _index(n_patients=30, per_patient=2, with_ids=False)
    n = len(index.samples)
    # Plant: each pair (2k, 2k+1) has identical hashes and thumbnails; all pairs differ.
    rng = np.random.default_rng(0)
    pair_hash = rng.integers(0, 2**63, size=n // 2, dtype=np.uint64)
    values = np.repeat(pair_hash, 2)
    thumbs = np.repeat(rng.standard_normal((n // 2, 1024)).astype(np.float32), 2, axis=0)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    hashes = ImageHashes(values=values, thumbnails=thumbs, ok=np.ones(n, dtype=bool))
    # Distinct files: without hashes every sample is its own group.
    splits = make_splits(index, seed=3, hashes=hashes)
    where = {i: name for name, members in splits.indices.items() for i in members}
    assert all(where[2 * k] == where[2 * k + 1] for k in range(n // 2))
    assert "near-duplicate" in splits.grouping


def test_lesions_of_one_volume_stay_together() -> None:
    samples = tuple(
        Sample(path=f"/v/case{c}.nrrd", label="ab"[c % 2], slice_index=z, center_zyx=(z, 5, 5))
        for c in range(20)
        for z in (3, 9)
    )
    index = DatasetIndex(samples, ("a", "b"), "volumes", "/v", has_patient_ids=False)
    splits = make_splits(index, seed=0)
    where = {i: name for name, members in splits.indices.items() for i in members}
    assert all(where[2 * c] == where[2 * c + 1] for c in range(20))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = _index()
    splits = make_splits(index, seed=5, folds=3, fold=1)
    save_splits(splits, tmp_path / "splits.json")
    loaded = load_splits(tmp_path / "splits.json", index)
    assert loaded.indices == splits.indices
    assert (loaded.seed, loaded.folds, loaded.fold) == (5, 3, 1)
    document = json.loads((tmp_path / "splits.json").read_text())
    # Keys are relative to the dataset root, so the file survives moving the dataset.
    assert document["splits"]["test"][0].split("/")[0] in ("a", "b")


def test_a_split_file_that_no_longer_matches_is_an_error(tmp_path: Path) -> None:
    save_splits(make_splits(_index(n_patients=40)), tmp_path / "splits.json")
    with pytest.raises(DatasetError) as raised:
        load_splits(tmp_path / "splits.json", _index(n_patients=41))
    message = str(raised.value)
    assert "no longer matches" in message
    assert "3 in the dataset but not in the file" in message
    assert "lungcancer data split" in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_fraction": 0.6, "test_fraction": 0.5},
        {"val_fraction": -0.1},
        {"folds": 1},
        {"folds": 3, "fold": 3},
    ],
)
def test_bad_split_settings_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        make_splits(_index(), **kwargs)


def test_not_a_split_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(DatasetError, match="not a lungcancer split file"):
        load_splits(tmp_path / "x.json", _index())


def test_small_classes_still_fill_val_and_test_and_keep_training_data() -> None:
    # Six classes of two patients each (a small LungSim run): shares below one patient per
    # class must still add up across classes.
    index = _index(n_patients=12, per_patient=4, classes=("a", "b", "c", "d", "e", "f"))
    splits = make_splits(index, val_fraction=0.15, test_fraction=0.2, seed=0)
    labels = index.label_ids()
    assert len(_patients(index, splits.indices["test"])) >= 2
    assert len(_patients(index, splits.indices["val"])) >= 1
    assert {labels[i] for i in splits.indices["train"]} == set(range(6))
