"""The dataset index: one row per sample, whatever layout it came from.

Every layout reader (folder-per-class, CSV manifest, volumes with masks, LUNA16, MedMNIST)
produces a `DatasetIndex`; splits, the audit, the cache and training read only this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Columns of the CSV manifest (paths relative to the manifest's folder). `path` and `label` are
# required; the others may be empty. Any other column is kept in `Sample.extra`.
MANIFEST_COLUMNS = ("path", "label", "patient_id", "mask_path", "split", "time_point")


@dataclass(frozen=True)
class Sample:
    """One labelled image (or one lesion slice/patch of a volume).

    Attributes:
        path: absolute path of the image file or series folder.
        label: class name after normalisation and the user's class map.
        patient_id: patient key (already de-identified); "" when the dataset has none.
        mask_path: absolute path of the lesion mask, or "".
        split: "train", "val" or "test" when the layout fixes it, else "".
        time_point: months since baseline for longitudinal data, else 0.
        slice_index: for volumes, the axial slice (z) this sample is centred on, else -1.
        center_zyx: lesion centre in voxels for patch extraction, else None.
        extra: other per-sample fields from the manifest (e.g. LungSim's diameter_mm, stage).
    """

    path: str
    label: str
    patient_id: str = ""
    mask_path: str = ""
    split: str = ""
    time_point: float = 0.0
    slice_index: int = -1
    center_zyx: tuple[float, float, float] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def selector(self) -> str:
        """What part of `path` this sample is: "" (the whole file), "z=12", "c=z,y,x", or
        "npz=train_images[3]" for an image inside an array file."""
        if "npz_array" in self.extra:
            return f"npz={self.extra['npz_array']}[{self.extra['npz_index']}]"
        if self.center_zyx is not None:
            return "c=" + ",".join(f"{v:.1f}" for v in self.center_zyx)
        if self.slice_index >= 0:
            return f"z={self.slice_index}"
        return ""


def sample_key(sample: Sample, root: str) -> str:
    """A stable name for a sample: its path relative to the dataset root, plus its selector.

    Keys survive moving the dataset folder, so a saved split still applies after a copy.
    """
    try:
        relative = Path(os.path.relpath(sample.path, root)).as_posix() if root else sample.path
    except ValueError:
        # Another drive on Windows: no relative path exists, the absolute one is stable too.
        relative = Path(sample.path).as_posix()
    return f"{relative}#{sample.selector}" if sample.selector else relative


@dataclass(frozen=True)
class DatasetIndex:
    """All samples of a dataset plus its saved class list (index = class id)."""

    samples: tuple[Sample, ...]
    class_names: tuple[str, ...]
    layout: str
    root: str
    has_patient_ids: bool
    problems: tuple[str, ...] = ()

    def label_ids(self) -> list[int]:
        """Class id (index into `class_names`) of every sample."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        return [lookup[s.label] for s in self.samples]

    def sample_keys(self) -> list[str]:
        """`sample_key` of every sample, in index order."""
        return [sample_key(s, self.root) for s in self.samples]
