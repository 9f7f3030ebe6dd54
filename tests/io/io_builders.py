"""Tiny DICOM series and images written by tests, with the values a reader must return.

Reusable from any test folder:

    import sys; sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
    from io_builders import write_ct_series
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class SeriesTruth:
    """What a correct reader returns for a series written by `write_ct_series`.

    Attributes:
        folder: where the files are.
        paths: the files, in slice order (sorted along the slice normal).
        hu_volume: expected z-y-x values (HU for CT).
        spacing_mm: expected (z, y, x) spacing.
        origin_xyz_mm: position of the first slice's first voxel.
        direction_xyz: expected row-major 3x3 direction (ITK convention).
        series_uid: the SeriesInstanceUID written.
    """

    folder: Path
    paths: list[Path]
    hu_volume: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction_xyz: tuple[float, ...]
    series_uid: str


def new_dataset(sop_class: str) -> Dataset:
    """An empty dataset of `sop_class` with its file meta, a fresh instance and series UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "TEST-PATIENT"
    return ds


def ct_dataset(
    stored: np.ndarray,
    *,
    position_xyz_mm: tuple[float, float, float] | None,
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing_mm: tuple[float, float] = (0.7, 0.8),
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    modality: str = "CT",
    series_uid: str = "1.2.3.4",
    instance_number: int = 1,
    slice_thickness_mm: float = 2.5,
) -> Dataset:
    """One DICOM image dataset holding `stored` (int16, y-x) as its pixel data."""
    ds = new_dataset(CTImageStorage if modality == "CT" else MR_IMAGE_STORAGE)
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.Manufacturer = "ACME"
    ds.KVP = 120
    ds.ConvolutionKernel = "B30f"
    ds.SliceThickness = slice_thickness_mm
    ds.InstanceNumber = instance_number
    if position_xyz_mm is not None:
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position_xyz_mm]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing_mm]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
    if intercept is not None:
        ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = stored.astype("<i2").tobytes()
    return ds


def write_dataset(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    """Save `ds` as a Part 10 file (or, with `preamble=False`, as a bare dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def write_ct_series(
    folder: Path,
    *,
    n_slices: int = 3,
    rows: int = 16,
    columns: int = 16,
    spacing_mm: tuple[float, float, float] = (2.5, 0.7, 0.8),
    origin_xyz_mm: tuple[float, float, float] = (-100.0, -120.0, 50.0),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    series_uid: str | None = None,
    shuffle: bool = False,
    z_offsets_mm: list[float] | None = None,
    seed: int = 0,
    prefix: str = "slice",
) -> SeriesTruth:
    """Write a small series with known HU, spacing, origin and direction.

    Args:
        folder: where to write (created).
        n_slices: number of slices (ignored when `z_offsets_mm` is given).
        rows: image rows.
        columns: image columns.
        spacing_mm: (z, y, x) spacing; z is the distance between slice positions.
        origin_xyz_mm: position of the first slice.
        orientation: ImageOrientationPatient (row direction, column direction).
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        modality: DICOM modality.
        series_uid: SeriesInstanceUID (a fresh one by default).
        shuffle: name files in a random order unrelated to their position.
        z_offsets_mm: explicit positions along the normal (for uneven spacing).
        seed: for pixel values and file order.
        prefix: file name prefix.

    Returns:
        The truth a reader must reproduce.
    """
    rng = np.random.default_rng(seed)
    uid = series_uid or generate_uid()
    offsets = z_offsets_mm or [i * spacing_mm[0] for i in range(n_slices)]
    row_dir = np.asarray(orientation[:3], dtype=np.float64)
    col_dir = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row_dir, col_dir)
    origin = np.asarray(origin_xyz_mm, dtype=np.float64)
    stored = rng.integers(0, 2000, size=(len(offsets), rows, columns)).astype(np.int16)
    names = [f"{prefix}{i:03d}.dcm" for i in range(len(offsets))]
    if shuffle:
        random.Random(seed).shuffle(names)
    paths: list[Path] = []
    for index, offset in enumerate(offsets):
        position = origin + offset * normal
        ds = ct_dataset(
            stored[index],
            position_xyz_mm=(float(position[0]), float(position[1]), float(position[2])),
            orientation=orientation,
            pixel_spacing_mm=(spacing_mm[1], spacing_mm[2]),
            slope=slope,
            intercept=intercept,
            modality=modality,
            series_uid=uid,
            # Instance numbers run opposite to position, as on many scanners.
            instance_number=len(offsets) - index,
        )
        paths.append(write_dataset(ds, folder / names[index]))
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    return SeriesTruth(
        folder=folder,
        paths=paths,
        hu_volume=(stored.astype(np.float64) * slope + intercept).astype(np.float32),
        spacing_mm=spacing_mm,
        origin_xyz_mm=origin_xyz_mm,
        direction_xyz=tuple(float(v) for v in direction.reshape(-1)),
        series_uid=uid,
    )


def write_enhanced_ct(
    path: Path,
    *,
    n_frames: int = 3,
    rows: int = 16,
    columns: int = 16,
    spacing_mm: tuple[float, float, float] = (3.0, 0.6, 0.7),
    origin_xyz_mm: tuple[float, float, float] = (10.0, -20.0, -30.0),
    slope: float = 2.0,
    intercept: float = -1000.0,
    seed: int = 0,
) -> SeriesTruth:
    """Write one enhanced (multi-frame) CT file whose frames are stored last slice first.

    Geometry and rescale live in functional groups: orientation, pixel measures and rescale
    in the shared group, each frame's position in its own group.
    """
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 1500, size=(n_frames, rows, columns)).astype(np.int16)
    ds = ct_dataset(stored[0], position_xyz_mm=None, slope=None, intercept=None)
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    del ds.PixelSpacing
    del ds.SliceThickness
    ds.NumberOfFrames = n_frames
    shared = Dataset()
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [spacing_mm[1], spacing_mm[2]]
    measures.SliceThickness = spacing_mm[0]
    rescale.RescaleSlope = f"{slope:g}"
    rescale.RescaleIntercept = f"{intercept:g}"
    rescale.RescaleType = "HU"
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    order = list(reversed(range(n_frames)))  # stored frame i holds slice order[i]
    for slice_index in order:
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = [
            origin_xyz_mm[0],
            origin_xyz_mm[1],
            origin_xyz_mm[2] + slice_index * spacing_mm[0],
        ]
        group.PlanePositionSequence = [position]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = stored[order].astype("<i2").tobytes()
    write_dataset(ds, path)
    return SeriesTruth(
        folder=path.parent,
        paths=[path],
        hu_volume=(stored.astype(np.float64) * slope + intercept).astype(np.float32),
        spacing_mm=spacing_mm,
        origin_xyz_mm=origin_xyz_mm,
        direction_xyz=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        series_uid=str(ds.SeriesInstanceUID),
    )


def read_back(path: Path) -> Dataset:
    """pydicom's own reading of a file, for comparisons."""
    return pydicom.dcmread(path)


def voxel_to_world(truth: SeriesTruth, zyx: tuple[float, float, float]) -> list[float]:
    """World x, y, z (mm) of a continuous voxel index of a series written above."""
    direction = np.asarray(truth.direction_xyz, dtype=np.float64).reshape(3, 3)
    spacing_xyz = np.asarray(truth.spacing_mm[::-1], dtype=np.float64)
    ijk = np.asarray(zyx[::-1], dtype=np.float64)
    return list(np.asarray(truth.origin_xyz_mm) + (direction * spacing_xyz) @ ijk)


def write_rtstruct(
    path: Path,
    truth: SeriesTruth,
    rois: dict[str, list[list[tuple[float, float, float]]]],
    *,
    geometric_type: str = "CLOSED_PLANAR",
) -> Path:
    """An RT Structure Set whose ROIs are contours given as voxel (z, y, x) points of `truth`."""
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.481.3")
    ds.Modality = "RTSTRUCT"
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = geometric_type
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [
                f"{v:.4f}" for point in points for v in voxel_to_world(truth, point)
            ]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    return write_dataset(ds, path)


def write_seg(
    path: Path,
    truth: SeriesTruth,
    segments: dict[str, np.ndarray],
    *,
    fractional: bool = False,
    shift_rows: float = 0.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> Path:
    """A DICOM SEG with one frame per (segment, slice holding any of it), in reverse order."""
    from pydicom.pixels import pack_bits

    ds = new_dataset("1.2.840.10008.5.1.4.1.1.66.4")
    ds.Modality = "SEG"
    ds.SegmentationType = "FRACTIONAL" if fractional else "BINARY"
    ds.SegmentSequence = []
    frames: list[np.ndarray] = []
    ds.PerFrameFunctionalGroupsSequence = []
    for number, (label, volume) in enumerate(segments.items(), start=1):
        segment = Dataset()
        segment.SegmentNumber = number
        segment.SegmentLabel = label
        ds.SegmentSequence.append(segment)
        for index in range(volume.shape[0]):
            if not volume[index].any():
                continue
            frame = Dataset()
            identification = Dataset()
            identification.ReferencedSegmentNumber = number
            frame.SegmentIdentificationSequence = [identification]
            plane = Dataset()
            plane.ImagePositionPatient = [
                f"{v:.4f}" for v in voxel_to_world(truth, (index, shift_rows, 0.0))
            ]
            frame.PlanePositionSequence = [plane]
            ds.PerFrameFunctionalGroupsSequence.append(frame)
            frames.append(volume[index])
    # Frames stored last first: a reader must place them by position, not order.
    order = list(range(len(frames)))[::-1]
    ds.PerFrameFunctionalGroupsSequence = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    stack = np.stack([frames[i] for i in order])
    shared = Dataset()
    orientation = Dataset()
    direction = np.asarray(truth.direction_xyz).reshape(3, 3)
    orientation.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
    measures = Dataset()
    measures.PixelSpacing = [f"{v:g}" for v in (pixel_spacing_mm or truth.spacing_mm[1:])]
    measures.SliceThickness = f"{truth.spacing_mm[0]:g}"
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = stack.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    if fractional:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.MaximumFractionalValue = 255
        ds.SegmentationFractionalType = "PROBABILITY"
        ds.PixelData = np.round(stack * 255).astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated = ds.BitsStored = 1
        ds.HighBit = 0
        ds.PixelData = pack_bits(stack.astype(np.uint8))
    return write_dataset(ds, path)
