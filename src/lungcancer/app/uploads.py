"""Turning an uploaded file into a `Scan`, safely.

The file type is judged by content (magic bytes), never by the uploaded name, which is also
never shown or logged: file names of medical images often carry patient names. Every upload is
copied or unpacked into a private temporary folder under a neutral name and read from there;
the folder is removed as soon as the image is in memory. Zip archives (a DICOM series) are
checked before anything is written: no absolute or parent-relative member paths, no links, a
cap on the member count and on the bytes actually unpacked (a zip bomb's headers may lie, so
the count is kept while writing).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from lungcancer.errors import (
    ImageReadError,
    LungCancerError,
    RoiChoiceError,
    UnsupportedModalityError,
)
from lungcancer.io.reader import SUPPORTED_FORMATS, detect_format, read_image, read_mask
from lungcancer.io.record import Scan

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
ACCEPTED = f"{SUPPORTED_FORMATS}, or a .zip of one DICOM series"
# A neutral file name per detected format: readers that look at the suffix (SimpleITK for
# volumes) then agree with the content, and the user's own file name never reaches the disk.
_NEUTRAL_NAMES = {
    "dicom": "image.dcm",
    "png": "image.png",
    "jpeg": "image.jpg",
    "tiff": "image.tif",
    "nrrd": "image.nrrd",
    "metaimage": "image.mha",
}
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    """Caps on what an upload may cost.

    Attributes:
        max_upload_bytes: size of the uploaded file itself.
        max_unpacked_bytes: bytes written when a zip is unpacked.
        max_zip_members: files in a zip.
        timeout_s: wall-clock limit of one request's processing.
    """

    max_upload_bytes: int = 200 * 1024 * 1024
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    max_zip_members: int = 2000
    timeout_s: float = 60.0


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _upload_error(
    message: str, *, expected: str | None = None, found: str | None = None, hint: str | None = None
) -> ImageReadError:
    # Errors name "the uploaded file", never its path or name (PHI may hide there).
    return ImageReadError(
        message, path="the uploaded file", expected=expected, found=found, hint=hint
    )


def check_size(path: Path, limits: UploadLimits) -> None:
    """Refuse an upload larger than the cap."""
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise _upload_error(
            "the file is too large",
            expected=f"at most {_megabytes(limits.max_upload_bytes)}",
            found=_megabytes(size),
            hint="upload a single series or a smaller crop",
        )
    if size == 0:
        raise _upload_error("the file is empty", expected=ACCEPTED)


def is_zip(path: Path) -> bool:
    """Whether the file's content is a zip archive."""
    with open(path, "rb") as fh:
        return fh.read(4) in ZIP_MAGICS


def _safe_member(info: zipfile.ZipInfo) -> bool:
    """True for a regular file whose path stays inside the folder it is unpacked into."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        return False
    mode = info.external_attr >> 16
    return not stat.S_ISLNK(mode)


def unpack_zip(archive: Path, folder: Path, limits: UploadLimits) -> Path:
    """Unpack a zip of DICOM files into `folder` (flat, neutral names) and return it.

    Raises:
        ImageReadError: an unsafe or oversized archive, or not a valid zip.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _upload_error("the zip archive is corrupt", expected="a valid .zip") from exc
    with zf:
        members = [info for info in zf.infolist() if not info.is_dir()]
        if any(not _safe_member(info) for info in zf.infolist()):
            raise _upload_error(
                "the zip holds a path that points outside its folder, or a link",
                expected="a zip of plain DICOM files",
                found="an absolute path, '..', or a symbolic link",
                hint="zip the series folder itself, without links",
            )
        if len(members) > limits.max_zip_members:
            raise _upload_error(
                "the zip holds too many files",
                expected=f"at most {limits.max_zip_members} files (one series)",
                found=f"{len(members)} files",
            )
        if not members:
            raise _upload_error("the zip is empty", expected="a zip of one DICOM series")
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for index, info in enumerate(members):
            # Flat, numbered names: the series reader orders slices by their position tags,
            # and the archive's own names (often patient or study names) are dropped.
            target = folder / f"{index:05d}.dcm"
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(_COPY_CHUNK):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:
                            raise _upload_error(
                                "the zip unpacks to more data than allowed",
                                expected=f"at most {_megabytes(limits.max_unpacked_bytes)}",
                                found="more (a zip bomb, or several series)",
                                hint="zip a single series",
                            )
                        dst.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                raise _upload_error(
                    "a file in the zip cannot be unpacked",
                    expected="a zip with stored or deflated members",
                    found=type(exc).__name__,
                ) from exc
            except NotImplementedError as exc:
                # zipfile's way of saying "compression method or encryption not supported".
                raise _upload_error(
                    "the zip uses encryption or a compression method that is not supported",
                    expected="an unencrypted zip (stored or deflated)",
                    hint="re-create the zip without a password",
                ) from exc
    return folder


@contextmanager
def staged_upload(upload: str | Path, limits: UploadLimits) -> Iterator[Path]:
    """The upload copied (or unpacked) into a private temp folder, removed on exit.

    Yields:
        A path `read_image` can read: a file with a neutral name, or a folder of DICOM files.
    """
    source = Path(upload)
    if not source.is_file():
        raise _upload_error("no file was received", hint="upload the file again")
    check_size(source, limits)
    workdir = Path(tempfile.mkdtemp(prefix="lungcancer-upload-"))
    try:
        if is_zip(source):
            yield unpack_zip(source, workdir / "series", limits)
        else:
            kind = detect_format(source)
            name = _NEUTRAL_NAMES.get(kind)
            if name is None:
                # NIfTI may be gzipped or not; keep the suffix its content calls for.
                with open(source, "rb") as fh:
                    name = "image.nii.gz" if fh.read(2) == b"\x1f\x8b" else "image.nii"
            target = workdir / name
            shutil.copyfile(source, target)
            yield target
    except LungCancerError as exc:
        # Readers name the file they read: here a temp path that means nothing to the user.
        expected = exc.expected
        if exc.message == "not a supported image format":
            expected = ACCEPTED
        raise type(exc)(
            exc.message,
            path="the uploaded file",
            expected=expected,
            found=exc.found,
            hint=exc.hint,
        ) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def load_scan(upload: str | Path, limits: UploadLimits) -> Scan:
    """Read an uploaded image (any supported format, or a zipped DICOM series) as a `Scan`.

    Raises:
        ImageReadError: too large, unsafe, unreadable, or not CT (MR and other modalities).
    """
    with staged_upload(upload, limits) as staged:
        scan = read_image(staged)
    if scan.modality not in ("CT", "OT"):
        raise UnsupportedModalityError(
            "the image is not CT",
            path="the uploaded file",
            expected="a CT image (or a PNG/JPEG slice)",
            found=f"modality {scan.modality}",
            hint="this model was trained on CT; upload a CT image",
        )
    return scan


def load_mask(upload: str | Path, like: Scan, limits: UploadLimits) -> np.ndarray:
    """Read an uploaded lesion mask on `like`'s grid (boolean z-y-x).

    Raises:
        RoiChoiceError: a DICOM structure set or SEG whose lesion ROI is unclear; the page
            cannot name one, so the hint says how to make a file that needs no name.
    """
    try:
        with staged_upload(upload, limits) as staged:
            return read_mask(staged, like)
    except RoiChoiceError as exc:
        raise RoiChoiceError(
            exc.message,
            path="the uploaded file",
            expected=exc.expected,
            found=exc.found,
            hint="the page cannot name an ROI: write the lesion's ROI as its own mask "
            "(`lungcancer image mask IMAGE RS.dcm#NAME lesion.nii.gz`) and upload that",
        ) from exc


def describe(scan: Scan) -> str:
    """A one-line, de-identified description: format, modality, size and spacing."""
    z, y, x = scan.shape
    size = f"{x}x{y}" if z == 1 else f"{x}x{y}x{z}"
    spacing = " x ".join(f"{s:.2f}" for s in scan.spacing_mm[::-1])
    kind = str(scan.meta.get("format", "image"))
    unit = "HU" if scan.intensity == "HU" else "grey levels"
    return f"{kind}, {scan.modality}, {size} voxels, spacing {spacing} mm (x, y, z), {unit}"
