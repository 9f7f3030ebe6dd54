"""Dataset layouts: folder-per-class (Chest CT-Scan, IQ-OTH/NCCD), volumes with masks, LUNA16,
MedMNIST, auto-detection, class maps, and every bad input that belongs to datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_builders import class_folders, pattern, sphere_volume, write_png
from io_builders import write_ct_series

from lungcancer.data.layouts import detect_layout, load_index, normalise_class_name, read_sample
from lungcancer.errors import DatasetError
from lungcancer.io import Scan, write_mask, write_volume


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib", "adenocarcinoma"),
        ("large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa", "large.cell.carcinoma"),
        ("squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa", "squamous.cell.carcinoma"),
        ("large.cell.carcinoma", "large.cell.carcinoma"),
        ("normal", "normal"),
        ("Bengin cases", "benign"),
        ("Malignant cases", "malignant"),
        ("Normal cases", "normal"),
        ("squamous_cell_carcinoma", "squamous_cell_carcinoma"),
    ],
)
def test_class_folder_names_are_normalised(folder: str, expected: str) -> None:
    assert normalise_class_name(folder) == expected


def test_chest_ct_layout_with_split_folders_and_suffixes(tmp_path: Path) -> None:
    class_folders(
        tmp_path, {"adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": 2, "normal": 2}, split="train"
    )
    class_folders(
        tmp_path,
        {"adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": 1, "normal": 1},
        split="valid",
        seed=1,
    )
    class_folders(tmp_path, {"adenocarcinoma": 1, "normal": 1}, split="test", seed=2)
    (tmp_path / "README.txt").write_text("downloaded from ...")
    class_folders(tmp_path / "extra", {"normal": 1})
    index = load_index(tmp_path)
    assert index.layout == "folders"
    assert index.class_names == ("adenocarcinoma", "normal")
    assert sorted(index.problems) == [
        "README.txt: ignored: a file outside the class folders",
        "extra/: ignored: not a split folder (train, val/valid, test) beside the split folders",
    ]
    splits = sorted({(s.split, s.label) for s in index.samples})
    assert ("val", "adenocarcinoma") in splits and ("test", "normal") in splits
    assert len(index.samples) == 8
    assert not index.has_patient_ids


def test_iqothnccd_layout_has_no_patient_ids(tmp_path: Path) -> None:
    class_folders(tmp_path, {"Bengin cases": 2, "Malignant cases": 2, "Normal cases": 2})
    index = load_index(tmp_path)
    assert index.class_names == ("benign", "malignant", "normal")
    assert not index.has_patient_ids
    assert all(s.patient_id == "" for s in index.samples)


def test_class_map_and_classes_fix_names_and_order(tmp_path: Path) -> None:
    class_folders(tmp_path, {"Bengin cases": 1, "Malignant cases": 2, "Normal cases": 2})
    index = load_index(
        tmp_path,
        class_map={"Bengin cases": "non-cancer", "normal": "non-cancer"},
        classes=("non-cancer", "malignant"),
    )
    assert index.class_names == ("non-cancer", "malignant")
    assert index.label_ids().count(0) == 3


def test_unlisted_classes_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2, "c": 1})
    index = load_index(tmp_path, classes=("a", "b"))
    assert len(index.samples) == 4
    assert any("class c: 1 sample(s) left out" in p for p in index.problems)


def test_a_listed_class_without_samples_is_an_error(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(DatasetError, match="have no samples"):
        load_index(tmp_path, classes=("a", "b", "squamous"))


def test_patient_ids_from_patient_folders_and_file_names(tmp_path: Path) -> None:
    write_png(tmp_path / "cancer" / "case_a" / "s1.png", pattern(1))
    write_png(tmp_path / "cancer" / "case_a" / "s2.png", pattern(2))
    write_png(tmp_path / "normal" / "LIDC-IDRI-0007_slice12.png", pattern(3))
    write_png(tmp_path / "normal" / "patient_12_b.png", pattern(4))
    index = load_index(tmp_path)
    by_name = {Path(s.path).name: s.patient_id for s in index.samples}
    assert by_name["s1.png"] == by_name["s2.png"] != ""
    assert by_name["LIDC-IDRI-0007_slice12.png"] not in ("", by_name["s1.png"])
    # Ids are salted hashes, never the raw folder or file name.
    assert "case_a" not in by_name["s1.png"] and "0007" not in by_name["LIDC-IDRI-0007_slice12.png"]
    assert index.has_patient_ids


def test_dicom_series_folders_are_samples_with_hashed_patient_keys(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "cancer" / "scan1", rows=8, columns=8)
    write_ct_series(tmp_path / "normal" / "scan2", rows=8, columns=8)
    index = load_index(tmp_path)
    assert [Path(s.path).name for s in index.samples] == ["scan1", "scan2"]
    assert all(len(s.patient_id) == 16 and "TEST" not in s.patient_id for s in index.samples)
    scan = read_sample(index.samples[0])
    assert scan.shape == (3, 8, 8)


def test_bad_files_among_good_ones_are_skipped_and_listed(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    write_ct_series(tmp_path / "b" / "mr_series", modality="MR", rows=8, columns=8)
    truth = write_ct_series(tmp_path / "a" / "ct_cut", n_slices=1, rows=8, columns=8)
    cut = truth.paths[0]
    cut.write_bytes(cut.read_bytes()[:-40])  # pixel data cut short
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00")
    index = load_index(tmp_path)
    assert len(index.samples) == 4
    problems = "\n".join(index.problems)
    assert "a/notes.txt: skipped: not an image" in problems
    assert "b/broken.png: skipped: corrupt or truncated PNG" in problems
    assert "modality MR, expected CT" in problems
    assert "a/ct_cut/slice000.dcm: skipped: truncated" in problems
    assert ".DS_Store" not in problems


def test_empty_class_folder_is_fatal_and_named(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "c").mkdir()
    with pytest.raises(DatasetError) as raised:
        load_index(tmp_path)
    assert str(tmp_path / "c") in str(raised.value)
    assert "empty folder" in str(raised.value)


def test_class_folder_of_only_non_images_is_fatal(tmp_path: Path) -> None:
    class_folders(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no usable images"):
        load_index(tmp_path)


def test_a_single_class_is_fatal(tmp_path: Path) -> None:
    class_folders(tmp_path, {"only": 3})
    with pytest.raises(DatasetError, match="at least two classes"):
        load_index(tmp_path)


def test_nothing_recognisable_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError) as raised:
        load_index(tmp_path)
    message = str(raised.value)
    assert "no known dataset layout" in message
    assert "manifest" in message and "LUNA16" in message and "one folder per class" in message


def test_volumes_with_masks_give_one_sample_per_lesion(tmp_path: Path) -> None:
    sphere_volume(tmp_path / "malignant", "case1", centres_zyx=((4, 6, 6), (8, 17, 17)))
    sphere_volume(tmp_path / "benign", "case2")
    index = load_index(tmp_path)
    assert index.layout == "volumes"
    malignant = [s for s in index.samples if s.label == "malignant"]
    assert len(malignant) == 2
    centres = sorted(tuple(round(c) for c in s.center_zyx or ()) for s in malignant)
    assert centres == [(4, 6, 6), (8, 17, 17)]
    assert {s.slice_index for s in malignant} == {4, 8}
    assert all(float(s.extra["diameter_mm"]) > 0 for s in malignant)


def test_volume_mask_with_other_geometry_is_skipped_and_listed(tmp_path: Path) -> None:
    sphere_volume(tmp_path / "benign", "ok")
    sphere_volume(tmp_path / "malignant", "ok2")
    image = Scan(array=np.zeros((4, 8, 8), dtype=np.float32), spacing_mm=(1.0, 1.0, 1.0))
    other = Scan(array=np.zeros((4, 9, 8), dtype=np.float32), spacing_mm=(1.0, 1.0, 1.0))
    write_volume(image, tmp_path / "malignant" / "bad.nrrd")
    write_mask(np.ones((4, 9, 8), dtype=bool), other, tmp_path / "malignant" / "bad_mask.nrrd")
    index = load_index(tmp_path)
    assert len(index.samples) == 2
    assert any("bad.nrrd: skipped" in p for p in index.problems)


def test_luna16_world_coordinates_become_voxel_centres(tmp_path: Path) -> None:
    spacing = (2.0, 0.8, 0.7)
    origin = (-100.0, -80.0, -300.0)
    scan = Scan(
        array=np.zeros((10, 20, 20), dtype=np.float32), spacing_mm=spacing, origin_xyz_mm=origin
    )
    for uid in ("1.2.3.111", "1.2.3.222"):
        write_volume(scan, tmp_path / "subset0" / f"{uid}.mhd")
    # Voxel (z=4, y=10, x=5) in world mm: x = -100 + 5*0.7, y = -80 + 10*0.8, z = -300 + 4*2.
    rows = [
        "seriesuid,coordX,coordY,coordZ,diameter_mm",
        "1.2.3.111,-96.5,-72.0,-292.0,5.0",
        "1.2.3.222,-96.5,-72.0,-292.0,20.0",
        "1.2.3.999,0,0,0,7.0",
        "1.2.3.111,500,500,500,7.0",
    ]
    (tmp_path / "annotations.csv").write_text("\n".join(rows) + "\n")
    index = load_index(tmp_path)
    assert index.layout == "luna16"
    assert index.class_names == ("lung-rads-2", "lung-rads-4B")
    assert index.samples[0].center_zyx == pytest.approx((4.0, 10.0, 5.0), abs=1e-6)
    problems = "\n".join(index.problems)
    assert "rows 4: skipped: no <seriesuid>.mhd" in problems
    assert "row 5: skipped: the point lies outside its volume" in problems
    assert "1.2.3.999" not in problems


def test_medmnist_npz_samples_reference_file_and_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[i % 2] for i in range(n)], dtype=np.uint8)
    path = tmp_path / "nodulemnist3d.npz"
    np.savez(path, **arrays)
    index = load_index(path)
    assert index.layout == "medmnist"
    assert index.class_names == ("benign", "malignant")
    assert [s.split for s in index.samples].count("val") == 2
    third = index.samples[2]
    scan = read_sample(third)
    expected = arrays["train_images"][2].astype(np.float32) / 255
    np.testing.assert_allclose(scan.array, expected)
    assert scan.intensity == "unit"


def test_detect_layout_names_the_file_to_read(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,label\n")
    assert detect_layout(tmp_path) == ("manifest", tmp_path / "manifest.csv")
