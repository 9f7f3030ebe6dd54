"""Explaining files and scoring localisation over a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lungcancer.config import DataConfig
from lungcancer.data.index import Sample
from lungcancer.data.transforms import preprocess
from lungcancer.errors import ConfigError
from lungcancer.explain.run import explain_file, localisation_scores, mask_on_input_grid
from lungcancer.io.record import Scan


def test_mask_follows_the_image_through_resizing() -> None:
    scan = Scan(array=np.zeros((1, 64, 64), np.float32), spacing_mm=(1, 1, 1), intensity="unit")
    mask = np.zeros((1, 64, 64), dtype=bool)
    mask[0, 8:24, 40:56] = True
    grid = mask_on_input_grid(mask, scan, DataConfig(image_size=32))
    assert grid.shape == (32, 32)
    expected = np.zeros((32, 32), dtype=bool)
    expected[4:12, 20:28] = True
    assert np.array_equal(grid, expected)


def test_a_2d_lung_crop_is_replayed_on_the_mask_and_a_3d_one_is_refused() -> None:
    # A chest with a nodule in the right lung: the lung crop is found on the image, and the
    # mask lands where the nodule is in the cropped, resized input.
    yy, xx = np.mgrid[:64, :64]
    image = np.full((64, 64), -1000.0, np.float32)
    image[((yy - 32) / 26) ** 2 + ((xx - 32) / 29) ** 2 < 1] = 40.0
    for cx in (20, 44):
        image[((yy - 32) / 18) ** 2 + ((xx - cx) / 8) ** 2 < 1] = -850.0
    nodule = ((yy - 26) ** 2 + (xx - 20) ** 2) <= 9
    image[nodule] = 300.0
    scan = Scan(array=image[None], spacing_mm=(1, 1, 1))
    cfg = DataConfig(image_size=32, lung_crop=True)
    grid = mask_on_input_grid(nodule[None], scan, cfg)
    x = preprocess(scan, cfg)[0]
    assert grid.any()
    # The nodule is the brightest thing in the lung window (clipped at 1); the mask covers it.
    brightest = x >= x.max() - 1e-6
    assert (grid & brightest).sum() >= 0.5 * brightest.sum()
    whole = mask_on_input_grid(nodule[None], scan, DataConfig(image_size=32))
    assert grid.sum() > whole.sum()  # the crop zoomed in
    volume = Scan(array=np.zeros((4, 8, 8), np.float32), spacing_mm=(1, 1, 1))
    with pytest.raises(ConfigError, match="lung crop"):
        mask_on_input_grid(
            np.ones((4, 8, 8), bool), volume, DataConfig(lung_crop=True, spatial_dims=3)
        )


def test_explain_file_writes_overlays_and_scores(
    region_bundle: Any, lesion_pngs: list[tuple[Path, Path]], tmp_path: Path
) -> None:
    image, mask = lesion_pngs[0]
    out = tmp_path / "explained"
    results = explain_file(
        region_bundle, image, mask_path=mask, class_name="malignant", out_dir=out
    )
    assert len(results) == 1
    item = results[0]
    assert item.explained_class == "malignant"
    assert item.pointing_hit is True
    assert item.energy_share is not None and item.energy_share > 0.3
    assert item.overlay.shape[2] == 3 and item.overlay.shape[0] >= 256
    assert Path(item.overlay_path or "").is_file()
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["explanations"][0]["pointing_hit"] is True
    assert sum(summary["explanations"][0]["probabilities"].values()) == pytest.approx(1.0)


def test_unknown_class_lists_the_saved_classes(
    region_bundle: Any, lesion_pngs: list[tuple[Path, Path]]
) -> None:
    with pytest.raises(ConfigError, match="benign, malignant"):
        explain_file(region_bundle, lesion_pngs[0][0], class_name="adenocarcinoma")


def test_localisation_scores_over_a_dataset(
    region_bundle: Any, lesion_pngs: list[tuple[Path, Path]]
) -> None:
    samples = [
        Sample(path=str(img), label="malignant", mask_path=str(msk)) for img, msk in lesion_pngs
    ]
    samples.append(Sample(path=str(lesion_pngs[0][0]), label="malignant"))  # no mask: skipped
    scores = localisation_scores(region_bundle, samples)
    assert scores["n"] == 3
    assert scores["pointing_game_hit_rate"] == pytest.approx(1.0)
    assert 0.3 < scores["mean_energy_share"] <= 1.0
    # Explaining the other class puts the evidence outside the lesions.
    wrong = [Sample(path=s.path, label="benign", mask_path=s.mask_path) for s in samples]
    assert localisation_scores(region_bundle, wrong)["pointing_game_hit_rate"] == 0.0


def test_a_lesion_smaller_than_an_input_pixel_does_not_vanish() -> None:
    scan = Scan(array=np.zeros((1, 64, 64), np.float32), spacing_mm=(1, 1, 1), intensity="unit")
    mask = np.zeros((1, 64, 64), dtype=bool)
    mask[0, 33, 41] = True  # one native pixel: a quarter of an input pixel at 32 px
    grid = mask_on_input_grid(mask, scan, DataConfig(image_size=32))
    assert grid.sum() >= 1
    assert grid[15:18, 19:22].any()  # near (33 / 2, 41 / 2)
    assert not mask_on_input_grid(np.zeros_like(mask), scan, DataConfig(image_size=32)).any()
