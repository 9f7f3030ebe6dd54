"""DICOM segmentations as lesion masks: RT Structure Sets (RTSTRUCT) and Segmentation objects (SEG).

Public lung CT collections ship their tumour outlines this way (NSCLC-Radiomics has both), so
`read_mask` accepts them beside NIfTI and NRRD. Either is laid onto the voxel grid of the image
it belongs to, through world coordinates, never by trusting file order:

- RTSTRUCT: each closed planar contour of the chosen ROI is a polygon in patient mm. Its
  points go to voxel coordinates through the image's geometry; the voxels whose centres fall
  inside are set. Several contours on one slice combine even-odd, so an inner contour is a
  hole (the usual reading of nested contours). A contour that encloses no voxel centre (a lesion
  smaller than a voxel) sets its nearest voxel rather than vanish.
- SEG: each frame of the chosen segment carries its own plane position; it must lie on one
  of the image's slices with the image's in-plane grid (same rows, columns, spacing and
  orientation; SEG objects are made on their source series' grid). FRACTIONAL segments count
  a voxel inside from half the maximum value.

One structure set usually holds several ROIs (GTV, lungs, heart, cord). The lesion is the only
ROI, or the only one whose name reads as a tumour (GTV, tumour, lesion, nodule, mass);
otherwise the caller names it, `RS.dcm#GTV-1` (a name or a number), and an unclear choice is
an error that lists the names, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.errors import GeometryMismatchError, ImageReadError, RoiChoiceError
from lungcancer.io.record import Scan

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# Names that read as the tumour when a caller names no ROI (matched case-insensitively).
_LESION_NAME = re.compile(r"gtv|tumou?r|lesion|nodule|mass|neoplasm", re.IGNORECASE)
# A contour or frame lies on a slice when its plane is this close to it, in slice spacings.
_PLANE_TOLERANCE = 0.3
# In-plane positions and directions must agree this well (voxels; cosines).
_GRID_TOLERANCE = 0.05


@dataclass(frozen=True)
class _Region:
    """One ROI (RTSTRUCT) or segment (SEG) a file holds."""

    number: int
    name: str


def mask_reference(reference: str | Path) -> tuple[Path, str | None]:
    """Split `file#ROI` into the file and the ROI named after '#'.

    A path that exists as written is a file even if its name holds '#'.
    """
    path = Path(reference)
    if path.exists() or "#" not in path.name:
        return path, None
    file_part, _, roi = str(reference).rpartition("#")
    return Path(file_part), (roi or None)


def dicom_mask_kind(dataset: Any) -> str | None:
    """'rtstruct' or 'seg' for a DICOM segmentation, None for anything else."""
    sop_class = str(getattr(dataset, "SOPClassUID", ""))
    modality = str(getattr(dataset, "Modality", "")).upper()
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    if sop_class == SEG_SOP_CLASS or modality == "SEG":
        return "seg"
    return None


@dataclass(frozen=True)
class RegionInfo:
    """One ROI or segment of a DICOM segmentation, as `list_regions` reports it.

    Attributes:
        number: ROINumber or SegmentNumber (what `file#N` names).
        name: ROIName or SegmentLabel.
        parts: closed contours (RTSTRUCT) or frames (SEG) it holds.
        taken_by_default: True for the ROI `read_mask` takes when none is named.
    """

    number: int
    name: str
    parts: int
    taken_by_default: bool


def list_regions(dataset: Any) -> list[RegionInfo]:
    """The ROIs or segments of a parsed DICOM segmentation (empty for anything else)."""
    kind = dicom_mask_kind(dataset)
    if kind == "rtstruct":
        regions = _rtstruct_regions(dataset)
        counts = {
            int(item.ReferencedROINumber): len(getattr(item, "ContourSequence", []))
            for item in getattr(dataset, "ROIContourSequence", [])
        }
    elif kind == "seg":
        regions = _seg_regions(dataset)
        segments = [n for _, n in _frame_segments(dataset) if n is not None]
        counts = {number: segments.count(number) for number in set(segments)}
    else:
        return []
    default = _default_region(regions)
    return [RegionInfo(r.number, r.name, counts.get(r.number, 0), r == default) for r in regions]


def read_dicom_mask(path: Path, dataset: Any, like: Scan, roi: str | None) -> np.ndarray:
    """The chosen ROI or segment of a DICOM segmentation, on `like`'s voxel grid.

    Args:
        path: the file (for messages).
        dataset: its parsed `pydicom.Dataset` (pixel data included for SEG).
        like: the image the mask belongs to.
        roi: the ROI or segment to take, by name or number; None picks the lesion when the
            choice is clear.

    Returns:
        A boolean z-y-x array of `like.shape`.

    Raises:
        ImageReadError: not a segmentation, no such ROI, an unclear choice, contours that are
            not closed planar polygons, or nothing of the ROI on this image.
        GeometryMismatchError: the segmentation does not lie on the image's grid.
    """
    kind = dicom_mask_kind(dataset)
    if kind == "rtstruct":
        regions = _rtstruct_regions(dataset)
        chosen = _choose(regions, roi, path, "ROI")
        return _rtstruct_mask(dataset, chosen, like, path)
    if kind == "seg":
        regions = _seg_regions(dataset)
        chosen = _choose(regions, roi, path, "segment")
        return _seg_mask(dataset, chosen, like, path)
    raise ImageReadError(
        "this DICOM file is not a segmentation",
        path=path,
        expected="an RT Structure Set (RTSTRUCT) or a Segmentation (SEG)",
        found=f"Modality {getattr(dataset, 'Modality', '?')}",
        hint="a DICOM image cannot be a mask; pass the structure set or SEG file",
    )


def _choose(regions: list[_Region], roi: str | None, path: Path, noun: str) -> _Region:
    listed = ", ".join(f"{r.number}: {r.name!r}" for r in regions[:20])
    if len(regions) > 20:
        listed += f", and {len(regions) - 20} more"
    if not regions:
        raise ImageReadError(
            f"this segmentation holds no {noun}",
            path=path,
            expected=f"at least one {noun}",
            found="none",
            hint="export the lesion outline again",
        )
    if roi is not None:
        wanted = roi.strip()
        by_name = [r for r in regions if r.name.strip().lower() == wanted.lower()]
        by_number = [r for r in regions if wanted.isdigit() and r.number == int(wanted)]
        matches = by_name or by_number
        if len(matches) == 1:
            return matches[0]
        raise RoiChoiceError(
            f"no single {noun} named {wanted!r} in this segmentation"
            if not matches
            else f"several {noun}s are named {wanted!r}",
            path=path,
            expected=f"one {noun} by name or number",
            found=listed,
            hint=f"name it after '#', by number if names repeat: {path.name}#{regions[0].number}",
        )
    default = _default_region(regions)
    if default is not None:
        return default
    raise RoiChoiceError(
        f"this segmentation holds {len(regions)} {noun}s and which is the lesion is unclear",
        path=path,
        expected=f"one {noun}, or exactly one named like a tumour (GTV, tumour, lesion, nodule)",
        found=listed,
        hint=f"name the lesion's {noun} after '#', e.g. {path.name}#{regions[0].name}",
    )


def _default_region(regions: list[_Region]) -> _Region | None:
    """The only region, or the only one named like a tumour; None when that is unclear."""
    if len(regions) == 1:
        return regions[0]
    lesions = [r for r in regions if _LESION_NAME.search(r.name)]
    return lesions[0] if len(lesions) == 1 else None


def _rtstruct_regions(dataset: Any) -> list[_Region]:
    return [
        _Region(int(item.ROINumber), str(getattr(item, "ROIName", "")))
        for item in getattr(dataset, "StructureSetROISequence", [])
    ]


def _slice_of(z_values: np.ndarray, like: Scan, path: Path, what: str) -> int | None:
    """The slice a planar item lies on; None when it lies beyond the image's slices."""
    if np.ptp(z_values) > 2 * _PLANE_TOLERANCE:
        raise GeometryMismatchError(
            f"{what} does not lie in one of the image's slice planes",
            path=path,
            expected="contours drawn on the image's own slices (axial for an axial series)",
            found=f"voxel z from {z_values.min():.2f} to {z_values.max():.2f} within one contour",
            hint="pair the segmentation with the series it was drawn on",
        )
    z = float(z_values.mean())
    last = like.shape[0] - 1
    if like.shape[0] == 1:
        # A lone slice's z spacing is its thickness, not the series' spacing: a neighbour's
        # plane can sit half a "voxel" away. Only its own plane is on it.
        return 0 if abs(z) <= _PLANE_TOLERANCE else None
    if z < -_PLANE_TOLERANCE or z > last + _PLANE_TOLERANCE:
        return None
    index = round(z)
    if abs(z - index) > _PLANE_TOLERANCE:
        raise GeometryMismatchError(
            f"{what} lies between the image's slices",
            path=path,
            expected="a plane on one of the image's slices",
            found=f"voxel z {z:.2f}",
            hint="pair the segmentation with the series it was drawn on (same slice positions)",
        )
    return index


def _rtstruct_mask(dataset: Any, chosen: _Region, like: Scan, path: Path) -> np.ndarray:
    from skimage.draw import polygon

    contours: list[Any] = []
    for item in getattr(dataset, "ROIContourSequence", []):
        if int(item.ReferencedROINumber) == chosen.number:
            contours.extend(getattr(item, "ContourSequence", []))
    what = f"ROI {chosen.name!r}"
    if not contours:
        raise ImageReadError(
            f"{what} has no contours",
            path=path,
            expected="closed planar contours outlining the lesion",
            found="an empty ROI",
            hint="choose another ROI after '#', or export the outline again",
        )
    mask = np.zeros(like.shape, dtype=bool)
    _, rows, columns = like.shape
    off_image = 0
    for number, contour in enumerate(contours, start=1):
        kind = str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")).upper()
        points = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
        if points.size % 3:
            raise ImageReadError(
                f"contour {number} of {what} is malformed",
                path=path,
                expected="ContourData as x, y, z triples",
                found=f"{points.size} numbers",
            )
        zyx = like.world_to_voxels(points.reshape(-1, 3))
        if kind not in ("CLOSED_PLANAR", "POINT"):
            raise ImageReadError(
                f"contour {number} of {what} is not a closed outline",
                path=path,
                expected="CLOSED_PLANAR contours (or POINT)",
                found=kind,
                hint="an open contour encloses no region; export the lesion as a closed outline",
            )
        index = _slice_of(zyx[:, 0], like, path, f"contour {number} of {what}")
        if index is None:
            off_image += 1
            continue
        y, x = zyx[:, 1], zyx[:, 2]
        edge = 0.5 + _GRID_TOLERANCE  # an outline may run along the image's border
        if (
            y.min() < -edge
            or x.min() < -edge
            or y.max() > rows - 1 + edge
            or x.max() > columns - 1 + edge
        ):
            raise GeometryMismatchError(
                f"contour {number} of {what} reaches outside the image",
                path=path,
                expected=f"points within the image's {rows} x {columns} voxels",
                found=f"rows {y.min():.1f} to {y.max():.1f}, "
                f"columns {x.min():.1f} to {x.max():.1f}",
                hint="pair the segmentation with the series it was drawn on",
            )
        plane = np.zeros((rows, columns), dtype=bool)
        if kind == "CLOSED_PLANAR" and len(y) >= 3:
            rr, cc = polygon(y, x, shape=(rows, columns))
            plane[rr, cc] = True
        if not plane.any():
            # Smaller than a voxel: keep the voxel nearest its centre, not nothing.
            plane[round(float(y.mean())), round(float(x.mean()))] = True
        mask[index] ^= plane
    if not mask.any():
        raise ImageReadError(
            f"{what} has no contour on this image",
            path=path,
            expected=f"contours on the image's {like.shape[0]} slice(s)",
            found=f"{off_image} contour(s), all on other slices",
            hint="pair the structure set with the slice or series it outlines",
        )
    return mask


def _seg_regions(dataset: Any) -> list[_Region]:
    return [
        _Region(int(item.SegmentNumber), str(getattr(item, "SegmentLabel", "")))
        for item in getattr(dataset, "SegmentSequence", [])
    ]


def _group_value(dataset: Any, frame: Any, sequence: str, keyword: str) -> Any:
    """A functional-group value from the frame's own group, else the shared one."""
    for groups in (frame, _first(dataset, "SharedFunctionalGroupsSequence")):
        item = _first(groups, sequence) if groups is not None else None
        if item is not None and keyword in item:
            return item[keyword].value
    return None


def _frame_segments(dataset: Any) -> list[tuple[Any, int | None]]:
    """Each frame's functional group with the segment it belongs to (None if unnamed)."""
    result = []
    for frame in getattr(dataset, "PerFrameFunctionalGroupsSequence", []):
        number = _group_value(
            dataset, frame, "SegmentIdentificationSequence", "ReferencedSegmentNumber"
        )
        result.append((frame, None if number is None else int(number)))
    return result


def _first(dataset: Any, keyword: str) -> Any:
    sequence = getattr(dataset, keyword, None)
    return sequence[0] if sequence else None


def _seg_mask(dataset: Any, chosen: _Region, like: Scan, path: Path) -> np.ndarray:
    what = f"segment {chosen.name!r}"
    try:
        frames = np.asarray(dataset.pixel_array)
    except Exception as exc:
        raise ImageReadError(
            "the segmentation's pixel data cannot be decoded",
            path=path,
            expected="a readable DICOM SEG",
            found=f"{type(exc).__name__}: {exc}",
            hint="re-export the segmentation (uncompressed)",
        ) from exc
    if frames.ndim == 2:
        frames = frames[None]
    fractional = str(getattr(dataset, "SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    cut = 0.5 * float(getattr(dataset, "MaximumFractionalValue", 255)) if fractional else 0.5
    problems = _seg_grid_problems(dataset, frames.shape[1:], like)
    if problems:
        raise GeometryMismatchError(
            "the segmentation is not on the image's in-plane grid",
            path=path,
            expected="a SEG made on this image's series (same rows, columns, spacing and "
            "orientation)",
            found="; ".join(problems),
            hint="pair the SEG with the series it was made on, or resample it to NIfTI/NRRD",
        )
    mask = np.zeros(like.shape, dtype=bool)
    on_image = 0
    for number, (frame, segment) in enumerate(_frame_segments(dataset)):
        if segment != chosen.number:
            continue
        position = _group_value(dataset, frame, "PlanePositionSequence", "ImagePositionPatient")
        if position is None:
            raise ImageReadError(
                f"frame {number + 1} of the segmentation has no position",
                path=path,
                expected="ImagePositionPatient in each frame's PlanePositionSequence",
                found="none",
            )
        zyx = like.world_to_voxels(np.asarray([[float(v) for v in position]]))[0]
        if abs(zyx[1]) > _GRID_TOLERANCE or abs(zyx[2]) > _GRID_TOLERANCE:
            raise GeometryMismatchError(
                f"frame {number + 1} of {what} is shifted in-plane against the image",
                path=path,
                expected="frames whose first pixel is the image's first pixel",
                found=f"offset of {zyx[1]:.2f} rows, {zyx[2]:.2f} columns",
                hint="pair the SEG with the series it was made on",
            )
        index = _slice_of(np.asarray([zyx[0]]), like, path, f"frame {number + 1} of {what}")
        if index is None:
            continue
        on_image += 1
        mask[index] |= frames[number] >= cut
    if on_image == 0:
        raise ImageReadError(
            f"{what} has no frame on this image",
            path=path,
            expected=f"frames on the image's {like.shape[0]} slice(s)",
            found="none of its frames lies on them",
            hint="pair the SEG with the slice or series it was made on",
        )
    return mask


def _seg_grid_problems(dataset: Any, frame_shape: tuple[int, ...], like: Scan) -> list[str]:
    _, rows, columns = like.shape
    problems = []
    if tuple(frame_shape) != (rows, columns):
        problems.append(f"frames {frame_shape[0]} x {frame_shape[1]}, image {rows} x {columns}")
    spacing = _group_value(dataset, None, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is not None:
        found = (float(spacing[0]), float(spacing[1]))
        if not np.allclose(found, like.spacing_mm[1:], rtol=1e-3, atol=1e-3):
            problems.append(f"pixel spacing {found} mm, image {like.spacing_mm[1:]} mm")
    orientation = _group_value(dataset, None, "PlaneOrientationSequence", "ImageOrientationPatient")
    if orientation is not None:
        direction = np.asarray(like.direction_xyz, dtype=np.float64).reshape(3, 3)
        image_rows_cols = np.concatenate([direction[:, 0], direction[:, 1]])
        found_cosines = np.asarray([float(v) for v in orientation])
        if not np.allclose(found_cosines, image_rows_cols, atol=_GRID_TOLERANCE):
            problems.append(
                f"orientation {np.round(found_cosines, 3).tolist()}, image "
                f"{np.round(image_rows_cols, 3).tolist()}"
            )
    return problems
