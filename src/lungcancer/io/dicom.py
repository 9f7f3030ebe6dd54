"""DICOM files and series folders -> `Scan` in Hounsfield units, de-identified.

Each file's header is parsed once with the pixel data deferred, so a folder holding several
series costs only their headers; the chosen series' pixels are then decoded straight into one
preallocated float32 volume. Slices are ordered by their position along the slice normal,
z spacing comes from those positions (SliceThickness is the reconstructed slab width, not
the distance between slices), and everything that is skipped or assumed is written into
`Scan.meta` and logged, never dropped silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.errors import (
    ImageReadError,
    MissingDependencyError,
    UnsupportedModalityError,
)
from lungcancer.io.dicom_geometry import (
    SliceHeader,
    largest_stack,
    order_slices,
    relative_name,
    slice_headers,
)
from lungcancer.io.dicom_masks import dicom_mask_kind
from lungcancer.io.phi import raw_dicom_text, short_key, whitelisted_dicom_meta
from lungcancer.io.record import MetaValue, Scan

logger = logging.getLogger(__name__)

# Elements larger than this stay on disk until decoded: headers of unchosen series are cheap.
_DEFER_BYTES = 4096
_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Lossless codecs shrink a CT slice a few times and a blank one at most a few thousand times;
# images up to the allowance below pass whatever their compressed size.
_MAX_COMPRESSION_RATIO = 10_000
_ALWAYS_PLAUSIBLE_BYTES = 64 * 1024 * 1024
_PREAMBLE_GROUPS = (0x0002, 0x0008)
_JPEG_EXTRA_HINT = 'install the decoders with: pip install "lungcancer[jpeg]"'
_MAX_LISTED_SKIPS = 20


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One series found in a folder, described without PHI.

    Attributes:
        key: short salted hash of the SeriesInstanceUID; pass it as `series_uid=` to read it.
        modality: DICOM modality code.
        n_files: number of image files in the series.
        rows: image rows of the first file.
        columns: image columns of the first file.
        description: a summary built from whitelisted technical attributes only.
    """

    key: str
    modality: str
    n_files: int
    rows: int
    columns: int
    description: str


@dataclass
class _Slice:
    path: Path
    dataset: Any
    headers: list[SliceHeader]


def _parsed(path: Path) -> _Slice:
    """Header, slice geometry and modality of one file; any unreadable value is an error."""
    dataset = read_dicom_header(path)
    try:
        # pydicom converts values lazily: convert the ones we use now, so a corrupt value
        # surfaces here (and the file is skipped) rather than halfway through a read.
        headers = slice_headers(path, dataset)
        str(dataset.get("Modality", ""))
    except Exception as exc:
        raise _corrupt(path, exc) from exc
    return _Slice(path, dataset, headers)


@dataclass
class _Scanned:
    series: dict[str, list[_Slice]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file look like DICOM (Part 10 or a bare dataset).

    Args:
        head: at least the first 132 bytes of the file (fewer if the file is shorter).

    Returns:
        True for a "DICM" marker at offset 128, or a first tag in group 0002/0008 as
        written by tools that omit the preamble.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    little = int.from_bytes(head[0:2], "little")
    big = int.from_bytes(head[0:2], "big")
    return little in _PREAMBLE_GROUPS or big == 0x0008


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(132)


def _pixel_data_problem(dataset: Any, path: Path) -> str | None:
    if _PIXEL_DATA_TAG not in dataset:
        if "SOPClassUID" not in dataset:
            return "truncated or corrupt: the file ends before its image attributes"
        if dicom_mask_kind(dataset) == "rtstruct":
            return "an RT Structure Set, not an image (pass it as a mask: --mask)"
        return "no pixel data (not an image: e.g. a report, DICOMDIR or presentation state)"
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        needed = (
            (rows * columns * int(dataset.get("SamplesPerPixel", 1)) * frames)
            * int(dataset.BitsAllocated)
            // 8
        )
    except (AttributeError, TypeError, ValueError, OverflowError):
        return "missing or unreadable Rows/Columns/BitsAllocated/NumberOfFrames"
    if min(rows, columns, frames) < 1 or needed < 1:
        return f"an image without pixels: {rows}x{columns}, {frames} frame(s)"
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    length = getattr(element, "length", None)
    value_tell = getattr(element, "value_tell", None)
    if length is None or value_tell is None:
        return None
    size = path.stat().st_size
    # Encapsulated (compressed) pixel data has an undefined length and runs to the file's end.
    stored = size - value_tell
    if length != _UNDEFINED_LENGTH:
        if value_tell + length > size:
            return f"truncated: pixel data needs {length} bytes, the file holds {stored}"
        stored = length
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        # Rows, Columns and NumberOfFrames size the buffers before anything is decoded; a
        # corrupt header would otherwise cost gigabytes for a few hundred bytes of data.
        if needed > _MAX_COMPRESSION_RATIO * stored + _ALWAYS_PLAUSIBLE_BYTES:
            return (
                f"the header declares {needed} bytes of pixels, more than {stored} bytes "
                "of compressed data can hold"
            )
        return None
    if length != _UNDEFINED_LENGTH and length < needed:
        return f"truncated: pixel data holds {length} bytes, the image needs {needed}"
    return None


def read_dicom_header(path: Path) -> Any:
    """Parse one DICOM file's header with the pixel data left on disk.

    Args:
        path: the file.

    Returns:
        A `pydicom.Dataset`.

    Raises:
        ImageReadError: not DICOM, corrupt, truncated, or without an image.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except InvalidDicomError:
        # Files without the 128-byte preamble are still DICOM; `force` parses them, and the
        # checks below reject what merely parsed by chance.
        try:
            dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=True)
        except Exception as exc:
            raise _corrupt(path, exc) from exc
    except Exception as exc:
        raise _corrupt(path, exc) from exc
    try:
        problem = _pixel_data_problem(dataset, path)
        if problem is None and "Modality" not in dataset:
            problem = "no Modality attribute: not a valid DICOM image"
    except Exception as exc:
        raise _corrupt(path, exc) from exc
    if problem is not None:
        raise ImageReadError(
            "this DICOM file cannot be read as an image",
            path=path,
            expected="a DICOM image with complete pixel data",
            found=problem,
            hint="re-export the file from the scanner or PACS, or remove it from the folder",
        )
    return dataset


def _corrupt(path: Path, exc: BaseException) -> ImageReadError:
    return ImageReadError(
        "the DICOM file is corrupt or truncated",
        path=path,
        expected="a complete DICOM file",
        found=f"{type(exc).__name__}: {str(exc)[:200]}",
        hint="re-export the file from the scanner or PACS, or remove it from the folder",
    )


def _scan_folder(folder: Path) -> _Scanned:
    scanned = _Scanned()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if name.upper() == "DICOMDIR":
                scanned.skipped.append((relative, "DICOMDIR index file, not an image"))
                continue
            try:
                head = _read_head(path)
            except OSError as exc:
                scanned.skipped.append((relative, f"unreadable: {exc.strerror}"))
                continue
            if not looks_like_dicom(head):
                scanned.skipped.append((relative, "not a DICOM file"))
                continue
            try:
                item = _parsed(path)
            except ImageReadError as exc:
                scanned.skipped.append((relative, exc.found or exc.message))
                continue
            uid = raw_dicom_text(item.dataset, "SeriesInstanceUID") or ""
            scanned.series.setdefault(uid, []).append(item)
    return scanned


def _series_key(uid: str) -> str:
    return short_key(uid) if uid else "no-uid"


def _summary(uid: str, slices: list[_Slice]) -> str:
    modality = str(slices[0].dataset.get("Modality", "?"))
    files = "1 file" if len(slices) == 1 else f"{len(slices)} files"
    return f"{_series_key(uid)} ({modality}, {files})"


def list_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """List the DICOM series under a folder (searched recursively), largest first.

    Args:
        folder: a folder of DICOM files.

    Returns:
        One `DicomSeriesInfo` per SeriesInstanceUID, without PHI.

    Raises:
        ImageReadError: the folder does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(
            "not a folder", path=root, expected="a folder of DICOM files", hint="check the path"
        )
    infos: list[DicomSeriesInfo] = []
    for uid, slices in _scan_folder(root).series.items():
        try:
            first = whitelisted_dicom_meta(slices[0].dataset)
        except Exception as exc:
            raise _corrupt(slices[0].path, exc) from exc
        parts = [str(first.get("modality", "?")), f"{len(slices)} files"]
        parts.append(f"{first.get('rows', '?')}x{first.get('columns', '?')}")
        if "convolution_kernel" in first:
            parts.append(f"kernel {first['convolution_kernel']}")
        if "slice_thickness_mm" in first:
            parts.append(f"{first['slice_thickness_mm']:g} mm slices")
        infos.append(
            DicomSeriesInfo(
                key=_series_key(uid),
                modality=str(first.get("modality", "")),
                n_files=len(slices),
                rows=int(first.get("rows", 0)),
                columns=int(first.get("columns", 0)),
                description=", ".join(parts),
            )
        )
    return sorted(infos, key=lambda info: (-info.n_files, info.key))


def _choose_series(
    folder: Path,
    series: dict[str, list[_Slice]],
    *,
    expect_ct: bool,
    series_uid: str | None,
) -> tuple[str, str]:
    if series_uid is not None:
        wanted = series_uid.strip()
        matches = [uid for uid in series if wanted in (uid, _series_key(uid))]
        if not matches:
            raise ImageReadError(
                "the requested series is not in this folder",
                path=folder,
                expected=f"series {wanted}",
                found="series " + ", ".join(_summary(u, s) for u, s in series.items()),
                hint="pass one of the keys listed (see `list_dicom_series`)",
            )
        chosen = matches[0]
        reason = "requested"
    else:
        candidates = {
            uid: slices
            for uid, slices in series.items()
            if not expect_ct or str(slices[0].dataset.get("Modality", "")) == "CT"
        }
        if not candidates:
            modalities = sorted({str(s[0].dataset.get("Modality", "?")) for s in series.values()})
            raise UnsupportedModalityError(
                "no CT series in this DICOM input",
                path=folder,
                expected="CT",
                found="modality " + ", ".join(modalities),
                hint="lungcancer works on CT; pass expect_ct=False to read other modalities "
                "as unit-range intensities",
            )
        chosen = max(candidates, key=lambda uid: (len(candidates[uid]), _series_key(uid)))
        reason = "the CT series with the most slices" if expect_ct else "the largest series"
    others = [_summary(uid, s) for uid, s in series.items() if uid != chosen]
    if not others and series_uid is None:
        return chosen, f"only series {_summary(chosen, series[chosen])}"
    choice = f"chose {_summary(chosen, series[chosen])}, {reason}"
    if others:
        choice += "; skipped " + ", ".join(others)
        logger.info("DICOM %s: %s", folder.name, choice)
    return chosen, choice


def _check_decodable(dataset: Any, path: Path) -> None:
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise MissingDependencyError(
            "the pixel data is compressed and no decoder for it is installed",
            path=path,
            expected="an installed decoder for this transfer syntax",
            found=f"transfer syntax {syntax.name}",
            hint=_JPEG_EXTRA_HINT,
        )


def _check_rescale(ordered: list[SliceHeader], root: Path) -> None:
    missing = [header for header in ordered if header.rescale is None]
    if missing:
        names = ", ".join(relative_name(header, root) for header in missing[:5])
        raise ImageReadError(
            "CT slices without RescaleSlope/RescaleIntercept: Hounsfield units cannot be trusted",
            path=root,
            expected="RescaleSlope and RescaleIntercept on every CT slice",
            found=f"{len(missing)} of {len(ordered)} slices without them (e.g. {names})",
            hint="the stored values are scanner units, often offset by 1024 from HU; re-export "
            "the series with its rescale tags, or, if you know the values are already HU, "
            "convert it to NIfTI/NRRD and read that",
        )


def _unit_scale(pixels: np.ndarray, dataset: Any) -> np.ndarray:
    bits = int(dataset.get("BitsStored", 8 * pixels.dtype.itemsize))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    values = pixels.astype(np.float32)
    if int(dataset.get("SamplesPerPixel", 1)) > 1:
        values = values[..., :3] @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    offset = float(2 ** (bits - 1)) if signed else 0.0
    scaled = (values + offset) / float(2**bits - 1)
    if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def _decode_file(header: SliceHeader) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(header.dataset)
    except Exception as exc:
        raise ImageReadError(
            "the pixel data of this DICOM file cannot be decoded",
            path=header.path,
            expected="decodable pixel data",
            found=f"{type(exc).__name__}: {str(exc)[:200]}",
            hint="re-export the file; compressed data may need "
            + _JPEG_EXTRA_HINT.replace("install the decoders with: ", ""),
        ) from exc


def _decode_into(out: np.ndarray, ordered: list[SliceHeader], *, hounsfield: bool) -> None:
    # A multi-frame file is decoded once and its frames placed where they sort.
    decoded: dict[Path, np.ndarray] = {}
    frames_left = {header.path: 0 for header in ordered}
    for header in ordered:
        frames_left[header.path] += 1
    for index, header in enumerate(ordered):
        if header.frame < 0:
            pixels = _decode_file(header)
        else:
            if header.path not in decoded:
                decoded[header.path] = _decode_file(header)
            pixels = decoded[header.path][header.frame]
        if pixels.shape[:2] != out.shape[1:]:
            raise ImageReadError(
                "a slice differs in size from the rest of the series",
                path=header.path,
                expected=f"{out.shape[1]}x{out.shape[2]}",
                found=f"{pixels.shape[0]}x{pixels.shape[1]}",
                hint="remove the odd file from the folder",
            )
        if hounsfield:
            assert header.rescale is not None
            slope, intercept = header.rescale
            # Rescale in place in the output slice: no per-slice float temporaries.
            if slope == 1.0:
                out[index] = pixels
            else:
                np.multiply(pixels, np.float32(slope), out=out[index], casting="unsafe")
            if intercept != 0.0:
                out[index] += np.float32(intercept)
        else:
            out[index] = _unit_scale(pixels, header.dataset)
        frames_left[header.path] -= 1
        if frames_left[header.path] == 0:
            # Let the decoded pixels and the loaded pixel bytes go before the next file.
            decoded.pop(header.path, None)
            header.dataset = None


def _format_skips(skipped: list[tuple[str, str]]) -> str:
    listed = "; ".join(f"{name}: {reason}" for name, reason in skipped[:_MAX_LISTED_SKIPS])
    if len(skipped) > _MAX_LISTED_SKIPS:
        listed += f"; and {len(skipped) - _MAX_LISTED_SKIPS} more"
    return listed


def read_dicom(
    path: str | Path,
    *,
    expect_ct: bool = True,
    series_uid: str | None = None,
    allow_uneven: bool = False,
) -> Scan:
    """Read a DICOM file or a folder holding a DICOM series.

    A folder is searched recursively; files are grouped by SeriesInstanceUID and, unless
    `series_uid` picks one, the CT series with the most slices is read (the choice is logged
    and kept in `meta["series_choice"]`). Broken or foreign files next to a valid series are
    skipped, logged as a warning and listed in `meta["skipped_files"]`.

    Args:
        path: a DICOM file (read as one slice) or a folder.
        expect_ct: require CT and return Hounsfield units. With False, other modalities are
            read too, scaled to [0, 1] by their stored bit depth (intensity "unit").
        series_uid: the SeriesInstanceUID or its short key (`list_dicom_series`) to read.
        allow_uneven: accept unevenly spaced slices (recorded in `meta["uneven_spacing"]`).

    Returns:
        A de-identified `Scan`.

    Raises:
        ImageReadError: corrupt files, no readable series, missing rescale tags on CT,
            unevenly spaced or duplicate slices.
        UnsupportedModalityError: no CT where CT is expected.
        MissingDependencyError: compressed pixel data without an installed decoder.
    """
    root = Path(path)
    if root.is_dir():
        scanned = _scan_folder(root)
        if not scanned.series:
            raise ImageReadError(
                "no readable DICOM image in this folder",
                path=root,
                expected="DICOM image files (a series)",
                found=_format_skips(scanned.skipped) or "an empty folder",
                hint="point at the folder of one DICOM series, or fix the files listed",
            )
    else:
        scanned = _Scanned(series={"": [_parsed(root)]})
        uid = raw_dicom_text(scanned.series[""][0].dataset, "SeriesInstanceUID") or ""
        scanned.series = {uid: scanned.series[""]}
    chosen, choice = _choose_series(
        root, scanned.series, expect_ct=expect_ct, series_uid=series_uid
    )
    headers = [header for item in scanned.series[chosen] for header in item.headers]
    stack, stray = largest_stack(headers, root)
    skipped = [*scanned.skipped, *stray]
    first = stack[0].dataset
    modality = str(first.get("Modality", ""))
    if expect_ct and modality != "CT":
        raise UnsupportedModalityError(
            "this DICOM series is not CT",
            path=root,
            expected="CT",
            found=f"modality {modality or 'missing'}",
            hint="lungcancer works on CT; pass expect_ct=False to read it as unit-range "
            "intensities",
        )
    try:
        geometry = order_slices(stack, root, allow_uneven=allow_uneven)
    except ImageReadError as exc:
        if not skipped:
            raise
        # A gap is often the broken file that was skipped: say so next to the gap.
        raise ImageReadError(
            exc.message,
            path=exc.path,
            expected=exc.expected,
            found=f"{exc.found}; skipped files: {_format_skips(skipped)}",
            hint=exc.hint,
        ) from exc
    ordered = geometry.ordered
    hounsfield = modality == "CT"
    if hounsfield:
        _check_rescale(ordered, root)
    _check_decodable(first, ordered[0].path)
    try:
        meta: dict[str, MetaValue] = whitelisted_dicom_meta(first)
    except Exception as exc:
        raise _corrupt(ordered[0].path, exc) from exc
    if ordered[0].pixel_spacing_mm is not None:
        spacing_y, spacing_x = ordered[0].pixel_spacing_mm
    else:
        spacing_y, spacing_x = 1.0, 1.0
        meta["pixel_spacing_from"] = "PixelSpacing missing; 1 mm assumed"
        logger.warning("DICOM %s: PixelSpacing missing; 1 mm assumed", root.name)
    syntax = getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        meta["transfer_syntax"] = str(syntax.name)
    meta.update(geometry.meta)
    meta.update(
        {"series_key": _series_key(chosen), "series_choice": choice, "n_slices": len(ordered)}
    )
    if skipped:
        meta["skipped_files"] = _format_skips(skipped)
        meta["n_skipped_files"] = len(skipped)
        logger.warning(
            "DICOM %s: %d file(s) skipped: %s", root.name, len(skipped), meta["skipped_files"]
        )
    hu_volume = np.empty((len(ordered), ordered[0].rows, ordered[0].columns), dtype=np.float32)
    _decode_into(hu_volume, ordered, hounsfield=hounsfield)
    origin, direction = geometry.origin_xyz_mm, geometry.direction
    return Scan(
        array=hu_volume,
        spacing_mm=(geometry.z_spacing_mm, spacing_y, spacing_x),
        origin_xyz_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction_xyz=tuple(float(v) for v in direction.reshape(-1)),
        modality=modality or "OT",
        intensity="HU" if hounsfield else "unit",
        meta=meta,
        source=str(root),
    )
