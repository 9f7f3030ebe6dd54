"""CSV manifest layout (as LungSim writes it) and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_builders import pattern, sphere_volume, write_png

from lungcancer.data.layouts import load_index
from lungcancer.data.manifest import read_manifest
from lungcancer.errors import DatasetError
from lungcancer.io import Scan, write_mask, write_volume


def _lungsim_like(root: Path) -> Path:
    """Two 2D NRRD slices in HU with masks, and extra columns, as LungSim writes them."""
    rows = [
        "path,label,patient_id,mask_path,split,time_point,stage,diameter_mm,"
        "lesion_center_z,lesion_center_y,lesion_center_x"
    ]
    for i, (label, split) in enumerate((("I", "train"), ("III", "test"), ("I", ""))):
        array = np.full((1, 16, 16), -800.0, dtype=np.float32)
        array[0, 6:10, 6:10] = 20.0
        scan = Scan(array=array, spacing_mm=(1.0, 0.7, 0.7))
        write_volume(scan, root / "images" / f"p{i}.nrrd")
        write_mask(array > -100, scan, root / "masks" / f"p{i}.nrrd")
        rows.append(
            f"images/p{i}.nrrd,{label},sim-{i},masks/p{i}.nrrd,{split},{i * 3},{label},"
            f"2.8,0,7.5,7.5"
        )
    path = root / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_lungsim_manifest_keeps_extra_columns_and_centres(tmp_path: Path) -> None:
    _lungsim_like(tmp_path)
    index = load_index(tmp_path)
    assert index.layout == "manifest"
    assert index.class_names == ("I", "III")
    first = index.samples[0]
    assert first.extra["stage"] == "I" and first.extra["diameter_mm"] == "2.8"
    assert first.center_zyx == (0.0, 7.5, 7.5) and first.slice_index == 0
    assert first.mask_path.endswith("p0.nrrd") and Path(first.path).is_absolute()
    assert [s.split for s in index.samples] == ["train", "test", ""]
    assert [s.time_point for s in index.samples] == [0.0, 3.0, 6.0]
    assert index.has_patient_ids and "sim-0" not in first.patient_id


def test_manifest_volume_rows_without_centres_expand_to_lesions(tmp_path: Path) -> None:
    sphere_volume(tmp_path, "v1", centres_zyx=((3, 6, 6), (8, 16, 16)))
    sphere_volume(tmp_path, "v2")
    (tmp_path / "manifest.csv").write_text(
        "path,label,mask_path\nv1.nrrd,malignant,v1_mask.nrrd\nv2.nrrd,benign,v2_mask.nrrd\n"
    )
    index = load_index(tmp_path / "manifest.csv")
    assert [s.label for s in index.samples] == ["malignant", "malignant", "benign"]
    assert not index.has_patient_ids


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,patient_id\na.png,p1\n", "lacks required column(s) label"),
        ("", "lacks required column(s) path, label"),
        (
            "path,label\nmissing.png,a\nalso_missing.png,b\n",
            "2 path(s) in the manifest do not exist",
        ),
        ("path,label\nimg.png,\n", "row 2 has an empty path or label"),
        ("path,label,split\nimg.png,a,holdout\n", "unknown split 'holdout'"),
        ("path,label,time_point\nimg.png,a,soon\n", "'time_point' is not a number"),
    ],
)
def test_bad_manifests_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    write_png(tmp_path / "img.png", pattern(0))
    (tmp_path / "manifest.csv").write_text(content)
    with pytest.raises(DatasetError) as raised:
        read_manifest(tmp_path / "manifest.csv")
    text = str(raised.value)
    assert message in text
    assert str(tmp_path / "manifest.csv") in text


def test_missing_paths_are_all_named(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\nx1.png,a\nx2.png,b\n")
    with pytest.raises(DatasetError) as raised:
        load_index(tmp_path / "m.csv")
    assert "x1.png" in str(raised.value) and "x2.png" in str(raised.value)


def test_a_csv_that_fits_no_layout_says_which_columns_were_expected(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DatasetError) as raised:
        load_index(tmp_path / "table.csv")
    assert "path,label" in str(raised.value) and "seriesuid" in str(raised.value)


def test_rows_with_empty_masks_or_empty_centres_stay_whole_image_samples(tmp_path: Path) -> None:
    sphere_volume(tmp_path, "lesion")
    array = np.full((4, 8, 8), -800.0, dtype=np.float32)
    scan = Scan(array=array, spacing_mm=(2.0, 1.0, 1.0))
    write_volume(scan, tmp_path / "normal.nrrd")
    write_mask(np.zeros(array.shape, dtype=bool), scan, tmp_path / "normal_mask.nrrd")
    (tmp_path / "a.csv").write_text(
        "path,label,mask_path\nlesion.nrrd,cancer,lesion_mask.nrrd\n"
        "normal.nrrd,normal,normal_mask.nrrd\n"
    )
    index = load_index(tmp_path / "a.csv")
    assert [(s.label, s.center_zyx is None) for s in index.samples] == [
        ("cancer", False),
        ("normal", True),
    ]
    (tmp_path / "b.csv").write_text(
        "path,label,mask_path,lesion_center_z,lesion_center_y,lesion_center_x\n"
        "lesion.nrrd,cancer,lesion_mask.nrrd,6,12,12\nnormal.nrrd,normal,normal_mask.nrrd,,,\n"
    )
    index = load_index(tmp_path / "b.csv")
    assert [s.center_zyx for s in index.samples] == [(6.0, 12.0, 12.0), None]
    assert index.samples[1].slice_index == -1
