"""The dataset index: one row per sample, whatever layout it came from.

Every layout reader (folder-per-class, CSV manifest, volumes with masks, LUNA16, MedMNIST)
produces a `DatasetIndex`; splits, the audit, the cache and training read only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        lookup = {name: i for i, name in enumerate(self.class_names)}
        return [lookup[s.label] for s in self.samples]
