"""Uploads: content sniffing, size caps, zip safety, modality checks, temp folder cleanup."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lungcancer.app.uploads import UploadLimits, describe, load_mask, load_scan, staged_upload
from lungcancer.errors import ImageReadError, UnsupportedModalityError

LIMITS = UploadLimits()


def _leftover_workdirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("lungcancer-upload-*")}


@pytest.mark.parametrize(
    ("fixture", "fmt", "depth"),
    [("png_upload", "png", 1), ("dicom_upload", "dicom", 1), ("nifti_upload", "nifti", 5)],
)
def test_formats_are_judged_by_content(
    request: pytest.FixtureRequest, fixture: str, fmt: str, depth: int
) -> None:
    before = _leftover_workdirs()
    scan = load_scan(request.getfixturevalue(fixture), LIMITS)
    assert scan.meta["format"] == fmt
    assert scan.shape[0] == depth
    assert _leftover_workdirs() == before  # the private copy is gone


def test_zipped_series_is_read_as_a_volume_without_its_names(series_zip: Path) -> None:
    scan = load_scan(series_zip, LIMITS)
    assert scan.shape == (4, 32, 32)
    assert scan.modality == "CT"
    text = describe(scan) + repr(scan.meta)
    assert "Doe" not in text and "SECRET" not in text
    assert "32x32x4" in describe(scan)


def test_mask_upload_gives_a_boolean_mask(nrrd_upload: tuple[Path, Path]) -> None:
    image, mask = nrrd_upload
    scan = load_scan(image, LIMITS)
    lesion = load_mask(mask, scan, LIMITS)
    assert lesion.dtype == bool and lesion.shape == scan.shape and lesion.sum() == 75


def test_mr_dicom_is_refused_with_a_readable_message(mr_upload: Path) -> None:
    with pytest.raises(UnsupportedModalityError) as info:
        load_scan(mr_upload, LIMITS)
    message = str(info.value)
    assert "MR" in message and "the uploaded file" in message
    assert str(mr_upload.parent) not in message


def test_too_large_and_empty_files_are_refused(png_upload: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="too large"):
        load_scan(png_upload, UploadLimits(max_upload_bytes=10))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        load_scan(empty, LIMITS)


def test_unknown_content_names_what_is_accepted(tmp_path: Path) -> None:
    fake = tmp_path / "report.dcm"
    fake.write_text("Patient: Jane Doe, definitely not an image")
    with pytest.raises(ImageReadError) as info:
        load_scan(fake, LIMITS)
    assert "not a supported image format" in str(info.value)
    assert "report.dcm" not in str(info.value)


@pytest.mark.parametrize("name", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:/x.dcm"])
def test_zip_path_traversal_is_refused_before_writing(
    tmp_path: Path, dicom_upload: Path, name: str
) -> None:
    archive = tmp_path / "traversal.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(dicom_upload, arcname="ok.dcm")
        zf.writestr(name, dicom_upload.read_bytes())
    with pytest.raises(ImageReadError, match="outside its folder"):
        load_scan(archive, LIMITS)
    assert not (tmp_path / "evil.dcm").exists()
    assert not Path("/etc/evil.dcm").exists()


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = 0o120777 << 16  # a symbolic link
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ImageReadError, match="link"):
        load_scan(archive, LIMITS)


def test_zip_bomb_stops_at_the_unpacked_cap(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * (8 * 1024 * 1024))  # 8 MB of zeros, a few KB zipped
    assert archive.stat().st_size < 100_000
    before = _leftover_workdirs()
    with pytest.raises(ImageReadError, match="more data than allowed"):
        load_scan(archive, UploadLimits(max_unpacked_bytes=1024 * 1024))
    assert _leftover_workdirs() == before


def test_zip_member_count_is_capped(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.dcm", b"x")
    with pytest.raises(ImageReadError, match="too many files"):
        load_scan(archive, UploadLimits(max_zip_members=4))


def test_corrupt_zip_is_a_readable_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ImageReadError, match="corrupt"):
        load_scan(archive, LIMITS)


def test_staged_folder_is_removed_even_when_reading_fails(png_upload: Path) -> None:
    with pytest.raises(RuntimeError), staged_upload(png_upload, LIMITS) as staged:
        workdir = staged.parent
        assert staged.name == "image.png"
        raise RuntimeError("reader crashed")
    assert not workdir.exists()
    assert np.isfinite(load_scan(png_upload, LIMITS).array).all()


def test_a_structure_set_upload_gives_its_lesion_or_says_how_to_name_none(
    tmp_path: Path,
) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
    from io_builders import write_ct_series, write_rtstruct

    from lungcancer.errors import RoiChoiceError

    truth = write_ct_series(tmp_path / "ct", n_slices=1, rows=16, columns=16)
    scan = load_scan(truth.paths[0], LIMITS)
    square = [(0.0, 2.5, 2.5), (0.0, 2.5, 6.5), (0.0, 6.5, 6.5), (0.0, 6.5, 2.5)]
    clear = write_rtstruct(tmp_path / "rs_clear", truth, {"Body": [square], "GTV-1": [square]})
    assert load_mask(clear, scan, LIMITS).sum() == 16
    unclear = write_rtstruct(tmp_path / "rs_unclear", truth, {"Body": [square], "Heart": [square]})
    with pytest.raises(RoiChoiceError) as info:
        load_mask(unclear, scan, LIMITS)
    message = str(info.value)
    # The page cannot name an ROI: the hint says how to make a file that needs none, and
    # neither the private copy's name nor its folder leaks into the message.
    assert "'Heart'" in message and "lungcancer image mask" in message
    assert "image.dcm" not in message and "lungcancer-upload-" not in message
