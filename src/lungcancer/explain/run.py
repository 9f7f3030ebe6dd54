"""Explaining a trained classifier on files and datasets.

Inputs go through exactly the preprocessing the classifier was trained with (its saved
`DataConfig`), so the heat map is drawn on the picture the network saw. A lesion mask goes
through the same crop and resize, which lets the pointing game and the energy share be scored
on the network's own grid.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lungcancer.config import DataConfig, WindowConfig
from lungcancer.data.index import DatasetIndex, Sample
from lungcancer.data.measure import measure_lesions
from lungcancer.data.transforms import preprocess, preprocess_mask
from lungcancer.errors import ConfigError
from lungcancer.explain.gradcam import grad_cam
from lungcancer.explain.overlay import render_overlay, save_png
from lungcancer.explain.scores import (
    DEFAULT_TOLERANCE_PX,
    energy_share,
    pointing_game_hit,
    summarise,
)
from lungcancer.io.atomic import atomic_write_text
from lungcancer.io.reader import read_image, read_mask
from lungcancer.io.record import Scan


class ClassifierLike(Protocol):
    """What explaining needs from a loaded classifier (`train.inference.LoadedClassifier`)."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    @property
    def data_config(self) -> DataConfig: ...


@dataclass(frozen=True)
class Explanation:
    """The explanation of one network input.

    Attributes:
        name: which sample of the file ("image", "lesion 1", ...).
        probabilities: class name -> probability.
        predicted_class: the most probable class.
        explained_class: the class the map explains.
        method: "gradcam" or "gradcampp".
        image: the first input channel (lung window), (H, W) or (D, H, W), in [0, 1].
        cam: the heat map on the same grid, in [0, 1].
        overlay: RGB uint8 picture of the map over the image (3 views for volumes).
        pointing_hit: pointing-game hit when a mask was given, else None.
        energy_share: share of the map's energy inside the mask, else None.
        overlay_path: where the overlay PNG was written, if it was.
    """

    name: str
    probabilities: dict[str, float]
    predicted_class: str
    explained_class: str
    method: str
    image: np.ndarray
    cam: np.ndarray
    overlay: np.ndarray
    pointing_hit: bool | None = None
    energy_share: float | None = None
    overlay_path: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly fields (no arrays)."""
        return {
            "name": self.name,
            "probabilities": self.probabilities,
            "predicted_class": self.predicted_class,
            "explained_class": self.explained_class,
            "method": self.method,
            "pointing_hit": self.pointing_hit,
            "energy_share": self.energy_share,
            "overlay": self.overlay_path,
        }


def class_index(clf: ClassifierLike, class_name: str | None) -> int | None:
    """Index of `class_name` in the classifier's classes (None stays None: predicted class)."""
    if class_name is None:
        return None
    names = list(clf.class_names)
    if class_name not in names:
        raise ConfigError(
            f"unknown class {class_name!r}",
            expected=", ".join(names),
            found=class_name,
            hint="use one of the class names saved in the checkpoint",
        )
    return names.index(class_name)


def mask_on_input_grid(
    mask: np.ndarray,
    scan: Scan,
    cfg: DataConfig,
    *,
    slice_index: int = -1,
    center_zyx: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """A lesion mask cropped and resized exactly as `preprocess` treats its image.

    Args:
        mask: boolean z-y-x mask on the scan's grid.
        scan: the image the mask belongs to.
        cfg: the classifier's preprocessing config.
        slice_index: as given to `preprocess`.
        center_zyx: as given to `preprocess`.

    Returns:
        Boolean (H, W) or (D, H, W) on the network input's grid: pixels at least half covered
        by the lesion (for a lesion smaller than a pixel, those it covers most); all False when
        the crop misses the lesion.

    Raises:
        ConfigError: a 3D whole-volume input with `lung_crop`, whose crop is found on the
            volume's content and not replayed on a mask.
    """
    if cfg.spatial_dims == 2:
        # The crop is found on the image itself (lung crop included), then cut from the mask.
        resized = preprocess_mask(scan, mask, cfg, slice_index=slice_index, center_zyx=center_zyx)
        return _lesion_pixels(resized)
    if cfg.lung_crop and center_zyx is None:
        raise ConfigError(
            "localisation scores need the mask cropped like the image, and a 3D lung crop "
            "depends on the volume's content",
            expected="a 2D classifier, a 3D lesion patch, or lung_crop: false",
            found="lung_crop: true on whole volumes",
            hint="score localisation with a 2D model or one trained without the lung crop",
        )
    # As a unit-range image the mask goes through the same crop and resize; the window step
    # is the identity on [0, 1], so one channel comes back.
    as_image = Scan(
        array=mask.astype(np.float32),
        spacing_mm=scan.spacing_mm,
        intensity="unit",
        modality=scan.modality,
        meta=dict(scan.meta),
    )
    geometry = dataclasses.replace(cfg, windows=(WindowConfig(),), lung_crop=False)
    resized = preprocess(as_image, geometry, slice_index=slice_index, center_zyx=center_zyx)[0]
    return _lesion_pixels(resized)


def _lesion_pixels(share: np.ndarray) -> np.ndarray:
    """Pixels at least half covered by the lesion. A lesion smaller than one input pixel would
    vanish at that threshold, so it keeps the pixels it covers most instead."""
    return np.asarray(share >= min(0.5, 0.5 * float(share.max()))) & (share > 0)


def explain_input(
    clf: ClassifierLike,
    x: np.ndarray,
    *,
    class_name: str | None = None,
    method: str = "gradcam",
    mask: np.ndarray | None = None,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    name: str = "image",
) -> Explanation:
    """Explain one preprocessed input.

    Args:
        clf: the classifier.
        x: the network input (C, H, W) or (C, D, H, W), as `preprocess` returns it.
        class_name: the class to explain; None explains the predicted class.
        method: "gradcam" or "gradcampp".
        mask: optional lesion mask on the input grid, for the localisation scores.
        tolerance_px: pointing-game tolerance in input pixels.
        name: a label for this input.

    Returns:
        Probabilities, map, overlay and (with a mask) the localisation scores.
    """
    batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    result = grad_cam(clf.model, batch, class_index=class_index(clf, class_name), method=method)
    names = list(clf.class_names)
    probabilities = {n: float(p) for n, p in zip(names, result.probabilities[0], strict=True)}
    cam = result.maps[0]
    image = np.asarray(x[0], dtype=np.float32)
    hit = share = None
    if mask is not None:
        hit = pointing_game_hit(cam, mask, tolerance_px=tolerance_px)
        share = energy_share(cam, mask)
    return Explanation(
        name=name,
        probabilities=probabilities,
        predicted_class=names[int(np.argmax(result.probabilities[0]))],
        explained_class=names[result.class_indices[0]],
        method=method,
        image=image,
        cam=cam,
        overlay=render_overlay(image, cam),
        pointing_hit=hit,
        energy_share=share,
    )


def _sample_positions(
    scan: Scan, mask: np.ndarray | None
) -> list[tuple[str, int, tuple[float, float, float] | None]]:
    """(name, slice_index, centre) of each input a file yields: one per lesion, or one."""
    if mask is None or not mask.any():
        return [("image", -1, None)]
    lesions = measure_lesions(mask, scan.spacing_mm)
    if not scan.is_volume:
        lesions = lesions[:1]
    return [
        (f"lesion {i + 1}", round(lesion.center_zyx[0]), lesion.center_zyx)
        for i, lesion in enumerate(lesions)
    ]


def explain_scan(
    clf: ClassifierLike,
    scan: Scan,
    *,
    mask: np.ndarray | None = None,
    class_name: str | None = None,
    method: str = "gradcam",
    slice_index: int | None = None,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
) -> list[Explanation]:
    """Explain a scan: each lesion of the mask, a chosen slice, or the default view.

    Args:
        clf: the classifier.
        scan: the image.
        mask: optional boolean lesion mask on the scan's grid.
        class_name: the class to explain; None explains the predicted class.
        method: "gradcam" or "gradcampp".
        slice_index: for 2D models, explain this axial slice (scored against the mask's
            slice when a mask is given) instead of one input per lesion.
        tolerance_px: pointing-game tolerance in input pixels.

    Returns:
        One explanation per input.
    """
    cfg = clf.data_config
    if slice_index is not None and cfg.spatial_dims == 2:
        positions: list[tuple[str, int, tuple[float, float, float] | None]] = [
            (f"slice {slice_index}", slice_index, None)
        ]
    else:
        positions = _sample_positions(scan, mask)
    explanations = []
    for name, index, centre in positions:
        x = preprocess(scan, cfg, slice_index=index, center_zyx=centre)
        grid_mask = None
        if mask is not None and mask.any():
            grid_mask = mask_on_input_grid(mask, scan, cfg, slice_index=index, center_zyx=centre)
        explanations.append(
            explain_input(
                clf,
                x,
                class_name=class_name,
                method=method,
                mask=grid_mask,
                tolerance_px=tolerance_px,
                name=name,
            )
        )
    return explanations


def explain_file(
    clf: ClassifierLike,
    path: str | Path,
    *,
    mask_path: str | Path | None = None,
    class_name: str | None = None,
    method: str = "gradcam",
    out_dir: str | Path | None = None,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
) -> list[Explanation]:
    """Explain an image file; with `out_dir`, write overlay PNGs and `explanations.json`.

    Args:
        clf: the classifier.
        path: any image `read_image` reads (file or DICOM series folder).
        mask_path: optional lesion mask with the image's geometry.
        class_name: the class to explain; None explains the predicted class.
        method: "gradcam" or "gradcampp".
        out_dir: folder for `<name>_<n>_<method>.png` and `explanations.json`.
        tolerance_px: pointing-game tolerance in input pixels.

    Returns:
        One explanation per input (per lesion with a mask), with `overlay_path` set when
        written.
    """
    scan = read_image(path)
    mask = None if mask_path is None else read_mask(mask_path, like=scan)
    explanations = explain_scan(
        clf, scan, mask=mask, class_name=class_name, method=method, tolerance_px=tolerance_px
    )
    if out_dir is None:
        return explanations
    folder = Path(out_dir)
    stem = Path(path).name.split(".")[0] or "image"
    written = []
    for i, item in enumerate(explanations):
        target = save_png(item.overlay, folder / f"{stem}_{i + 1}_{method}.png")
        written.append(dataclasses.replace(item, overlay_path=str(target)))
    summary = {
        "method": method,
        "tolerance_px": tolerance_px,
        "explanations": [e.summary() for e in written],
    }
    atomic_write_text(folder / "explanations.json", json.dumps(summary, indent=2) + "\n")
    return written


def localisation_scores(
    clf: ClassifierLike,
    dataset: DatasetIndex | Iterable[Sample],
    *,
    method: str = "gradcam",
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    explain: str = "label",
) -> dict[str, float | int]:
    """Pointing-game hit rate and mean energy share over the samples that have a mask.

    Each sample's image and mask go through the classifier's preprocessing (the sample's
    slice or lesion centre included) and the map is scored on the input grid.

    Args:
        clf: the classifier.
        dataset: a `DatasetIndex` or samples; samples without `mask_path` are skipped.
        method: "gradcam" or "gradcampp".
        tolerance_px: pointing-game tolerance in input pixels.
        explain: "label" explains each sample's true class (the pointing game's convention:
            does the evidence for the right answer lie on the lesion?); "predicted" explains
            the model's prediction.

    Returns:
        {"n", "pointing_game_hit_rate", "mean_energy_share", "tolerance_px"}; the rates are
        NaN when no sample has a mask.
    """
    from lungcancer.data.layouts import read_sample

    if explain not in ("label", "predicted"):
        raise ConfigError(
            "unknown target for localisation scores", expected="label or predicted", found=explain
        )
    samples = dataset.samples if isinstance(dataset, DatasetIndex) else tuple(dataset)
    cfg = clf.data_config

    def pairs() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for sample in samples:
            if not sample.mask_path:
                continue
            scan = read_sample(sample)
            mask = read_mask(sample.mask_path, like=scan)
            if not mask.any():
                continue
            x = preprocess(scan, cfg, slice_index=sample.slice_index, center_zyx=sample.center_zyx)
            grid_mask = mask_on_input_grid(
                mask, scan, cfg, slice_index=sample.slice_index, center_zyx=sample.center_zyx
            )
            target = (
                sample.label if explain == "label" and sample.label in clf.class_names else None
            )
            item = explain_input(clf, x, class_name=target, method=method)
            yield item.cam, grid_mask

    return summarise(pairs(), tolerance_px=tolerance_px).as_dict()
