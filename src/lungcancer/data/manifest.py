"""CSV layouts: the toolkit's manifest (LungSim writes one) and LUNA16-style annotations.

A manifest row is one image: `path` and `label` are required, `patient_id`, `mask_path`,
`split` and `time_point` optional, any other column is kept in `Sample.extra`. Paths are
relative to the manifest's folder (absolute paths work too). Lesion centres come from
`lesion_center_z/y/x` (voxels; empty cells: no lesion, the whole image is the sample). Without
those columns, a row with a mask becomes one sample per lesion (connected component of the
mask), or stays one whole-image sample when the mask is empty.

A LUNA16 annotations CSV (seriesuid, coordX, coordY, coordZ in world mm, diameter_mm) points at
`<seriesuid>.mhd` volumes anywhere under its folder; each row becomes a lesion-centred sample.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lungcancer.data.index import MANIFEST_COLUMNS, Sample
from lungcancer.data.measure import measure_lesions
from lungcancer.errors import DatasetError, LungCancerError
from lungcancer.io import Scan, mask_reference, patient_key, read_image, read_mask
from lungcancer.staging import lung_rads_size_band

SPLIT_NAMES = ("train", "val", "test")
# Folder names and manifest values accepted for each split.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ")
_CENTRE_COLUMNS = ("lesion_center_z", "lesion_center_y", "lesion_center_x")
# Mask components smaller than this are speckle, not lesions.
MIN_LESION_VOXELS = 3
_MAX_LISTED = 10


@dataclass
class LayoutRead:
    """What a layout reader found: samples, the problems it skipped, and whether ids exist."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    has_patient_ids: bool = False


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = []
            for row in reader:
                # DictReader files the cells beyond the header under the key None.
                if None in row:
                    raise DatasetError(
                        f"line {reader.line_num} has more cells than the header has columns",
                        path=path,
                        expected=f"at most {len(reader.fieldnames or [])} cells",
                        found=f"{len(row) - 1 + len(row[None])} cells",
                        hint="quote cells that contain commas, or name the extra columns",
                    )
                rows.append(dict(row))
            header = [name.strip() for name in (reader.fieldnames or [])]
    except FileNotFoundError as exc:
        raise DatasetError("CSV file not found", path=path, hint="check the path") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(
            "the file is not a readable CSV table",
            path=path,
            expected="UTF-8 comma-separated text with a header row",
            found=str(exc),
        ) from exc
    cleaned = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
    return header, cleaned


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV file (empty when it is not readable as CSV)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [name.strip() for name in first]


def _require_columns(path: Path, header: list[str], required: tuple[str, ...], kind: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"the {kind} CSV lacks required column(s) {', '.join(missing)}",
            path=path,
            expected=f"columns {', '.join(required)}",
            found=f"columns {', '.join(header) if header else '(none: empty file)'}",
            hint="rename the columns in the header row, or pick another --layout",
        )


def lesion_samples(
    base: Sample, *, where: str, keep_without_lesion: bool = False
) -> tuple[list[Sample], str | None]:
    """One sample per lesion of `base.mask_path` (largest component only for 2D images).

    Args:
        base: the image's sample, with `mask_path` set.
        where: how to name the case in a problem message.
        keep_without_lesion: an empty mask keeps `base` as a whole-image sample (a manifest
            row is a sample even without a lesion) instead of skipping it.

    Returns:
        The lesion samples (slice at the lesion centre, centre in voxels, diameter in extra),
        or no samples and the reason the case was skipped.
    """
    try:
        scan = read_image(base.path)
        mask = read_mask(base.mask_path, like=scan)
        if keep_without_lesion and int(mask.sum()) < MIN_LESION_VOXELS:
            return [base], None
        lesions = measure_lesions(
            mask, scan.spacing_mm, min_voxels=MIN_LESION_VOXELS, source=base.mask_path
        )
    except LungCancerError as exc:
        return [], f"{where}: skipped: {exc.message}" + (f" ({exc.found})" if exc.found else "")
    if not scan.is_volume:
        lesions = lesions[:1]
    samples = []
    patient = base.patient_id or str(scan.meta.get("patient_key", ""))
    for lesion in lesions:
        samples.append(
            replace(
                base,
                patient_id=patient,
                slice_index=round(lesion.center_zyx[0]),
                center_zyx=lesion.center_zyx,
                extra={**base.extra, "diameter_mm": f"{lesion.diameter_mm:.1f}"},
            )
        )
    return samples, None


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _float(value: str, column: str, row_number: int, path: Path) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    # nan and inf parse as floats but break every index and distance computed from them.
    if math.isfinite(number):
        return number
    raise DatasetError(
        f"row {row_number}: column '{column}' is not a number",
        path=path,
        expected="a finite number",
        found=repr(value),
        hint="fix the value or leave the cell empty",
    )


def _split_value(value: str, row_number: int, path: Path) -> str:
    if not value:
        return ""
    split = SPLIT_ALIASES.get(value.lower())
    if split is None:
        raise DatasetError(
            f"row {row_number}: unknown split '{value}'",
            path=path,
            expected="train, val (valid, validation), test, or empty",
            found=value,
        )
    return split


def read_manifest(path: str | Path) -> LayoutRead:
    """Read a manifest CSV into samples (see the module docstring for its columns).

    Raises:
        DatasetError: missing columns, empty labels, bad numbers or splits, or paths that do
            not exist (all missing paths are listed).
    """
    csv_path = Path(path)
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, ("path", "label"), "manifest")
    folder = csv_path.parent
    missing: list[str] = []
    result = LayoutRead()
    pending: list[tuple[int, Sample]] = []
    for number, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DatasetError(
                f"row {number} has an empty path or label",
                path=csv_path,
                expected="a path and a label on every row",
                found=f"path={row.get('path', '')!r}, label={row.get('label', '')!r}",
                hint="fill in the cell or delete the row",
            )
        image = _resolve(folder, row["path"])
        mask = _resolve(folder, row["mask_path"]) if row.get("mask_path") else None
        # A DICOM segmentation's mask path may name its ROI after '#' (`RS.dcm#GTV-1`).
        for needed in (image, None if mask is None else mask_reference(mask)[0]):
            if needed is not None and not needed.exists():
                missing.append(f"row {number}: {needed}")
        extra = {k: v for k, v in row.items() if k not in MANIFEST_COLUMNS and k}
        centre = None
        if all(extra.get(c) for c in _CENTRE_COLUMNS):
            centre = tuple(_float(extra[c], c, number, csv_path) for c in _CENTRE_COLUMNS)
        slice_index = -1
        if extra.get("slice_index"):
            slice_index = int(_float(extra["slice_index"], "slice_index", number, csv_path))
        elif centre is not None:
            slice_index = round(centre[0])
        raw_patient = row.get("patient_id", "")
        sample = Sample(
            path=str(image),
            label=row["label"],
            patient_id=patient_key(raw_patient) if raw_patient else "",
            mask_path=str(mask) if mask is not None else "",
            split=_split_value(row.get("split", ""), number, csv_path),
            time_point=_float(row["time_point"], "time_point", number, csv_path)
            if row.get("time_point")
            else 0.0,
            slice_index=slice_index,
            center_zyx=(centre[0], centre[1], centre[2]) if centre is not None else None,
            extra=extra,
        )
        pending.append((number, sample))
    if missing:
        raise DatasetError(
            f"{len(missing)} path(s) in the manifest do not exist",
            path=csv_path,
            expected="every path and mask_path relative to the manifest's folder, or absolute",
            found=_listed(missing),
            hint="fix the paths, or move the manifest next to the data it lists",
        )
    # With centre columns the manifest already says where lesions are (empty: none), so masks
    # are read only when those columns are absent.
    find_lesions = not all(c in header for c in _CENTRE_COLUMNS)
    for number, sample in pending:
        if find_lesions and sample.mask_path and sample.slice_index < 0:
            lesions, problem = lesion_samples(
                sample, where=f"row {number}", keep_without_lesion=True
            )
            result.samples.extend(lesions)
            if problem:
                result.problems.append(problem)
        else:
            result.samples.append(sample)
    result.has_patient_ids = bool(rows) and all(r.get("patient_id") for r in rows)
    return result


def _volume_geometry(path: Path) -> Scan:
    """A Scan that carries only `path`'s geometry: read from the header, no voxels decoded."""
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK user knows)

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DatasetError(
            "the volume header cannot be read",
            path=path,
            expected="a MetaImage (.mhd) header with its .raw file",
            found=str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "error",
        ) from exc
    size_x, size_y, size_z = (int(v) for v in reader.GetSize())
    sx, sy, sz = (float(v) for v in reader.GetSpacing())
    # The geometry maths lives on Scan; a one-voxel array stands in for the unread voxels.
    geometry = Scan(
        array=np.zeros((1, 1, 1), dtype=np.float32),
        spacing_mm=(sz, sy, sx),
        origin_xyz_mm=tuple(float(v) for v in reader.GetOrigin())[:3],  # type: ignore[arg-type]
        direction_xyz=tuple(float(v) for v in reader.GetDirection()),
        meta={"size_zyx": f"{size_z},{size_y},{size_x}"},
        source=str(path),
    )
    return geometry


def _luna_label(row: dict[str, str], number: int, path: Path) -> str:
    if row.get("label"):
        return row["label"]
    if row.get("class"):
        return "nodule" if _float(row["class"], "class", number, path) > 0 else "non-nodule"
    if row.get("diameter_mm"):
        band = lung_rads_size_band(_float(row["diameter_mm"], "diameter_mm", number, path))
        return f"lung-rads-{band}"
    raise DatasetError(
        f"row {number} has no label, class or diameter_mm",
        path=path,
        expected="a label, class (0/1) or diameter_mm column to label the nodule",
        found=f"columns {', '.join(row)}",
    )


def read_luna16(path: str | Path) -> LayoutRead:
    """Read a LUNA16-style annotations (or candidates) CSV against the .mhd volumes under it.

    Labels come from a `label` column, else `class` (1 -> "nodule", 0 -> "non-nodule"), else the
    Lung-RADS size band of `diameter_mm` ("lung-rads-2", "lung-rads-3", "lung-rads-4A",
    "lung-rads-4B"). The series UID stands in for the patient (hashed), since LUNA16 has one
    scan per patient for almost all patients.

    Raises:
        DatasetError: missing columns, or no listed series found on disk.
    """
    csv_path = Path(path)
    header, rows = _read_csv(csv_path)
    _require_columns(csv_path, header, LUNA_COLUMNS, "LUNA16 annotations")
    volumes = {p.name[: -len(".mhd")]: p for p in sorted(csv_path.parent.rglob("*.mhd"))}
    result = LayoutRead(has_patient_ids=True)
    geometries: dict[str, Scan] = {}
    missing_rows: dict[str, list[int]] = {}
    for number, row in enumerate(rows, start=2):
        uid = row["seriesuid"]
        volume = volumes.get(uid)
        if volume is None:
            missing_rows.setdefault(uid, []).append(number)
            continue
        if uid not in geometries:
            geometries[uid] = _volume_geometry(volume)
        geometry = geometries[uid]
        world = tuple(_float(row[c], c, number, csv_path) for c in ("coordX", "coordY", "coordZ"))
        centre = geometry.world_to_voxel((world[0], world[1], world[2]))
        size = [int(v) for v in str(geometry.meta["size_zyx"]).split(",")]
        if not all(-0.5 <= c < n - 0.5 for c, n in zip(centre, size, strict=True)):
            result.problems.append(
                f"row {number}: skipped: the point lies outside its volume "
                f"(voxel {tuple(round(c) for c in centre)}, volume size {tuple(size)})"
            )
            continue
        extra = {"diameter_mm": row["diameter_mm"]} if row.get("diameter_mm") else {}
        result.samples.append(
            Sample(
                path=str(volume),
                label=_luna_label(row, number, csv_path),
                patient_id=patient_key(uid),
                slice_index=round(centre[0]),
                center_zyx=centre,
                extra=extra,
            )
        )
    for numbers in missing_rows.values():
        # Rows, not the UID, are named: series UIDs can identify a study.
        rows_text = _listed([str(n) for n in numbers])
        result.problems.append(
            f"rows {rows_text}: skipped: no <seriesuid>.mhd volume for their series under "
            f"{csv_path.parent}"
        )
    if not result.samples:
        raise DatasetError(
            "none of the annotated series has a volume on disk",
            path=csv_path,
            expected="<seriesuid>.mhd files (with .raw) in the CSV's folder or its subfolders",
            found=f"{len(volumes)} .mhd file(s), none matching {len(missing_rows)} series",
            hint="put the annotations CSV in the folder that holds subset0..subset9",
        )
    return result
