"""The 3D progression GAN (`gan.spatial_dims: 3`): the ruler in 3D, `evaluate_gan` on LungSim
volumes, and `simulate` writing the rendered volumes."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from gan_builders import LESION_HU, LUNG_HU, write_untrained_classifier
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.config import DataConfig
from lungcancer.errors import DatasetError
from lungcancer.io import read_image
from lungcancer.progression.fidelity import evaluate_gan
from lungcancer.progression.metrics import roi_disc, score_patch, segment_lesion
from lungcancer.progression.pairs import lesion_views_from_index
from lungcancer.progression.patches import HUWindow, disc_mask
from lungcancer.progression.simulate import simulate
from lungcancer.progression.spread import tumour_guard
from lungcancer.progression.timeline import SimulationError
from lungcancer.progression.training import patient_splits, train_gan

WINDOW = HUWindow()
SPLIT = DataConfig(test_fraction=0.35, val_fraction=0.15, seed=0)


def _ball(diameter_mm: float, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ball lesion at the centre of a noisy lung-like cube (1 mm voxels); (HU, mask)."""
    rng = np.random.default_rng(seed)
    image = LUNG_HU + 20.0 * rng.standard_normal((size,) * 3).astype(np.float32)
    centre = ((size - 1) / 2,) * 3
    mask = disc_mask((size,) * 3, centre, diameter_mm, (1.0, 1.0, 1.0))
    image[mask] = LESION_HU
    return image, mask


def test_the_roi_of_a_3d_patch_is_a_ball() -> None:
    ball = roi_disc(33, 1.0, 10.0, ndim=3)
    assert ball.shape == (33, 33, 33)
    # A ball of radius 10 voxels holds about 4/3 pi r^3 of them; a disc stacked 33 deep would
    # hold 33 pi r^2 (over 2.4 times as many).
    assert ball.sum() == pytest.approx(4 / 3 * np.pi * 10**3, rel=0.03)
    assert ball[16, 16, 16] and not ball[0, 16, 16] and ball[6, 16, 16]
    np.testing.assert_array_equal(ball[16], roi_disc(33, 1.0, 10.0))


def test_the_ruler_scores_3d_lesions_like_2d_ones() -> None:
    before, before_mask = _ball(10.0)
    after, after_mask = _ball(20.0, seed=1)
    source, target = WINDOW.to_unit(before), WINDOW.to_unit(after)
    common = {
        "source_diameter_mm": 10.0,
        "target_diameter_mm": 20.0,
        "patch_spacing_mm": 1.0,
        "window_low_hu": WINDOW.low_hu,
        "window_high_hu": WINDOW.high_hu,
    }
    perfect = score_patch(target, source, target, after_mask, before_mask, **common)
    assert perfect.dice_same_ruler == 1.0 and perfect.diameter_error_same_ruler_mm == 0.0
    assert perfect.dice > 0.95 and perfect.diameter_error_mm < 1.5
    unchanged = score_patch(source, source, target, after_mask, before_mask, **common)
    assert unchanged.identity_ssim == pytest.approx(1.0)
    assert unchanged.diameter_error_mm == pytest.approx(10.0, abs=1.5)
    # A 10 mm ball inside a 20 mm one: (1/2)^3 of the volume, Dice 2 x 1/8 / (1 + 1/8).
    assert unchanged.dice == pytest.approx(2 * 0.125 / 1.125, abs=0.05)


def test_a_hollow_3d_lesion_is_found_off_centre() -> None:
    shell, _ = _ball(16.0)
    shell[disc_mask(shell.shape, (15.5, 15.5, 15.5), 8.0, (1.0, 1.0, 1.0))] = LUNG_HU
    found = segment_lesion(shell, roi_disc(32, 1.0, 12.0, ndim=3), -400.0)
    assert found.any() and not found[16, 16, 16]
    assert found.sum() == (shell > -400.0).sum()


@pytest.fixture(scope="module")
def lungsim_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny longitudinal LungSim set of volumes (12 patients, months 0 and 12, 64x64x16)."""
    from lungcancer.synth.api import SynthConfig, generate

    out = tmp_path_factory.mktemp("lungsim3d")
    cfg = SynthConfig(
        patients=12,
        timepoints_months=(0.0, 12.0),
        size=64,
        dims=3,
        depth=16,
        slice_thickness_mm=3.0,
        previews=False,
    )
    generate(cfg, out)
    return out


@pytest.fixture(scope="module")
def gan3d(lungsim_volumes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gan_builders import tiny_config

    cfg = dataclasses.replace(
        tiny_config(),
        spatial_dims=3,
        patch_size=16,
        levels=2,
        batch_size=2,
        steps=2,
        data=str(lungsim_volumes),
        out_dir=str(tmp_path_factory.mktemp("gan3d")),
    )
    return train_gan(cfg, SPLIT, progress=False).checkpoint


def test_a_3d_gan_refuses_slices(tmp_path: Path) -> None:
    from lungcancer.synth.api import SynthConfig, generate

    slices = tmp_path / "slices"
    generate(SynthConfig(patients=4, size=64, off_centre_slices=0, previews=False), slices)
    with pytest.raises(DatasetError, match="3D GAN needs volumes") as refused:
        lesion_views_from_index(slices, ("I", "II", "III", "IV"), spatial_dims=3)
    assert "spatial_dims: 2" in str(refused.value)
    assert lesion_views_from_index(slices, ("I", "II", "III", "IV"), spatial_dims=2)


def test_evaluate_scores_a_3d_gan_on_held_out_volumes(
    lungsim_volumes: Path, gan3d: Path, tmp_path: Path
) -> None:
    classifier = write_untrained_classifier(tmp_path / "classifier.pt")
    result = evaluate_gan(
        gan3d,
        lungsim_volumes,
        classifier=classifier,
        months=12.0,
        data_cfg=SPLIT,
        out_dir=tmp_path / "eval",
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test_patients = set(patient_splits(lungsim_volumes, SPLIT)["test"])
    assert 1 <= result.n_pairs <= len(test_patients)
    methods = metrics["methods"]
    assert methods["true_future"]["dice_same_ruler"] == 1.0
    assert methods["no_change"]["identity_ssim"] == pytest.approx(1.0)
    # Every malignant LungSim lesion grows by month 12: copying the input misses the growth.
    assert methods["no_change"]["diameter_mae_mm"] > methods["geometric_growth"]["diameter_mae_mm"]
    assert 0.0 < methods["gan"]["dice"] <= 1.0
    # The 2D classifier scores the slice through each frame's lesion; the nodes and M1a
    # findings the true future adds are drawn on that slice, and the lesion-only frames kept.
    assert set(metrics["stage_fidelity"]) == {
        "gan",
        "no_change",
        "geometric_growth",
        "true_future",
        "gan_lesion_only",
        "geometric_growth_lesion_only",
    }
    spread = metrics["spread"]
    assert spread["drawn"] is True and "3D GAN" in spread["how"]
    assert spread["pairs_with_spread"] + spread["pairs_without_two_lungs"] <= result.n_pairs
    assert (tmp_path / "eval" / "examples.png").exists()
    config = tmp_path / "split.yaml"
    config.write_text("data:\n  test_fraction: 0.35\n  val_fraction: 0.15\n  seed: 0\n")
    args = ["gan", "evaluate", str(gan3d), "--data", str(lungsim_volumes), "--config", str(config)]
    shown = CliRunner().invoke(app, [*args, "--classifier", str(classifier)])
    assert shown.exit_code == 0, shown.output
    assert "no nodes or M1a findings drawn" not in shown.output


def _early_stage_volume(data: Path) -> tuple[Path, Path]:
    """The month-0 volume and mask of the first stage I or II patient of a LungSim set."""
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["stage"] in ("I", "II") and r["time_point"] == "0.0")
    return data / row["path"], data / row["mask_path"]


def test_simulate_with_a_3d_gan_writes_the_rendered_volumes(
    lungsim_volumes: Path, gan3d: Path, tmp_path: Path
) -> None:
    image, mask = _early_stage_volume(lungsim_volumes)
    result = simulate(gan3d, image, mask=mask, months=(0.0, 6.0, 12.0), out_dir=tmp_path / "sim")
    scan = read_image(image)
    z = round(result.lesion.center_zyx[0])
    assert len(result.volumes_hu) == 3
    for volume, frame in zip(result.volumes_hu, result.frames_hu, strict=True):
        assert volume.shape == scan.shape
        np.testing.assert_array_equal(frame, volume[z])
    np.testing.assert_array_equal(result.volumes_hu[0], scan.array)
    # The rendered change is local: slices far above and below the lesion are the input's.
    changed = np.nonzero(np.abs(result.volumes_hu[2] - scan.array).max(axis=(1, 2)) > 0)[0]
    assert changed.size and z in changed
    written = read_image(result.files["volumes"] / "month_12.nrrd")
    assert written.shape == scan.shape and written.spacing_mm == pytest.approx(scan.spacing_mm)
    assert written.origin_xyz_mm == pytest.approx(scan.origin_xyz_mm)
    np.testing.assert_allclose(written.array, result.volumes_hu[2], atol=1e-3)
    # The slices through the lesion are written as before, one per month.
    assert sorted(p.name for p in (tmp_path / "sim" / "frames").iterdir()) == [
        "month_0.nrrd",
        "month_12.nrrd",
        "month_6.nrrd",
    ]


def test_simulate_with_a_3d_gan_draws_spread_through_the_volume(
    lungsim_volumes: Path, gan3d: Path, tmp_path: Path
) -> None:
    image, mask = _early_stage_volume(lungsim_volumes)
    common = {"mask": mask, "months": (0.0, 12.0)}
    # M1a held from month 0: the GAN renders month 12 at stage IV as with the schedule, and
    # nothing is drawn (N and M never rise), so the two differ by the drawn findings alone.
    plain = simulate(gan3d, image, **common, m="M1a")
    spread = simulate(gan3d, image, **common, spread=((12.0, "M1a"),), m1a_kind="both")
    assert plain.timeline[1].stage == "IV"
    assert spread.timeline[1].m == "M1a" and spread.timeline[1].stage == "IV"
    z = round(spread.lesion.center_zyx[0])
    np.testing.assert_array_equal(spread.volumes_hu[0], plain.volumes_hu[0])
    changed = np.abs(spread.volumes_hu[1] - plain.volumes_hu[1]) > 1e-3
    slices = np.nonzero(changed.any(axis=(1, 2)))[0]
    # Fluid on every slice below its top and a 8-18 mm nodule: more than the lesion's slice.
    assert z in slices and slices.size >= 3
    np.testing.assert_array_equal(spread.frames_hu[1], spread.volumes_hu[1][z])
    assert any("through the volume" in n for n in spread.notes)
    month_12 = next(n for n in spread.notes if n.startswith("from month 12: drew"))
    assert "M1a effusion" in month_12 and "M1a nodule" in month_12
    # Nothing is drawn over the tumour grown to month 12's size.
    lesion = read_image(mask).array > 0
    scale = spread.timeline[1].diameter_mm / spread.lesion.diameter_mm
    spacing = read_image(image).spacing_mm
    guard = tumour_guard(lesion, spread.lesion.center_zyx, scale, spacing)
    assert guard.sum() > 0 and not (changed & guard).any()
    # From a point and a diameter (no mask) the lesion is found in 3D and spread drawn too.
    pointed = simulate(
        gan3d,
        image,
        point_zyx=spread.lesion.center_zyx,
        diameter_mm=spread.lesion.diameter_mm,
        months=(0.0, 12.0),
        spread=((12.0, "M1a"),),
    )
    assert pointed.volumes_hu[1].shape == spread.volumes_hu[1].shape
    assert any(n.startswith("from month 12: drew M1a effusion") for n in pointed.notes)
    # A volume whose slices do not run along the body is refused, with the reason.
    sagittal = dataclasses.replace(
        read_image(image), direction_xyz=(0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)
    )
    with pytest.raises(SimulationError, match="axial volumes"):
        simulate(gan3d, sagittal, mask=lesion, months=(0.0, 12.0), spread=((12.0, "M1a"),))
