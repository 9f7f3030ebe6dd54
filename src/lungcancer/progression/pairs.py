"""Training and evaluation examples for the progression GAN.

A `LesionView` is one lesion at one time point (image in HU, mask, spacing, centre, diameter,
stage). LungSim's longitudinal series give pairs of views of the same lesion at two times (the
lesion-centred slice of every time point is centred on the same lesion, so a row with
`slice_offset_mm == 0` at month 0 and one at month k form a pair). `PatchSet` holds the pairs
resampled to the GAN's patch grid as arrays, ready to batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungcancer.errors import DatasetError
from lungcancer.progression.patches import (
    HUWindow,
    PatchGeometry,
    PatchGrid,
    greatest_diameter_mm,
    mask_center,
)


@dataclass(frozen=True)
class LesionView:
    """One lesion at one time point.

    Attributes:
        image_hu: 2D (y, x) or 3D (z, y, x) array in HU.
        mask: lesion mask of the same shape (bool).
        spacing_mm: spacing of the image axes.
        center: lesion centre in voxel indices.
        diameter_mm: lesion diameter (LungSim's truth, or measured from the mask).
        stage: stage name (e.g. "II").
        patient_id: patient key.
        months: time since the patient's baseline.
        source: where the view came from, for messages.
        n: N descriptor ("N0" ... "N3"; "" when the dataset does not say).
        m: M descriptor ("M0", "M1a", ...; "" when the dataset does not say).
        m1a_findings: what shows M1a on the slice ("effusion", "nodule", "both" or "").
    """

    image_hu: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, ...]
    center: tuple[float, ...]
    diameter_mm: float
    stage: str
    patient_id: str
    months: float
    source: str = ""
    n: str = ""
    m: str = ""
    m1a_findings: str = ""


@dataclass(frozen=True)
class PatchSet:
    """Examples on the patch grid; arrays have the example axis first.

    In unpaired mode `target*` equal `source*` (there is no future scan).

    Attributes:
        source: (N, 1, *patch) input patches in window units.
        target: (N, 1, *patch) true future patches in window units.
        source_mask: (N, 1, *patch) 0/1 lesion masks of the input.
        target_mask: (N, 1, *patch) 0/1 lesion masks of the future.
        source_size: (N,) input diameter / patch field of view.
        target_size: (N,) future diameter / patch field of view.
        spacing_mm: (N,) patch pixel size of each example.
        source_stage: (N,) stage ids of the input.
        target_stage: (N,) stage ids of the future.
        months: (N,) elapsed months between input and future.
        patient_ids: patient of every example.
    """

    source: np.ndarray
    target: np.ndarray
    source_mask: np.ndarray
    target_mask: np.ndarray
    source_size: np.ndarray
    target_size: np.ndarray
    spacing_mm: np.ndarray
    source_stage: np.ndarray
    target_stage: np.ndarray
    months: np.ndarray
    patient_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> PatchSet:
        """The examples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return PatchSet(
            source=self.source[idx],
            target=self.target[idx],
            source_mask=self.source_mask[idx],
            target_mask=self.target_mask[idx],
            source_size=self.source_size[idx],
            target_size=self.target_size[idx],
            spacing_mm=self.spacing_mm[idx],
            source_stage=self.source_stage[idx],
            target_stage=self.target_stage[idx],
            months=self.months[idx],
            patient_ids=tuple(self.patient_ids[i] for i in idx),
        )


def view_grid(view: LesionView, patch_size: int, patch_spacing_mm: float) -> PatchGrid:
    """The patch grid centred on a view's lesion."""
    return PatchGrid(view.center, view.spacing_mm, patch_size, patch_spacing_mm)


def pair_spacing_mm(
    src: LesionView, tgt: LesionView, geometry: PatchGeometry, headroom: float = 1.0
) -> float:
    """Patch pixel size of a pair: its field of view follows the larger of the two lesions."""
    return geometry.spacing_for(headroom * max(src.diameter_mm, tgt.diameter_mm))


def make_patch_set(
    pairs: Sequence[tuple[LesionView, LesionView]],
    stages: Sequence[str],
    geometry: PatchGeometry,
    window: HUWindow,
    headroom: float = 1.0,
) -> PatchSet:
    """Resample (input, future) view pairs onto the patch grid.

    Each view is cut on a grid centred on its own lesion: between visits the patient lies a few
    millimetres differently on the table (LungSim models this too), and centring on the lesion
    aligns the lesion and the anatomy around it.

    Args:
        pairs: (input, future) views; use (view, view) for unpaired examples.
        stages: the GAN's stage list; a view whose stage is not in it is an error.
        geometry: patch size and how its pixel size follows the lesions.
        window: HU window of the network units.
        headroom: widen the field of view by this factor (unpaired examples, whose target
            lesion is larger than the one in the image, use 1.5).

    Returns:
        The examples as arrays.
    """
    if not pairs:
        raise DatasetError(
            "no lesion pairs to build patches from",
            expected="at least one malignant lesion with a mask at two time points (paired) "
            "or one time point (unpaired)",
            found="0",
            hint="check the dataset path and that its stages match the GAN's stage list",
        )
    lookup = {name: i for i, name in enumerate(stages)}
    arrays: dict[str, list[np.ndarray]] = defaultdict(list)
    sizes: dict[str, list[float]] = defaultdict(list)
    patients = []
    for src, tgt in pairs:
        for view in (src, tgt):
            if view.stage not in lookup:
                raise DatasetError(
                    "a lesion's stage is not in the GAN's stage list",
                    path=view.source or None,
                    expected=", ".join(stages),
                    found=view.stage,
                    hint="set gan.stages to the dataset's stage names",
                )
        spacing = pair_spacing_mm(src, tgt, geometry, headroom)
        fov_mm = spacing * geometry.patch_size
        src_grid = view_grid(src, geometry.patch_size, spacing)
        tgt_grid = view_grid(tgt, geometry.patch_size, spacing)
        arrays["source"].append(window.to_unit(src_grid.extract(src.image_hu)))
        arrays["target"].append(window.to_unit(tgt_grid.extract(tgt.image_hu)))
        arrays["source_mask"].append(
            (src_grid.extract(src.mask.astype(np.float32)) > 0.5).astype(np.float32)
        )
        arrays["target_mask"].append(
            (tgt_grid.extract(tgt.mask.astype(np.float32)) > 0.5).astype(np.float32)
        )
        sizes["source_size"].append(src.diameter_mm / fov_mm)
        sizes["target_size"].append(tgt.diameter_mm / fov_mm)
        sizes["spacing_mm"].append(spacing)
        sizes["source_stage"].append(lookup[src.stage])
        sizes["target_stage"].append(lookup[tgt.stage])
        sizes["months"].append(tgt.months - src.months)
        patients.append(src.patient_id)
    return PatchSet(
        **{k: np.stack(v)[:, None] for k, v in arrays.items()},
        source_size=np.asarray(sizes["source_size"], np.float32),
        target_size=np.asarray(sizes["target_size"], np.float32),
        spacing_mm=np.asarray(sizes["spacing_mm"], np.float32),
        source_stage=np.asarray(sizes["source_stage"], np.int64),
        target_stage=np.asarray(sizes["target_stage"], np.int64),
        months=np.asarray(sizes["months"], np.float32),
        patient_ids=tuple(patients),
    )


def longitudinal_pairs(
    views: Sequence[LesionView], include_identity: bool = True
) -> list[tuple[LesionView, LesionView]]:
    """Every (earlier, later) pair of views of one patient's lesion.

    Args:
        views: lesion-centred views (one per patient and time point).
        include_identity: also pair each view with itself (the "no time passed" case teaches
            the generator to leave a lesion alone when the target equals the input).

    Returns:
        Pairs ordered by patient, then input month, then future month.
    """
    by_patient: dict[str, list[LesionView]] = defaultdict(list)
    for view in views:
        by_patient[view.patient_id].append(view)
    pairs = []
    for patient in sorted(by_patient):
        series = sorted(by_patient[patient], key=lambda v: v.months)
        for i, src in enumerate(series):
            for tgt in series[i if include_identity else i + 1 :]:
                pairs.append((src, tgt))
    return pairs


def lesion_views_from_index(
    data: str | Path, stages: Sequence[str], spatial_dims: int = 2
) -> list[LesionView]:
    """Read the lesion-centred views of a dataset (a LungSim folder or any manifest with masks).

    Rows need a lesion mask. LungSim rows with a non-zero `slice_offset_mm` (slices above or
    below the lesion centre) and rows whose stage is not in `stages` (normal, benign) are
    skipped. The diameter is LungSim's `diameter_mm` when present, else measured from the mask.

    Args:
        data: dataset folder or manifest.
        stages: stage names the GAN knows.
        spatial_dims: 2 reads the slice through the lesion centre, 3 keeps the volume.

    Returns:
        One view per usable row.
    """
    from lungcancer.data import load_index
    from lungcancer.io import read_image, read_mask

    index = load_index(data)
    views = []
    for sample in index.samples:
        extra = sample.extra
        stage = extra.get("stage") or sample.label
        if stage not in stages:
            continue
        if float(extra.get("slice_offset_mm") or 0.0) != 0.0:
            continue
        if not sample.mask_path:
            raise DatasetError(
                "a lesion row has no mask",
                path=sample.path,
                expected="mask_path for every lesion (the GAN needs the lesion's centre and size)",
                found="empty mask_path",
                hint="add lesion masks to the manifest, or use LungSim data",
            )
        scan = read_image(sample.path)
        mask = read_mask(sample.mask_path, like=scan)
        views.append(
            _view_from_arrays(
                scan.array,
                mask,
                scan.spacing_mm,
                extra,
                stage,
                sample.patient_id or Path(sample.path).stem,
                float(sample.time_point),
                sample.path,
                spatial_dims,
            )
        )
    return views


def _view_from_arrays(
    volume_hu: np.ndarray,
    mask: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float],
    extra: dict[str, str],
    stage: str,
    patient_id: str,
    months: float,
    source: str,
    spatial_dims: int,
) -> LesionView:
    if not mask.any():
        raise DatasetError(
            "a lesion mask is empty",
            path=source,
            expected="at least one lesion voxel",
            found="an all-zero mask",
            hint="fix or drop this row",
        )
    # The slice with the most lesion is the one through its centre for a round lesion.
    z = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
    spacing: tuple[float, ...]
    if spatial_dims == 3:
        if volume_hu.shape[0] < 2:
            raise DatasetError(
                "a 3D GAN needs volumes, and this image is a single slice",
                path=source,
                expected="CT volumes with lesion masks (e.g. lungcancer synth --dims 3)",
                found=f"an image of shape {tuple(volume_hu.shape)} (z, y, x)",
                hint="train a 2D GAN on slices (gan.spatial_dims: 2), or use volume data",
            )
        image, m, spacing, center = volume_hu, mask, spacing_zyx_mm, mask_center(mask)
    else:
        image, m, spacing = volume_hu[z], mask[z], spacing_zyx_mm[1:]
        center = tuple(float(c) for c in ndimage.center_of_mass(m))
    diameter = float(extra["diameter_mm"]) if extra.get("diameter_mm") else 0.0
    if diameter <= 0:
        diameter = greatest_diameter_mm(mask[z], (spacing_zyx_mm[1], spacing_zyx_mm[2]))
    return LesionView(
        image_hu=np.asarray(image, np.float32),
        mask=np.asarray(m, bool),
        spacing_mm=tuple(float(s) for s in spacing),
        center=center,
        diameter_mm=diameter,
        stage=stage,
        patient_id=patient_id,
        months=months,
        source=source,
        n=extra.get("n") or "",
        m=extra.get("m") or "",
        m1a_findings=extra.get("m1a_findings") or "",
    )
