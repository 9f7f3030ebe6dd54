"""Reading medical images into `Scan` records (float32 z-y-x, spacing in mm, PHI removed)."""

from lungcancer.io.dicom import DicomSeriesInfo, list_dicom_series
from lungcancer.io.dicom_masks import mask_reference
from lungcancer.io.phi import patient_key
from lungcancer.io.reader import (
    SUPPORTED_FORMATS,
    detect_format,
    read_image,
    read_mask,
    scan_summary,
)
from lungcancer.io.record import IntensityKind, Scan
from lungcancer.io.volume import geometry_mismatches, write_mask, write_volume

__all__ = [
    "SUPPORTED_FORMATS",
    "DicomSeriesInfo",
    "IntensityKind",
    "Scan",
    "detect_format",
    "geometry_mismatches",
    "list_dicom_series",
    "mask_reference",
    "patient_key",
    "read_image",
    "read_mask",
    "scan_summary",
    "write_mask",
    "write_volume",
]
