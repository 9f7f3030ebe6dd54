"""The training loop on tiny disc-growth pairs: it learns, it checkpoints, it resumes safely."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gan_builders import LESION_HU, LUNG_HU, disc_series, disc_view

from lungcancer.config import GanConfig
from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.models.gan import ROI_FEATHER_MM, lesion_roi, radial_grid
from lungcancer.progression import loop
from lungcancer.progression.checkpoint import gan_geometry, load_gan, read_gan_checkpoint
from lungcancer.progression.fidelity import render_baseline, render_gan
from lungcancer.progression.loop import training_loop
from lungcancer.progression.metrics import lesion_threshold_hu
from lungcancer.progression.pairs import LesionView, PatchSet, longitudinal_pairs, make_patch_set
from lungcancer.progression.patches import HUWindow, disc_mask
from lungcancer.progression.training import check_gan_config


def _pairs(cfg: GanConfig, n_patients: int = 8, identity: bool = False) -> PatchSet:
    pairs = longitudinal_pairs(disc_series(n_patients), include_identity=identity)
    return make_patch_set(pairs, cfg.stages, gan_geometry(cfg), HUWindow())


def test_a_few_steps_reduce_the_paired_l1_toward_the_true_future(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(
        tiny_gan_cfg, steps=30, lr_g=3e-3, ema_beta=0.5, lambda_adv=0.1, batch_size=12, log_every=6
    )
    pairs = _pairs(cfg, n_patients=6)
    # The untrained generator returns the geometric prior; the future lesions are also denser,
    # which only training can learn.
    prior = render_baseline("geometric_growth", pairs)
    prior_l1 = float(np.abs(prior - pairs.target).mean())
    result = training_loop(cfg, pairs, pairs, tmp_path, progress=False)
    assert result.val_l1 is not None
    assert result.val_l1 < 0.93 * prior_l1
    logged = [json.loads(line) for line in result.log.read_text().splitlines()]
    assert [row["step"] for row in logged] == [6, 12, 18, 24, 30]
    logged_terms = {"d_hinge", "g_adv", "l1", "ssim", "lesion_l1", "size_px", "diameter_px", "dice"}
    assert logged_terms | {"r1"} <= set(logged[-1])
    assert result.samples and result.samples[-1].is_file()
    # The learned residual is really there, inside the lesion ROI only.
    rendered = render_gan(load_gan(result.checkpoint), pairs)
    radial = radial_grid(rendered.shape[2:], torch.device("cpu"), torch.float32)
    roi = lesion_roi(
        radial,
        torch.from_numpy(pairs.source_size),
        torch.from_numpy(pairs.target_size),
        torch.from_numpy(pairs.spacing_mm),
        feather_mm=ROI_FEATHER_MM,
    ).numpy()
    change = np.abs(rendered - prior)
    assert change[roi > 0].max() > 0.05
    assert change[roi == 0].max() == 0.0


def test_checkpoint_round_trip_and_resume(tiny_gan_cfg: GanConfig, tmp_path: Path) -> None:
    pairs = _pairs(tiny_gan_cfg, n_patients=3)
    first = training_loop(
        tiny_gan_cfg, pairs, None, tmp_path, train_patients=("p0",), progress=False
    )
    assert first.steps == 4
    payload = read_gan_checkpoint(first.checkpoint)
    assert payload["format"] == "lungcancer-gan"
    assert {"G", "G_ema", "D", "opt_g", "opt_d", "versions", "window"} <= set(payload)
    assert payload["train_patients"] == ["p0"]
    loaded = load_gan(first.checkpoint, patch_size=32, stages=("I", "II", "III", "IV"))
    assert loaded.step == 4 and loaded.window == HUWindow(-1000.0, 400.0)
    x = torch.from_numpy(pairs.source[:2])
    args = (
        torch.tensor([1, 2]),
        torch.tensor([0.4, 0.5]),
        torch.tensor([0.3, 0.3]),
        torch.tensor([1.0, 1.5]),
    )
    again = load_gan(first.checkpoint)
    assert torch.equal(loaded.generator(x, x, *args), again.generator(x, x, *args))
    resumed = training_loop(
        dataclasses.replace(tiny_gan_cfg, steps=6, resume=True),
        pairs,
        None,
        tmp_path,
        progress=False,
    )
    assert resumed.steps == 6
    assert read_gan_checkpoint(resumed.checkpoint)["step"] == 6


def test_a_checkpoint_for_another_patch_size_or_stage_set_is_refused(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    pairs = _pairs(tiny_gan_cfg, n_patients=2)
    result = training_loop(
        dataclasses.replace(tiny_gan_cfg, steps=1), pairs, None, tmp_path, progress=False
    )
    with pytest.raises(CheckpointError, match="another patch size") as info:
        load_gan(result.checkpoint, patch_size=64)
    assert "--patch 32" in str(info.value)
    with pytest.raises(CheckpointError, match="another stage"):
        load_gan(result.checkpoint, stages=("IA", "IB"))
    bigger = dataclasses.replace(tiny_gan_cfg, patch_size=64, resume=True)
    with pytest.raises(CheckpointError, match="another patch size"):
        training_loop(bigger, _pairs(bigger, n_patients=2), None, tmp_path, progress=False)


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "classifier.pt"
    torch.save({"format": "lungcancer-classifier"}, foreign)
    with pytest.raises(CheckpointError, match="not a progression-GAN checkpoint"):
        load_gan(foreign)
    unsafe = tmp_path / "unsafe.pt"
    # Any object other than tensors and plain values needs code to rebuild: refused.
    torch.save({"format": "lungcancer-gan", "payload": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="safe checkpoint"):
        load_gan(unsafe)
    with pytest.raises(CheckpointError, match="not found"):
        load_gan(tmp_path / "missing.pt")


def test_unpaired_mode_trains_with_classifier_cycle_and_identity_losses(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(tiny_gan_cfg, mode="unpaired", steps=2, log_every=1)
    views = disc_series(4, months=(0.0, 12.0))
    singles = make_patch_set([(v, v) for v in views], cfg.stages, gan_geometry(cfg), HUWindow())
    result = training_loop(cfg, singles, None, tmp_path, progress=False)
    logged = json.loads(result.log.read_text().splitlines()[-1])
    for key in ("d_cls", "g_cls", "cycle", "identity", "size_px", "diameter_px"):
        assert np.isfinite(logged[key])
    assert read_gan_checkpoint(result.checkpoint)["gan_config"]["mode"] == "unpaired"


def test_configs_that_cannot_train_are_refused_with_the_key(tiny_gan_cfg: GanConfig) -> None:
    with pytest.raises(ConfigError, match="patch_size"):
        check_gan_config(dataclasses.replace(tiny_gan_cfg, patch_size=30))
    with pytest.raises(ConfigError, match="DiffAugment"):
        check_gan_config(dataclasses.replace(tiny_gan_cfg, augment=("brightness",)))
    with pytest.raises(ConfigError, match=r"gan\.mode"):
        check_gan_config(dataclasses.replace(tiny_gan_cfg, mode="cyclegan"))
    with pytest.raises(ConfigError, match="discriminator's depth") as refused:
        check_gan_config(dataclasses.replace(tiny_gan_cfg, patch_size=16, d_layers=3))
    assert "at least 24" in str(refused.value) and "d_layers to 2" in str(refused.value)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_patch_and_discriminator_depth_the_check_accepts_runs(
    tiny_gan_cfg: GanConfig, spatial_dims: int
) -> None:
    from lungcancer.progression.checkpoint import build_discriminator

    for d_layers in (1, 2, 3):
        for patch in (16, 24, 32):
            cfg = dataclasses.replace(
                tiny_gan_cfg, patch_size=patch, d_layers=d_layers, levels=2,
                spatial_dims=spatial_dims,
            )  # fmt: skip
            try:
                check_gan_config(cfg)
            except ConfigError:
                assert patch < 3 * 2**d_layers
                continue
            pair = torch.zeros((1, 2) + (patch,) * spatial_dims)
            logits, _ = build_discriminator(cfg)(pair, torch.zeros(1, dtype=torch.long))
            assert logits.shape[2:] and torch.isfinite(logits).all()


def test_the_size_terms_read_a_ground_glass_lesion_like_the_ruler(tiny_gan_cfg: GanConfig) -> None:
    # A -700 HU ground-glass lesion growing from 8 to 12 mm; the future *scan* also has a dense
    # vessel stub beside the lesion that is not in its lesion mask (the patient lay differently).
    cfg = dataclasses.replace(tiny_gan_cfg, size_target="mask", lambda_dice=1.0)
    src = disc_view(8.0, "p0", 0.0, size=40, lesion_hu=-700.0)
    tgt = disc_view(12.0, "p0", 12.0, size=40, lesion_hu=-700.0)
    patches = make_patch_set([(src, tgt)], cfg.stages, gan_geometry(cfg), HUWindow())
    trainer = loop._Trainer(cfg, torch.device("cpu"), bf16=False)
    data = loop._as_tensors(patches, torch.device("cpu"), trainer.window)
    threshold_hu = lesion_threshold_hu(
        trainer.window.to_hu(patches.source[0, 0]), patches.source_mask[0, 0]
    )
    assert threshold_hu < -700.0  # a fixed -400 HU cut would not see this lesion at all
    assert float(data["threshold_unit"][0]) == pytest.approx(
        trainer.window.unit_threshold(threshold_hu)
    )
    batch = loop._Batch(data)
    true_future = batch.target.clone()
    centre = cfg.patch_size // 2
    batch.target[..., centre - 1 : centre + 1, centre + 8 : centre + 10] = 0.0
    roi = loop._lesion_roi(batch, cfg.patch_size)
    assert float(roi[..., centre, centre + 9]) == 1.0  # the stub lies inside the lesion ROI
    size, diameter, dice = trainer._size_terms(batch, true_future, roi, batch.target_size)
    grown_px = float(batch.target_size[0]) * cfg.patch_size
    assert float(size) < 0.5
    assert float(diameter) < 1.0
    assert dice is not None
    dice_true = float(dice)
    # The unchanged input is 4 mm (4 px) too small, and all three terms say so.
    size, diameter, dice = trainer._size_terms(batch, batch.source.clone(), roi, batch.target_size)
    assert float(diameter) == pytest.approx(grown_px - 8.0, abs=1.0)
    assert float(size) > 2.0
    assert dice is not None and float(dice) > 1.5 * dice_true


def _with_rim(view: LesionView, diameter_mm: float) -> LesionView:
    """The view with a soft rim (above the half-way threshold) out to `diameter_mm`, outside
    its mask: a lesion edge blurred past the mask, as LungSim's are."""
    rim = disc_mask(view.mask.shape, view.center, diameter_mm, (1.0, 1.0)) & ~view.mask
    hu = np.where(rim, (LESION_HU + LUNG_HU) / 2 + 80.0, view.image_hu)
    return dataclasses.replace(view, image_hu=hu)


def test_calibrated_size_targets_add_the_rulers_overshoot_on_the_input(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    """`size_target: calibrated` aims the lesion where the ruler reads a real one of the target
    size: an input with a 1 px soft rim outside its mask reads 2 px over its recorded
    diameter, so a rendering of exactly the future's mask now falls short by those 2 px, and
    the same rendering with the rim added is on target."""
    src = _with_rim(disc_view(8.0, "p0", 0.0, size=40), 10.0)
    tgt = disc_view(12.0, "p0", 12.0, size=40)
    by_target = {}
    for target in ("mask", "calibrated"):
        cfg = dataclasses.replace(tiny_gan_cfg, size_target=target, lambda_dice=1.0)
        patches = make_patch_set([(src, tgt)], cfg.stages, gan_geometry(cfg), HUWindow())
        trainer = loop._Trainer(cfg, torch.device("cpu"), bf16=False)
        data = loop._as_tensors(
            patches, torch.device("cpu"), trainer.window, ruler_excess=target == "calibrated"
        )
        assert ("ruler_excess_px" in data) == (target == "calibrated")
        if target == "calibrated":
            assert float(data["ruler_excess_px"][0]) == pytest.approx(2.0, abs=0.5)
        batch = loop._Batch(data)
        roi = loop._lesion_roi(batch, cfg.patch_size)
        with_rim = batch.target.clone()
        grown_rim = loop._grow_masks(batch.target_mask, torch.ones(1)) > batch.target_mask
        with_rim[grown_rim] = trainer.window.unit_threshold(LESION_HU)
        by_target[target] = [
            float(trainer._size_terms(batch, rendered, roi, batch.target_size)[1])
            for rendered in (batch.target.clone(), with_rim)
        ]
    exact, rimmed = by_target["mask"]
    assert exact < 1.0 < rimmed  # the mask target wants the future's mask, no rim
    exact, rimmed = by_target["calibrated"]
    assert rimmed < 1.0 < exact  # the calibrated one wants the rim a real lesion has
    with pytest.raises(ConfigError, match="size_target"):
        check_gan_config(dataclasses.replace(tiny_gan_cfg, size_target="disc"))
    # The training loop measures the overshoot itself when the option asks for it.
    cfg = dataclasses.replace(tiny_gan_cfg, size_target="calibrated", steps=2, log_every=1)
    result = training_loop(cfg, _pairs(cfg, n_patients=2), None, tmp_path, progress=False)
    assert result.steps == 2


def test_future_size_targets_read_the_true_future_near_its_lesion(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    """`size_target: future` aims at the true future scan read as the rendering is read. A
    future whose blurred edge reaches a pixel past its mask pays nothing for it, where the mask
    targets make it pay (what drew 3D lesions small); a rendering of the bare mask now falls
    short; a vessel stub in the ROI beyond the lesion's margin moves no target."""
    src = disc_view(8.0, "p0", 0.0, size=40)
    tgt = _with_rim(disc_view(12.0, "p0", 12.0, size=40), 14.0)
    terms = {}
    for target in ("mask", "future"):
        cfg = dataclasses.replace(tiny_gan_cfg, size_target=target, lambda_dice=1.0)
        patches = make_patch_set([(src, tgt)], cfg.stages, gan_geometry(cfg), HUWindow())
        trainer = loop._Trainer(cfg, torch.device("cpu"), bf16=False)
        batch = loop._Batch(loop._as_tensors(patches, torch.device("cpu"), trainer.window))
        trainer.set_prior(batch, batch.target_size)
        roi = loop._lesion_roi(batch, cfg.patch_size)
        true_future = batch.target.clone()
        bare = true_future.clone()
        bare[loop._grow_masks(batch.target_mask, torch.ones(1)) > batch.target_mask] = (
            trainer.window.unit_threshold(LUNG_HU)
        )
        terms[target] = [
            [float(t) for t in trainer._size_terms(batch, rendered, roi, batch.target_size)]
            for rendered in (true_future, bare)
        ]
        if target == "future":
            # A stub of lesion density in the ROI, 3 px beyond the future's rim.
            centre = cfg.patch_size // 2
            stub = (..., slice(centre - 1, centre + 1), slice(centre + 10, centre + 12))
            assert float(roi[stub].min()) == 1.0
            batch.target[stub] = trainer.window.unit_threshold(LESION_HU)
            size, diameter, _ = trainer._size_terms(batch, true_future, roi, batch.target_size)
            assert float(size) == pytest.approx(0.0, abs=1e-4)
            assert float(diameter) == pytest.approx(0.0, abs=1e-4)
    (truth_size, truth_diameter, truth_dice), (_, bare_diameter, _) = terms["mask"]
    assert truth_diameter > 1.5 and bare_diameter < 1.0  # the mask target wants the bare mask
    assert truth_size > 0.5
    (truth_size, truth_diameter, truth_dice_future), (bare_size, bare_diameter, _) = terms["future"]
    assert truth_size == pytest.approx(0.0, abs=1e-4)
    assert truth_diameter == pytest.approx(0.0, abs=1e-4)
    assert truth_dice_future < truth_dice
    assert bare_diameter > 1.5 and bare_size > 0.5  # the bare mask now falls short
    with pytest.raises(ConfigError, match="size_target: future"):
        check_gan_config(dataclasses.replace(tiny_gan_cfg, size_target="future", mode="unpaired"))
    # The default, auto, is future when paired and the disc of the mask target unpaired.
    assert tiny_gan_cfg.size_target == "auto"
    assert loop.size_target(tiny_gan_cfg) == "future"
    assert loop.size_target(dataclasses.replace(tiny_gan_cfg, mode="unpaired")) == "mask"
    check_gan_config(dataclasses.replace(tiny_gan_cfg, mode="unpaired"))
    cfg = dataclasses.replace(tiny_gan_cfg, size_target="future", steps=2, log_every=1)
    result = training_loop(cfg, _pairs(cfg, n_patients=2), None, tmp_path, progress=False)
    assert result.steps == 2


def test_the_discriminator_margin_reports_whether_the_adversarial_term_engaged(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    # The margin is 2 minus the late hinge loss: 0 for a discriminator that says the same of
    # real and generated patches, positive once it separates them.
    assert loop.discriminator_margin([]) is None
    assert loop.discriminator_margin([2.0, 1.2, 2.0, 2.0]) == pytest.approx(0.0)
    assert loop.discriminator_margin([2.0, 2.0, 1.9, 1.7]) == pytest.approx(0.2)
    # A weak adversarial weight: with the default one the generator fights back, and over 40
    # steps it can push the hinge loss past 2 (a negative margin); this test is about D.
    base = dataclasses.replace(
        tiny_gan_cfg, steps=40, log_every=4, lr_d=2e-3, r1_every=1, lambda_adv=0.2
    )
    pairs = _pairs(base, n_patients=6)
    margins = {}
    for gamma in (0.0, 1e4):
        cfg = dataclasses.replace(base, r1_gamma=gamma)
        result = training_loop(cfg, pairs, None, tmp_path / f"r1_{gamma:g}", progress=False)
        assert result.d_margin is not None
        margins[gamma] = result.d_margin
    # A very strong R1 penalty flattens the discriminator (the failure the margin flags);
    # without it the same discriminator separates real from generated pairs.
    assert margins[1e4] < loop.INERT_D_MARGIN < margins[0.0]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    # Every step draws its batch, targets and augmentation from its own seeded generators, and
    # the checkpoint holds both optimizers and the average: stopping and resuming changes
    # nothing (what the 3D GAN's 600 -> 2000-step run in the README relies on).
    pairs = _pairs(tiny_gan_cfg, n_patients=3)
    straight = training_loop(
        dataclasses.replace(tiny_gan_cfg, steps=6), pairs, None, tmp_path / "a", progress=False
    )
    halfway = training_loop(
        dataclasses.replace(tiny_gan_cfg, steps=3), pairs, None, tmp_path / "b", progress=False
    )
    at_3 = read_gan_checkpoint(halfway.checkpoint)
    resumed = training_loop(
        dataclasses.replace(tiny_gan_cfg, steps=6, resume=True),
        pairs,
        None,
        tmp_path / "b",
        progress=False,
    )
    a, b = read_gan_checkpoint(straight.checkpoint), read_gan_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 6 and at_3["step"] == 3
    # Steps 4-6 moved the weights, so equal weights at 6 say the resumed steps were the same.
    assert not torch.allclose(at_3["G"]["head.weight"], a["G"]["head.weight"])
    for player in ("G", "G_ema", "D"):
        for name, value in a[player].items():
            torch.testing.assert_close(b[player][name], value, rtol=1e-5, atol=1e-6, msg=name)
