"""DICOM RT Structure Sets and Segmentations read as lesion masks through `read_mask`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from io_builders import SeriesTruth, write_ct_series, write_rtstruct, write_seg
from typer.testing import CliRunner

from lungcancer.cli import app, main
from lungcancer.data.manifest import read_manifest
from lungcancer.data.measure import measure_file
from lungcancer.errors import GeometryMismatchError, ImageReadError
from lungcancer.io import Scan, mask_reference, read_image, read_mask

# Half-voxel corners: the voxel centres inside are rows 3..8, columns 3..10, with no centre on
# an edge, so the expected mask does not depend on how a rasteriser treats boundaries.
OUTER = [(2.5, 2.5), (2.5, 10.5), (8.5, 10.5), (8.5, 2.5)]
HOLE = [(4.5, 5.5), (4.5, 8.5), (6.5, 8.5), (6.5, 5.5)]
runner = CliRunner()


def _on_slice(index: int, corners: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    return [(float(index), y, x) for y, x in corners]


def _expected(shape: tuple[int, int, int], index: int, *, hole: bool) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[index, 3:9, 3:11] = True
    if hole:
        mask[index, 5:7, 6:9] = False
    return mask


@pytest.fixture
def series(tmp_path: Path) -> tuple[SeriesTruth, Scan]:
    # Shuffled file names and an oblique-free but non-trivial geometry: origin and spacing
    # that are not round, so a mask placed by file order or index would land elsewhere.
    truth = write_ct_series(tmp_path / "ct", n_slices=4, rows=12, columns=14, shuffle=True)
    return truth, read_image(truth.folder)


def test_rtstruct_contours_become_the_voxels_inside_with_holes(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    rs = write_rtstruct(
        tmp_path / "RS.dcm",
        truth,
        {"GTV-1": [_on_slice(1, OUTER), _on_slice(1, HOLE), _on_slice(2, OUTER)]},
    )
    mask = read_mask(rs, like=scan)
    expected = _expected(scan.shape, 1, hole=True) | _expected(scan.shape, 2, hole=False)
    assert mask.dtype == bool and mask.shape == scan.shape
    np.testing.assert_array_equal(mask, expected)


def test_rtstruct_lesion_roi_is_chosen_by_name_or_refused_when_unclear(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    lung = [(4.0, 1.0), (4.0, 12.0), (10.0, 12.0), (10.0, 1.0)]
    rs = write_rtstruct(
        tmp_path / "RS.dcm",
        truth,
        {"Lung-Left": [_on_slice(0, lung)], "GTV-1": [_on_slice(1, OUTER)]},
    )
    # One ROI reads as the tumour: taken without being named.
    np.testing.assert_array_equal(read_mask(rs, like=scan), _expected(scan.shape, 1, hole=False))
    # Named, by name (any case) or number, another ROI is taken instead.
    by_name = read_mask(f"{rs}#lung-left", like=scan)
    by_number = read_mask(f"{rs}#1", like=scan)
    np.testing.assert_array_equal(by_name, by_number)
    assert by_name[0].any() and not by_name[1:].any()
    # Two candidates and no name: refused with every name listed, never guessed.
    unclear = write_rtstruct(
        tmp_path / "RS2.dcm",
        truth,
        {"Lung-Left": [_on_slice(0, lung)], "Heart": [_on_slice(1, OUTER)]},
    )
    with pytest.raises(ImageReadError) as unclear_info:
        read_mask(unclear, like=scan)
    assert "'Lung-Left'" in str(unclear_info.value) and "'Heart'" in str(unclear_info.value)
    assert "#" in str(unclear_info.value)  # the hint shows how to name one
    with pytest.raises(ImageReadError, match="no single ROI named 'GTV-9'"):
        read_mask(f"{unclear}#GTV-9", like=scan)


def test_rtstruct_off_grid_contours_are_refused(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    between = write_rtstruct(
        tmp_path / "between.dcm",
        truth,
        {"GTV": [_on_slice(1, OUTER)[:2] + _on_slice(2, OUTER)[2:]]},
    )
    with pytest.raises(GeometryMismatchError, match="does not lie in one of the image's slice"):
        read_mask(between, like=scan)
    halfway = write_rtstruct(
        tmp_path / "halfway.dcm", truth, {"GTV": [[(1.5, y, x) for y, x in OUTER]]}
    )
    with pytest.raises(GeometryMismatchError, match="between the image's slices"):
        read_mask(halfway, like=scan)
    outside = write_rtstruct(
        tmp_path / "outside.dcm", truth, {"GTV": [_on_slice(1, [(2, 2), (2, 30), (8, 30)])]}
    )
    with pytest.raises(GeometryMismatchError, match="reaches outside the image"):
        read_mask(outside, like=scan)
    open_contour = write_rtstruct(
        tmp_path / "open.dcm", truth, {"GTV": [_on_slice(1, OUTER)]}, geometric_type="OPEN_PLANAR"
    )
    with pytest.raises(ImageReadError, match="not a closed outline"):
        read_mask(open_contour, like=scan)


def test_rtstruct_on_one_slice_of_its_series(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    rs = write_rtstruct(
        tmp_path / "RS.dcm", truth, {"GTV": [_on_slice(1, OUTER), _on_slice(3, OUTER)]}
    )
    # One file of the series, read alone: only the contour on its own slice applies.
    slice_path = next(p for p in truth.paths if np.allclose(read_image(p).array, scan.array[3]))
    one_slice = read_image(slice_path)
    mask = read_mask(rs, like=one_slice)
    np.testing.assert_array_equal(mask[0], _expected(scan.shape, 1, hole=False)[1])
    other = next(p for p in truth.paths if np.allclose(read_image(p).array, scan.array[0]))
    with pytest.raises(ImageReadError, match="no contour on this image"):
        read_mask(rs, like=read_image(other))
    # A lone slice's z spacing is its thickness (here twice the series' spacing): the
    # neighbouring slice's contour, half a thickness away, is skipped, not called misplaced.
    thick = replace(one_slice, spacing_mm=(5.0, *one_slice.spacing_mm[1:]))
    near = write_rtstruct(
        tmp_path / "near.dcm", truth, {"GTV": [_on_slice(2, OUTER), _on_slice(3, HOLE)]}
    )
    only_own = read_mask(near, like=thick)
    assert only_own.sum() == 6 and only_own[0, 5:7, 6:9].all()


def test_rtstruct_contour_smaller_than_a_voxel_keeps_its_voxel(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    tiny = [(5.1, 6.1), (5.1, 6.3), (5.3, 6.3), (5.3, 6.1)]
    rs = write_rtstruct(tmp_path / "RS.dcm", truth, {"nodule": [_on_slice(2, tiny)]})
    mask = read_mask(rs, like=scan)
    assert mask.sum() == 1 and mask[2, 5, 6]


def test_seg_frames_are_placed_by_position(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    rng = np.random.default_rng(0)
    tumour = rng.random(scan.shape) > 0.7
    tumour[0] = False  # a slice without frames stays empty
    lung = rng.random(scan.shape) > 0.5
    seg = write_seg(tmp_path / "SEG.dcm", truth, {"Lung": lung, "Neoplasm, Primary": tumour})
    np.testing.assert_array_equal(read_mask(seg, like=scan), tumour)
    np.testing.assert_array_equal(read_mask(f"{seg}#Lung", like=scan), lung)


def test_seg_fractional_counts_from_half(tmp_path: Path, series: tuple[SeriesTruth, Scan]) -> None:
    truth, scan = series
    probability = np.zeros(scan.shape)
    probability[1, 2:5, 2:5] = 0.49
    probability[1, 3, 3] = 0.51
    probability[2, 6, 7] = 1.0
    seg = write_seg(tmp_path / "SEG.dcm", truth, {"GTV": probability}, fractional=True)
    mask = read_mask(seg, like=scan)
    assert mask.sum() == 2 and mask[1, 3, 3] and mask[2, 6, 7]


def test_seg_on_another_grid_is_refused(tmp_path: Path, series: tuple[SeriesTruth, Scan]) -> None:
    truth, scan = series
    tumour = np.zeros(scan.shape, dtype=bool)
    tumour[1, 2:4, 2:4] = True
    shifted = write_seg(tmp_path / "shifted.dcm", truth, {"GTV": tumour}, shift_rows=2.0)
    with pytest.raises(GeometryMismatchError, match="shifted in-plane"):
        read_mask(shifted, like=scan)
    resampled = write_seg(
        tmp_path / "resampled.dcm", truth, {"GTV": tumour}, pixel_spacing_mm=(1.0, 1.0)
    )
    with pytest.raises(GeometryMismatchError, match="pixel spacing"):
        read_mask(resampled, like=scan)


def test_a_dicom_image_or_a_stray_roi_name_is_not_a_mask(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    with pytest.raises(ImageReadError, match="not a segmentation"):
        read_mask(truth.paths[0], like=scan)
    nrrd = tmp_path / "mask.nrrd"
    from lungcancer.io import write_mask

    write_mask(np.zeros(scan.shape, dtype=bool), scan, nrrd)
    with pytest.raises(ImageReadError, match="only a DICOM segmentation holds named ROIs"):
        read_mask(f"{nrrd}#GTV", like=scan)


def test_mask_reference_keeps_files_whose_names_hold_a_hash(tmp_path: Path) -> None:
    odd = tmp_path / "case#1.nrrd"
    odd.write_bytes(b"")
    assert mask_reference(odd) == (odd, None)
    assert mask_reference(f"{tmp_path}/RS.dcm#GTV-1") == (tmp_path / "RS.dcm", "GTV-1")
    assert mask_reference(f"{tmp_path}/RS.dcm") == (tmp_path / "RS.dcm", None)


def test_manifest_and_measure_take_a_structure_set(
    tmp_path: Path,
    series: tuple[SeriesTruth, Scan],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth, _ = series
    write_rtstruct(
        tmp_path / "RS.dcm",
        truth,
        {"Body": [_on_slice(0, OUTER)], "GTV-1": [_on_slice(2, OUTER)]},
    )
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,patient_id,mask_path\nct,malignant,P1,RS.dcm#GTV-1\n", encoding="utf-8"
    )
    samples = read_manifest(manifest).samples
    assert len(samples) == 1 and samples[0].slice_index == 2  # the lesion's slice, found
    (lesion,) = measure_file(str(truth.folder), str(tmp_path / "RS.dcm#GTV-1"))
    # 6 rows x 8 columns of 0.7 x 0.8 mm voxels: the diagonal through the voxel centres.
    assert lesion.voxel_count == 48
    assert lesion.diameter_mm == pytest.approx(np.hypot(5 * 0.7, 7 * 0.8))
    # The CLI: the ROI named after '#', and an unclear choice as a clean message, exit 2.
    named = runner.invoke(
        app, ["measure", str(truth.folder), "--mask", f"{tmp_path / 'RS.dcm'}#GTV-1", "--json"]
    )
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["lesions"][0]["diameter_mm"] == pytest.approx(
        lesion.diameter_mm
    )
    write_rtstruct(
        tmp_path / "RS2.dcm", truth, {"Body": [_on_slice(0, OUTER)], "Heart": [_on_slice(2, OUTER)]}
    )
    argv = ["lungcancer", "measure", str(truth.folder), "--mask", str(tmp_path / "RS2.dcm")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "'Heart'" in error and "RS2.dcm#" in error and "Traceback" not in error


def test_image_mask_writes_a_structure_set_as_a_volume_on_the_image_grid(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    rs = write_rtstruct(
        tmp_path / "RS.dcm", truth, {"GTV-1": [_on_slice(1, OUTER), _on_slice(1, HOLE)]}
    )
    target = tmp_path / "gtv.nrrd"
    result = runner.invoke(app, ["image", "mask", str(truth.folder), str(rs), str(target)])
    assert result.exit_code == 0, result.output
    assert "42 voxels inside on 1 of 4 slice(s)" in result.output
    # Read back as an ordinary mask file: the geometry check passes and the voxels are the same.
    np.testing.assert_array_equal(read_mask(target, like=scan), read_mask(rs, like=scan))


def test_a_structure_set_inside_the_series_folder_is_skipped_and_named(tmp_path: Path) -> None:
    truth = write_ct_series(tmp_path / "ct", n_slices=3)
    rs = write_rtstruct(truth.folder / "RS.dcm", truth, {"GTV": [_on_slice(1, OUTER)]})
    scan = read_image(truth.folder)
    assert scan.shape == (3, 16, 16)
    assert "RS.dcm: an RT Structure Set" in str(scan.meta["skipped_files"])
    assert read_mask(rs, like=scan).sum() == 48


def test_a_lesion_outlined_by_its_iso_contours_reads_back_as_itself(tmp_path: Path) -> None:
    # A structure set as planning systems write it: each slice's outline traced around the
    # lesion's voxels (marching squares at half height), many vertices, curved edges.
    from skimage.measure import find_contours

    truth = write_ct_series(tmp_path / "ct", n_slices=5, rows=40, columns=48)
    scan = read_image(truth.folder)
    z, y, x = np.ogrid[:5, :40, :48]
    lesion = ((z - 2) / 2.2) ** 2 + ((y - 19.3) / 9.5) ** 2 + ((x - 23.8) / 13.0) ** 2 <= 1.0
    contours = [
        [(float(index), float(r), float(c)) for r, c in outline]
        for index in range(5)
        for outline in find_contours(np.pad(lesion[index], 1).astype(float), 0.5)
    ]
    # find_contours ran on a padded slice: shift back by the pad.
    contours = [[(zz, r - 1, c - 1) for zz, r, c in outline] for outline in contours]
    rs = write_rtstruct(tmp_path / "RS.dcm", truth, {"GTV": contours})
    # Outlines at half height pass between inside and outside voxel centres, so the voxels whose
    # centres they enclose are exactly the lesion's.
    np.testing.assert_array_equal(read_mask(rs, like=scan), lesion)


def test_image_rois_lists_what_a_mask_reference_can_name(
    tmp_path: Path, series: tuple[SeriesTruth, Scan]
) -> None:
    truth, scan = series
    rs = write_rtstruct(
        tmp_path / "RS.dcm",
        truth,
        {"Lung-Left": [_on_slice(0, OUTER)], "GTV-1": [_on_slice(1, OUTER), _on_slice(1, HOLE)]},
    )
    listed = runner.invoke(app, ["image", "rois", str(rs)], terminal_width=160)
    assert listed.exit_code == 0, listed.output
    gtv_row = next(line for line in listed.output.splitlines() if "GTV-1" in line)
    assert "2" in gtv_row and "yes" in gtv_row  # two contours; taken without '#ROI'
    lung_row = next(line for line in listed.output.splitlines() if "Lung-Left" in line)
    assert "yes" not in lung_row
    tumour = np.zeros(scan.shape, dtype=bool)
    tumour[1:3, 2:4, 2:4] = True
    seg = write_seg(tmp_path / "SEG.dcm", truth, {"Lung": tumour, "Heart": tumour})
    unclear = runner.invoke(app, ["image", "rois", str(seg)], terminal_width=160)
    assert unclear.exit_code == 0, unclear.output
    assert "SEG.dcm#NUMBER" in unclear.output  # nothing is taken by default: how to name one
    heart_row = next(line for line in unclear.output.splitlines() if "Heart" in line)
    assert "2" in heart_row  # frames on two slices
