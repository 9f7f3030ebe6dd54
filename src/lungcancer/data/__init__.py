"""lungcancer.data: dataset layouts, patient-level splits, leakage audit, preprocessing, cache.

Names are imported on first use, so `from lungcancer.data import measure_lesion` does not pull
in torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lungcancer.lazy import lazy_exports

if TYPE_CHECKING:
    from lungcancer.data.audit import AuditReport, ImageHashes, audit, image_hashes
    from lungcancer.data.cache import SampleCache
    from lungcancer.data.index import DatasetIndex, Sample, sample_key
    from lungcancer.data.inspect import DatasetSummary, inspect_dataset, summarize
    from lungcancer.data.layouts import LAYOUTS, detect_layout, load_index, read_sample
    from lungcancer.data.measure import (
        LesionMeasurement,
        measure_file,
        measure_lesion,
        measure_lesions,
    )
    from lungcancer.data.prepare import PreparedData, prepare_data, preprocess_file
    from lungcancer.data.splits import Splits, load_splits, make_splits, save_splits
    from lungcancer.data.torch_dataset import ClassificationDataset, load_sample_array
    from lungcancer.data.transforms import Augmenter, preprocess

_WHERE = {
    "AuditReport": "audit",
    "ImageHashes": "audit",
    "audit": "audit",
    "image_hashes": "audit",
    "SampleCache": "cache",
    "DatasetIndex": "index",
    "Sample": "index",
    "sample_key": "index",
    "DatasetSummary": "inspect",
    "inspect_dataset": "inspect",
    "summarize": "inspect",
    "LAYOUTS": "layouts",
    "detect_layout": "layouts",
    "load_index": "layouts",
    "read_sample": "layouts",
    "LesionMeasurement": "measure",
    "measure_file": "measure",
    "measure_lesion": "measure",
    "measure_lesions": "measure",
    "PreparedData": "prepare",
    "prepare_data": "prepare",
    "preprocess_file": "prepare",
    "Splits": "splits",
    "load_splits": "splits",
    "make_splits": "splits",
    "save_splits": "splits",
    "ClassificationDataset": "torch_dataset",
    "load_sample_array": "torch_dataset",
    "Augmenter": "transforms",
    "preprocess": "transforms",
}

__all__ = [
    "LAYOUTS",
    "AuditReport",
    "Augmenter",
    "ClassificationDataset",
    "DatasetIndex",
    "DatasetSummary",
    "ImageHashes",
    "LesionMeasurement",
    "PreparedData",
    "Sample",
    "SampleCache",
    "Splits",
    "audit",
    "detect_layout",
    "image_hashes",
    "inspect_dataset",
    "load_index",
    "load_sample_array",
    "load_splits",
    "make_splits",
    "measure_file",
    "measure_lesion",
    "measure_lesions",
    "prepare_data",
    "preprocess",
    "preprocess_file",
    "read_sample",
    "sample_key",
    "save_splits",
    "summarize",
]


__getattr__ = lazy_exports(__name__, _WHERE)
