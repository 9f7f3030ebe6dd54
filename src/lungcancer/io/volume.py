"""Volumes and masks in NIfTI, NRRD and MetaImage, through SimpleITK.

SimpleITK's geometry (x-y-z spacing and origin, row-major direction) maps one to one onto
`Scan` once the array axes are read as z-y-x. Writes are atomic: SimpleITK picks the writer by
the file extension and MetaImage/NRRD may write a header plus a data file that the header names,
so each write goes to a temporary folder beside the target under the final file names and the
files are then renamed into place, data first and header last.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.errors import GeometryMismatchError, ImageReadError, LungCancerError
from lungcancer.io.record import MetaValue, Scan
from lungcancer.io.volume_header import check_declared_size

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Tolerances for "same geometry": NIfTI stores spacing and origin as float32 and MetaImage
# prints them in decimal, so exact equality would reject masks written by other tools.
SPACING_REL_TOL = 1e-3
ORIGIN_TOL_VOXELS = 0.01
DIRECTION_TOL = 1e-3
_INT16_MIN, _INT16_MAX = -32768, 32767
_META_MODALITY = "lungcancer_modality"
_META_INTENSITY = "lungcancer_intensity"
_NOTES_KEY = "ITK_FileNotes"
_NOTE_PATTERN = re.compile(r"lungcancer modality=(\w+) intensity=(HU|unit)")


def volume_suffix(path: str | Path) -> str | None:
    """The volume extension of `path` (".nii.gz", ".nrrd", ...), or None if it has none."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def _image_to_scan_parts(
    image: Any, path: Path
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            "the volume has several values per voxel (colour or vector image)",
            path=path,
            expected="one scalar value per voxel",
            found=f"{image.GetNumberOfComponentsPerPixel()} components per voxel",
            hint="save one channel per file",
        )
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
        dimension = 3
    if dimension == 2:
        spacing_x, spacing_y = image.GetSpacing()
        origin_x, origin_y = image.GetOrigin()
        d = image.GetDirection()
        array = sitk.GetArrayFromImage(image)[np.newaxis]
        return (
            array,
            (1.0, float(spacing_y), float(spacing_x)),
            (float(origin_x), float(origin_y), 0.0),
            (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0),
        )
    if dimension != 3:
        raise ImageReadError(
            "only 2D and 3D volumes are supported",
            path=path,
            expected="a 2D or 3D image",
            found=f"a {dimension}D image of size {image.GetSize()}",
            hint="split time series or multi-channel volumes into one 3D file each",
        )
    spacing = tuple(float(v) for v in image.GetSpacing())
    origin = tuple(float(v) for v in image.GetOrigin())
    return (
        sitk.GetArrayFromImage(image),
        (spacing[2], spacing[1], spacing[0]),
        (origin[0], origin[1], origin[2]),
        tuple(float(v) for v in image.GetDirection()),
    )


_IMAGE_IO = {"nrrd": "NrrdImageIO", "metaimage": "MetaImageIO", "nifti": "NiftiImageIO"}


def _execute_checked(reader: Any, path: Path, format_name: str) -> Any:
    # The header first: a damaged size must be refused before ITK allocates the voxels.
    reader.ReadImageInformation()
    check_declared_size(reader, path, format_name)
    return reader.Execute()


def _read_sitk(path: Path, format_name: str) -> Any:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    reader = sitk.ImageFileReader()
    if format_name in _IMAGE_IO:
        # The format was detected from the content; SimpleITK would guess from the extension.
        reader.SetImageIO(_IMAGE_IO[format_name])
    try:
        if format_name == "nifti" and volume_suffix(path) not in (".nii", ".nii.gz"):
            # ITK's NIfTI reader insists on the extension: read a correctly named link.
            with tempfile.TemporaryDirectory() as folder:
                with open(path, "rb") as fh:
                    gzipped = fh.read(2) == b"\x1f\x8b"
                link = Path(folder) / ("image.nii.gz" if gzipped else "image.nii")
                link.symlink_to(path.resolve())
                reader.SetFileName(str(link))
                return _execute_checked(reader, path, format_name)
        reader.SetFileName(str(path))
        return _execute_checked(reader, path, format_name)
    except RuntimeError as exc:
        # ITK's message carries the C++ location first; the last line says what went wrong.
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(
            "the volume file is corrupt, truncated or incomplete",
            path=path,
            expected="a complete NIfTI, NRRD or MetaImage file (with its data file if detached)",
            found=reason[:300],
            hint="re-export the volume; for .mhd/.nhdr headers keep the data file beside them",
        ) from exc


def _written_kind(image: Any) -> tuple[str, str]:
    """(modality, intensity) as this toolkit wrote them, else CT in HU."""
    keys = set(image.GetMetaDataKeys())
    if _META_MODALITY in keys and _META_INTENSITY in keys:
        return image.GetMetaData(_META_MODALITY), image.GetMetaData(_META_INTENSITY)
    # NIfTI has no free key-value header; its 80-character description carries the note.
    for key in ("descrip", _NOTES_KEY):
        if key in keys:
            match = _NOTE_PATTERN.fullmatch(image.GetMetaData(key).strip())
            if match:
                return match.group(1), match.group(2)
    return "CT", "HU"


def read_volume(path: str | Path, format_name: str = "") -> Scan:
    """Read a NIfTI, NRRD or MetaImage volume.

    Volumes are taken as CT in Hounsfield units unless the file was written by this toolkit
    with another modality or intensity kind (recorded in its header).

    Args:
        path: the volume file (for detached formats, the header).
        format_name: the detected format, recorded in `meta["format"]`.

    Returns:
        A float32 z-y-x `Scan`.

    Raises:
        ImageReadError: unreadable, truncated, vector-valued or 4D+ files.
    """
    file_path = Path(path)
    image = _read_sitk(file_path, format_name)
    array, spacing_mm, origin, direction = _image_to_scan_parts(image, file_path)
    modality, intensity_text = _written_kind(image)
    meta: dict[str, MetaValue] = {"format": format_name or (volume_suffix(file_path) or "")}
    meta["source_dtype"] = str(array.dtype)
    return Scan(
        array=array.astype(np.float32, copy=False),
        spacing_mm=spacing_mm,
        origin_xyz_mm=origin,
        direction_xyz=direction,
        modality=modality,
        intensity="unit" if intensity_text == "unit" else "HU",
        meta=meta,
        source=str(file_path),
    )


def geometry_mismatches(image: Scan, mask: Scan) -> list[str]:
    """Each geometric property on which `mask` differs from `image`, as readable lines.

    Args:
        image: the image.
        mask: the mask read as a `Scan`.

    Returns:
        Lines such as "spacing_mm (z, y, x): image (2.5, 0.7, 0.7) vs mask (1, 1, 1)"; empty
        when the geometries agree within the tolerances.
    """
    problems: list[str] = []
    if image.shape != mask.shape:
        problems.append(f"size (z, y, x): image {image.shape} vs mask {mask.shape}")
    spacing_a = np.asarray(image.spacing_mm)
    spacing_b = np.asarray(mask.spacing_mm)
    if not np.allclose(spacing_a, spacing_b, rtol=SPACING_REL_TOL, atol=0.0):
        problems.append(f"spacing_mm (z, y, x): image {_fmt(spacing_a)} vs mask {_fmt(spacing_b)}")
    origin_tol_mm = ORIGIN_TOL_VOXELS * float(min(spacing_a.min(), spacing_b.min()))
    origin_a = np.asarray(image.origin_xyz_mm)
    origin_b = np.asarray(mask.origin_xyz_mm)
    if np.abs(origin_a - origin_b).max() > max(origin_tol_mm, 1e-4):
        problems.append(f"origin_xyz_mm: image {_fmt(origin_a)} vs mask {_fmt(origin_b)}")
    direction_a = np.asarray(image.direction_xyz)
    direction_b = np.asarray(mask.direction_xyz)
    if np.abs(direction_a - direction_b).max() > DIRECTION_TOL:
        problems.append(f"direction_xyz: image {_fmt(direction_a)} vs mask {_fmt(direction_b)}")
    return problems


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def check_geometry(image: Scan, mask: Scan, mask_path: str | Path) -> None:
    """Raise `GeometryMismatchError` unless `mask` shares `image`'s geometry.

    Args:
        image: the image.
        mask: the mask read as a `Scan`.
        mask_path: the mask file, named in the error.

    Raises:
        GeometryMismatchError: listing every mismatching property, image vs mask.
    """
    problems = geometry_mismatches(image, mask)
    if problems:
        raise GeometryMismatchError(
            "the mask does not lie on the image's voxel grid",
            path=mask_path,
            expected=f"the geometry of the image {Path(image.source).name or '(in memory)'}",
            found="; ".join(problems),
            hint="resample the mask onto the image (e.g. SimpleITK.Resample with "
            "nearest-neighbour interpolation) or pair it with the image it was drawn on",
        )


def _to_sitk(array: np.ndarray, like: Scan) -> Any:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(v) for v in like.spacing_mm[::-1]])
    image.SetOrigin([float(v) for v in like.origin_xyz_mm])
    image.SetDirection([float(v) for v in like.direction_xyz])
    return image


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_sitk_atomic(image: Any, path: str | Path, *, compress: bool) -> None:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    target = Path(path)
    if volume_suffix(target) is None:
        raise LungCancerError(
            "unknown volume file extension",
            path=target,
            expected="one of " + ", ".join(VOLUME_SUFFIXES),
            found=target.suffix or "no extension",
            hint="name the output e.g. scan.nrrd or scan.nii.gz",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged_header = staging / target.name
        try:
            sitk.WriteImage(image, str(staged_header), useCompression=compress)
        except RuntimeError as exc:
            full = "No space left" in str(exc)
            raise LungCancerError(
                "the disk is full; nothing was written" if full else "could not write volume",
                path=target,
                found=str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else None,
                hint="free some space or write to another folder"
                if full
                else "check that the folder is writable",
            ) from exc
        data_files = [p for p in staging.iterdir() if p != staged_header]
        for staged in [*data_files, staged_header]:
            _fsync(staged)
            os.replace(staged, target.parent / staged.name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LungCancerError(
                "the disk is full; nothing was written and the previous file is intact",
                path=target,
                hint="free some space or write to another folder",
            ) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _storage_array(scan: Scan) -> np.ndarray:
    array = scan.array
    if scan.intensity == "HU" and np.isfinite(array).all():
        in_range = array.size == 0 or (array.min() >= _INT16_MIN and array.max() <= _INT16_MAX)
        if in_range and np.array_equal(array, np.rint(array)):
            return array.astype(np.int16)
    return array


def write_volume(scan: Scan, path: str | Path, *, compress: bool = True) -> None:
    """Write a `Scan` as NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd).

    The write is atomic and keeps spacing, origin and direction. HU volumes whose values are
    whole numbers within int16 are stored as int16 (exact, half the size); anything else as
    float32. The header records modality and intensity kind (NIfTI: in its description)
    so `read_image` gives them back; volumes from elsewhere read as CT in HU.

    Args:
        scan: the image to write.
        path: the output file; its extension picks the format.
        compress: gzip the voxel data (NIfTI compression follows the .gz extension instead).

    Raises:
        LungCancerError: unknown extension, unwritable folder or a full disk.
    """
    image = _to_sitk(_storage_array(scan), scan)
    image.SetMetaData(_META_MODALITY, scan.modality)
    image.SetMetaData(_META_INTENSITY, scan.intensity)
    image.SetMetaData(_NOTES_KEY, f"lungcancer modality={scan.modality} intensity={scan.intensity}")
    _write_sitk_atomic(image, path, compress=compress)


def write_mask(mask: np.ndarray, like: Scan, path: str | Path) -> None:
    """Write a binary or label mask on `like`'s voxel grid, as compressed uint8.

    Args:
        mask: z-y-x array of `like`'s shape; booleans or small non-negative labels.
        like: the image the mask belongs to (its geometry is written).
        path: the output file; its extension picks the format.

    Raises:
        GeometryMismatchError: the mask's shape differs from the image's.
        LungCancerError: labels outside 0..255, unknown extension or a failed write.
    """
    values = np.asarray(mask)
    if values.shape != like.shape:
        raise GeometryMismatchError(
            "the mask array does not have the image's shape",
            path=path,
            expected=f"shape (z, y, x) {like.shape}",
            found=f"shape {values.shape}",
            hint="build the mask on the image's voxel grid",
        )
    if values.dtype != np.bool_ and values.size and (values.min() < 0 or values.max() > 255):
        raise LungCancerError(
            "mask labels do not fit in uint8",
            path=path,
            expected="labels 0..255",
            found=f"labels {values.min()}..{values.max()}",
            hint="relabel the mask",
        )
    image = _to_sitk(values.astype(np.uint8), like)
    _write_sitk_atomic(image, path, compress=True)
