"""One entry point for every image: detect the format by content, read it as a `Scan`.

Extensions lie (".dcm" exports without the DICOM preamble, ".png" files that are JPEGs,
".img" for everything), so the format is decided from the first bytes of the file; a folder
is a DICOM series.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.errors import ImageReadError
from lungcancer.io.dicom import looks_like_dicom, read_dicom, read_dicom_header
from lungcancer.io.dicom_masks import mask_reference, read_dicom_mask
from lungcancer.io.raster import read_raster
from lungcancer.io.record import MetaValue, Scan
from lungcancer.io.volume import check_geometry, read_volume

SUPPORTED_FORMATS = (
    "DICOM file or series folder, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), "
    "MetaImage (.mha, .mhd), PNG, JPEG, TIFF"
)
_HEAD_BYTES = 1024
_NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGICS = (b"n+2\x00", b"ni2\x00")
_METAIMAGE_KEYS = ("objecttype", "ndims", "dimsize", "elementtype", "elementdatafile")
_DATA_HALF_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img")


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in _NIFTI1_MAGICS or head[4:8] in _NIFTI2_MAGICS


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(_HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_metaimage(head: bytes) -> bool:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        # A .mha header is followed by binary voxels; only the text part matters.
        text = head.split(b"\n\x00", 1)[0].decode("ascii", errors="ignore")
    keys = {line.split("=", 1)[0].strip().lower() for line in text.splitlines() if "=" in line}
    return len(keys & set(_METAIMAGE_KEYS)) >= 2


def detect_format(path: str | Path) -> str:
    """Name the format of an image file or folder from its content.

    Args:
        path: a file or a folder.

    Returns:
        One of "dicom-series", "dicom", "png", "jpeg", "tiff", "nifti", "nrrd", "metaimage".

    Raises:
        ImageReadError: missing path, or content of none of the supported formats.
    """
    file_path = Path(path)
    if file_path.is_dir():
        return "dicom-series"
    try:
        with open(file_path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except FileNotFoundError as exc:
        raise ImageReadError(
            "no such file or folder",
            path=file_path,
            expected=f"an image: {SUPPORTED_FORMATS}",
            hint="check the path",
        ) from exc
    except OSError as exc:
        raise ImageReadError(
            "the file cannot be opened",
            path=file_path,
            found=str(exc.strerror),
            hint="check the file's permissions",
        ) from exc
    # DICM first: a DICOM preamble may legally hold a TIFF header (dual-personality files).
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if _is_nifti(head) or (head.startswith(b"\x1f\x8b") and _is_nifti(_gunzip_head(file_path))):
        return "nifti"
    if _is_metaimage(head):
        return "metaimage"
    if looks_like_dicom(head):
        try:
            read_dicom_header(file_path)
        except ImageReadError:
            pass
        else:
            return "dicom"
    return _unknown(file_path, head)


def _unknown(path: Path, head: bytes) -> str:
    name = path.name.lower()
    hint = "convert the image to one of the supported formats"
    if not head:
        found = "an empty file"
    elif name.endswith(_DATA_HALF_SUFFIXES):
        found = "raw voxel data without a header"
        hint = "pass the header file (.mhd, .nhdr or .hdr) that names this data file instead"
    else:
        found = f"content starting with {head[:8].hex(' ')}"
    raise ImageReadError(
        "not a supported image format",
        path=path,
        expected=SUPPORTED_FORMATS,
        found=found,
        hint=hint,
    )


def read_image(
    path: str | Path,
    *,
    expect_ct: bool = True,
    series_uid: str | None = None,
    allow_uneven: bool = False,
) -> Scan:
    """Read any supported image as a `Scan`.

    DICOM and volumes come back in Hounsfield units (`intensity == "HU"`, modality "CT");
    PNG/JPEG/TIFF as grey levels in [0, 1] (`intensity == "unit"`, modality "OT").

    Args:
        path: an image file, or a folder holding a DICOM series.
        expect_ct: for DICOM, require CT (else `UnsupportedModalityError`); with False other
            modalities are read as unit-range intensities.
        series_uid: for a DICOM folder with several series, which one to read
            (SeriesInstanceUID or the short key from `list_dicom_series`).
        allow_uneven: for DICOM, accept unevenly spaced slices instead of failing.

    Returns:
        A float32 z-y-x `Scan` with de-identified meta; `meta["format"]` names the format.

    Raises:
        ImageReadError: unknown, corrupt or truncated input (and its subclasses).
        MissingDependencyError: compressed DICOM without the decoder extra.
    """
    file_path = Path(path)
    kind = detect_format(file_path)
    if kind in ("dicom", "dicom-series"):
        scan = read_dicom(
            file_path, expect_ct=expect_ct, series_uid=series_uid, allow_uneven=allow_uneven
        )
    elif kind in ("nifti", "nrrd", "metaimage"):
        scan = read_volume(file_path, kind)
    else:
        scan = read_raster(file_path)
    scan.meta["format"] = kind
    return scan


def read_mask(path: str | Path, like: Scan) -> np.ndarray:
    """Read a lesion mask and check that it lies on `like`'s voxel grid.

    Volumes (NIfTI, NRRD, MetaImage) must match the image's size, spacing, origin and
    direction within small tolerances; raster masks (PNG/TIFF) carry no geometry, so only
    their size is checked. Any non-zero voxel counts as inside. DICOM RT Structure Sets and
    Segmentations are laid onto the image through world coordinates (`io.dicom_masks`);
    `RS.dcm#GTV-1` names the ROI or segment when the file holds several.

    Args:
        path: the mask file, with `#ROI` after a DICOM segmentation's name if needed.
        like: the image the mask belongs to.

    Returns:
        A boolean z-y-x array of `like.shape`.

    Raises:
        GeometryMismatchError: listing every property that differs, image vs mask.
        ImageReadError: unreadable mask, a format that cannot hold a mask (a DICOM image),
            or a DICOM segmentation whose lesion ROI is unclear (the names are listed).
    """
    mask_path, roi = mask_reference(path)
    kind = detect_format(mask_path)
    if kind == "dicom":
        return read_dicom_mask(mask_path, parse_dicom(mask_path), like, roi)
    if roi is not None:
        raise ImageReadError(
            "only a DICOM segmentation holds named ROIs",
            path=mask_path,
            expected="'#ROI' after an RTSTRUCT or SEG file's name",
            found=f"'#{roi}' after a {kind} file",
            hint="drop the '#...' part",
        )
    if kind in ("nifti", "nrrd", "metaimage"):
        mask_scan = read_volume(mask_path, kind)
        check_geometry(like, mask_scan, mask_path)
    elif kind in ("png", "tiff", "jpeg"):
        mask_scan = read_raster(mask_path)
        # Raster files have no origin or direction; a mask PNG pairs with its slice by size.
        raster_like = Scan(
            array=mask_scan.array, spacing_mm=like.spacing_mm, source=mask_scan.source
        )
        sized_like = Scan(array=like.array, spacing_mm=like.spacing_mm, source=like.source)
        check_geometry(sized_like, raster_like, mask_path)
    else:
        raise ImageReadError(
            "this format cannot be read as a mask",
            path=mask_path,
            expected="a NIfTI, NRRD, MetaImage, PNG or TIFF mask, or a DICOM RTSTRUCT or SEG",
            found=kind,
            hint="pass the segmentation file itself, or export it as NIfTI or NRRD",
        )
    return mask_scan.array != 0


def parse_dicom(path: Path) -> Any:
    """Parse a DICOM file that may hold no image (a structure set), with clear errors."""
    import pydicom

    try:
        return pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise ImageReadError(
            "this DICOM file cannot be parsed",
            path=path,
            expected="a complete DICOM file",
            found=f"{type(exc).__name__}: {exc}",
            hint="export the segmentation again",
        ) from exc


def scan_summary(scan: Scan) -> dict[str, MetaValue | list[float] | list[int]]:
    """What a person checks first about an image: geometry, value range and de-identified meta.

    Args:
        scan: any `Scan`.

    Returns:
        A JSON-ready dict (no PHI: `meta` is already de-identified).
    """
    values = scan.array
    summary: dict[str, MetaValue | list[float] | list[int]] = {
        "format": str(scan.meta.get("format", "")),
        "modality": scan.modality,
        "intensity": scan.intensity,
        "shape_zyx": list(scan.shape),
        "spacing_mm_zyx": [round(v, 6) for v in scan.spacing_mm],
        "origin_xyz_mm": [round(v, 4) for v in scan.origin_xyz_mm],
        "direction_xyz": [round(v, 6) for v in scan.direction_xyz],
        "min": float(values.min()) if values.size else 0.0,
        "max": float(values.max()) if values.size else 0.0,
        "mean": float(values.mean(dtype=np.float64)) if values.size else 0.0,
    }
    summary.update({f"meta.{key}": value for key, value in sorted(scan.meta.items())})
    return summary
