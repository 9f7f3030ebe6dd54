"""Where each DICOM slice lies: per-slice (or per-frame) geometry, ordering and spacing.

Classic CT stores one slice per file with its geometry at the top level; enhanced CT stores
all frames in one file with the geometry in functional groups (per frame, else shared). Both
become `SliceHeader`s here, so ordering and spacing checks do not care where a slice came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungcancer.errors import ImageReadError
from lungcancer.io.record import MetaValue

logger = logging.getLogger("lungcancer.io.dicom")

# Gaps between neighbouring slices may differ from the median gap by this fraction before the
# series counts as unevenly spaced (a missing slice doubles one gap).
UNEVEN_GAP_TOLERANCE = 0.10
# Two slices closer than this (mm) along the normal sit at the same position.
_SAME_POSITION_MM = 1e-3


@dataclass
class SliceHeader:
    """The geometry and rescale of one slice: a single-frame file or one frame of a file.

    Attributes:
        path: the file.
        frame: frame index within a multi-frame file, -1 for a single-frame file.
        dataset: the file's pydicom dataset (shared by the frames of one file).
        rows: image rows.
        columns: image columns.
        position: ImagePositionPatient (x, y, z) in mm, or None.
        orientation: ImageOrientationPatient (row then column direction), or None.
        pixel_spacing_mm: (row spacing, column spacing) = (y, x), or None.
        rescale: (slope, intercept), or None when the tags are missing.
        instance_number: InstanceNumber, or None.
        thickness_mm: SpacingBetweenSlices or SliceThickness with the name it came from.
    """

    path: Path
    frame: int
    dataset: Any
    rows: int
    columns: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing_mm: tuple[float, float] | None
    rescale: tuple[float, float] | None
    instance_number: int | None
    thickness_mm: tuple[float, str] | None


def _floats(value: Any, count: int) -> np.ndarray | None:
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return np.asarray(numbers, dtype=np.float64) if len(numbers) == count else None


def _in_groups(groups: list[Any], sequence: str, keyword: str) -> Any:
    # Enhanced DICOM: a frame's own functional group wins over the shared one.
    for group in groups:
        if group is None or sequence not in group:
            continue
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _thickness(dataset: Any, groups: list[Any]) -> tuple[float, str] | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _positive(dataset.get(keyword))
        if value is None:
            value = _positive(_in_groups(groups, "PixelMeasuresSequence", keyword))
        if value is not None:
            return value, keyword
    return None


def _rescale(slope: Any, intercept: Any) -> tuple[float, float] | None:
    if slope is None or intercept is None:
        return None
    try:
        return float(slope), float(intercept)
    except (TypeError, ValueError):
        return None


def slice_headers(path: Path, dataset: Any) -> list[SliceHeader]:
    """The slices one DICOM file holds, with their geometry.

    Args:
        path: the file.
        dataset: its parsed header.

    Returns:
        One header for a classic file, one per frame for a multi-frame (enhanced) file.
    """
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    number = dataset.get("InstanceNumber")
    instance = int(number) if number is not None and str(number).strip() else None
    n_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    shared_items = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_items[0] if shared_items else None
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    headers: list[SliceHeader] = []
    for frame in range(n_frames):
        own = per_frame[frame] if frame < len(per_frame) else None
        groups = [own, shared]
        position = dataset.get("ImagePositionPatient")
        if position is None:
            position = _in_groups(groups, "PlanePositionSequence", "ImagePositionPatient")
        orientation = dataset.get("ImageOrientationPatient")
        if orientation is None:
            orientation = _in_groups(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = dataset.get("PixelSpacing")
        if spacing is None:
            spacing = _in_groups(groups, "PixelMeasuresSequence", "PixelSpacing")
        spacing_pair = _floats(spacing, 2) if spacing is not None else None
        rescale = _rescale(dataset.get("RescaleSlope"), dataset.get("RescaleIntercept"))
        if rescale is None:
            rescale = _rescale(
                _in_groups(groups, "PixelValueTransformationSequence", "RescaleSlope"),
                _in_groups(groups, "PixelValueTransformationSequence", "RescaleIntercept"),
            )
        headers.append(
            SliceHeader(
                path=path,
                frame=frame if n_frames > 1 else -1,
                dataset=dataset,
                rows=rows,
                columns=columns,
                position=_floats(position, 3) if position is not None else None,
                orientation=_floats(orientation, 6) if orientation is not None else None,
                pixel_spacing_mm=None
                if spacing_pair is None
                else (float(spacing_pair[0]), float(spacing_pair[1])),
                rescale=rescale,
                instance_number=instance,
                thickness_mm=_thickness(dataset, groups),
            )
        )
    return headers


def relative_name(header: SliceHeader, root: Path) -> str:
    """The file's path relative to the folder read (with the frame for multi-frame files)."""
    try:
        name = str(header.path.relative_to(root))
    except ValueError:
        name = header.path.name
    return name if header.frame < 0 else f"{name} frame {header.frame}"


def _stack_key(header: SliceHeader) -> tuple[int, int, tuple[float, ...] | None]:
    rounded = None if header.orientation is None else tuple(np.round(header.orientation, 3))
    return header.rows, header.columns, rounded


def largest_stack(
    headers: list[SliceHeader], root: Path
) -> tuple[list[SliceHeader], list[tuple[str, str]]]:
    """The biggest group of slices sharing size and orientation, and the others as skips.

    Localizers and reformats sometimes share a SeriesInstanceUID with the axial stack; they
    differ in size or orientation, so the biggest consistent stack is the series proper.

    Args:
        headers: the slices of one series.
        root: the folder read, for names in the skip list.

    Returns:
        The main stack and (name, reason) for every slice set aside.
    """
    groups: dict[tuple[int, int, tuple[float, ...] | None], list[SliceHeader]] = {}
    for header in headers:
        groups.setdefault(_stack_key(header), []).append(header)
    main_key = max(groups, key=lambda k: len(groups[k]))
    skipped = [
        (relative_name(header, root), "size or orientation differs from the series")
        for key, members in groups.items()
        if key != main_key
        for header in members
    ]
    return groups[main_key], skipped


@dataclass(frozen=True)
class StackGeometry:
    """Slices in order along the slice normal, with the volume's geometry.

    Attributes:
        ordered: the slices, first to last.
        z_spacing_mm: distance between slices.
        origin_xyz_mm: position of the first slice's first voxel.
        direction: 3x3 matrix whose columns are the row, column and slice directions.
        meta: how ordering and spacing were decided (for `Scan.meta`).
    """

    ordered: list[SliceHeader]
    z_spacing_mm: float
    origin_xyz_mm: np.ndarray
    direction: np.ndarray
    meta: dict[str, MetaValue]


def _fallback_z(header: SliceHeader) -> tuple[float, str]:
    if header.thickness_mm is not None:
        return header.thickness_mm
    return 1.0, "none in file; 1 mm assumed"


def order_slices(headers: list[SliceHeader], root: Path, *, allow_uneven: bool) -> StackGeometry:
    """Sort slices along the normal and derive z spacing, origin and direction.

    Slices are sorted by ImagePositionPatient projected on the normal of
    ImageOrientationPatient; z spacing is the median gap between those positions. Without
    positions, InstanceNumber orders them and SpacingBetweenSlices/SliceThickness gives z.

    Args:
        headers: one stack (same size and orientation).
        root: the file or folder read, named in errors.
        allow_uneven: accept gaps that differ from the median by more than 10%.

    Returns:
        The ordered stack and its geometry.

    Raises:
        ImageReadError: slices that cannot be ordered, share a position, or (unless allowed)
            are unevenly spaced.
    """
    meta: dict[str, MetaValue] = {}
    first = headers[0]
    if first.orientation is not None:
        row_dir, col_dir = first.orientation[:3], first.orientation[3:]
        normal = np.cross(row_dir, col_dir)
        direction = np.stack([row_dir, col_dir, normal], axis=1)
    else:
        normal = np.asarray([0.0, 0.0, 1.0])
        direction = np.eye(3)
        meta["direction_from"] = "ImageOrientationPatient missing; identity assumed"
    if len(headers) == 1:
        z_mm, z_from = _fallback_z(first)
        meta["z_spacing_from"] = z_from
        origin = first.position if first.position is not None else np.zeros(3)
        return StackGeometry(headers, z_mm, origin, direction, meta)
    known = [h.position for h in headers if h.position is not None]
    if first.orientation is not None and len(known) == len(headers):
        stacked = np.stack(known)
        along = stacked @ normal
        order = np.argsort(along, kind="stable")
        ordered = [headers[i] for i in order]
        along = along[order]
        gaps = np.diff(along)
        _check_gaps(gaps, along, ordered, root, allow_uneven=allow_uneven, meta=meta)
        meta["slice_order"] = "ImagePositionPatient"
        meta["z_spacing_from"] = "slice positions (median gap)"
        return StackGeometry(ordered, float(np.median(gaps)), stacked[order[0]], direction, meta)
    if any(h.instance_number is None for h in headers if h.frame < 0):
        raise ImageReadError(
            "the slices of this series cannot be ordered",
            path=root,
            expected="ImagePositionPatient/ImageOrientationPatient, or InstanceNumber",
            found="neither on every slice",
            hint="re-export the series with its geometry tags",
        )
    ordered = sorted(headers, key=lambda h: (h.instance_number or 0, h.frame))
    z_mm, z_from = _fallback_z(first)
    meta["slice_order"] = "InstanceNumber (ImagePositionPatient missing)"
    meta["z_spacing_from"] = f"{z_from} (no slice positions)"
    logger.warning("DICOM %s: slice positions missing; ordered by InstanceNumber", root.name)
    start = ordered[0].position
    return StackGeometry(
        ordered, z_mm, start if start is not None else np.zeros(3), direction, meta
    )


def _check_gaps(
    gaps: np.ndarray,
    along: np.ndarray,
    ordered: list[SliceHeader],
    root: Path,
    *,
    allow_uneven: bool,
    meta: dict[str, MetaValue],
) -> None:
    smallest = int(np.argmin(gaps))
    if gaps[smallest] < _SAME_POSITION_MM:
        raise ImageReadError(
            "two slices of the series lie at the same position",
            path=root,
            expected="one slice per position",
            found=f"{relative_name(ordered[smallest], root)} and "
            f"{relative_name(ordered[smallest + 1], root)} at {along[smallest]:.2f} mm",
            hint="the series mixes acquisitions or phases; split them into separate folders",
        )
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median) / median
    worst = int(np.argmax(deviation))
    if deviation[worst] <= UNEVEN_GAP_TOLERANCE:
        return
    where = (
        f"gap of {gaps[worst]:.3g} mm between slices {worst} and {worst + 1} "
        f"({relative_name(ordered[worst], root)} at {along[worst]:.2f} mm, "
        f"{relative_name(ordered[worst + 1], root)} at {along[worst + 1]:.2f} mm); "
        f"median gap {median:.3g} mm"
    )
    if not allow_uneven:
        raise ImageReadError(
            "the slices are unevenly spaced (a slice is probably missing)",
            path=root,
            expected=f"gaps within {UNEVEN_GAP_TOLERANCE:.0%} of the median gap",
            found=where,
            hint="re-export the complete series; or accept it with allow_uneven=True "
            "(CLI --allow-uneven): z spacing is then the median gap and distances along z "
            "near the gap are off",
        )
    meta["uneven_spacing"] = f"{gaps.min():.3g}-{gaps.max():.3g} mm; worst {where}"
    logger.warning("DICOM %s: unevenly spaced slices accepted: %s", root.name, where)
