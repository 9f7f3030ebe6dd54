"""Evaluation: baselines, the lesion ruler, and `evaluate_gan` on held-out LungSim patients."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from gan_builders import (
    LESION_HU,
    LUNG_HU,
    disc_view,
    write_untrained_checkpoint,
    write_untrained_classifier,
)
from typer.testing import CliRunner

from lungcancer.cli import app
from lungcancer.config import DataConfig, GanConfig
from lungcancer.errors import ConfigError, DatasetError
from lungcancer.progression.baselines import geometric_growth, no_change
from lungcancer.progression.checkpoint import gan_geometry
from lungcancer.progression.fidelity import (
    evaluate_gan,
    paired_lesion_gains,
    ruler_check,
    ruler_excess,
)
from lungcancer.progression.metrics import (
    LesionScores,
    background_tissue,
    lesion_threshold_hu,
    roi_disc,
    ruler_on_inputs,
    score_patch,
    segment_lesion,
)
from lungcancer.progression.pairs import make_patch_set
from lungcancer.progression.patches import HUWindow, disc_mask, greatest_diameter_mm
from lungcancer.progression.training import patient_splits, train_gan

WINDOW = HUWindow()
SPLITS_SCORED = ("test", "val")


def test_geometric_growth_of_a_disc_reaches_the_target_diameter() -> None:
    view = disc_view(10.0, "p", 0.0, size=64)
    grown = geometric_growth(view.image_hu, view.mask, scale=2.0)
    lesion = grown > -400.0
    lesion[:, :8] = False  # the "vessel" column of the builder is not lesion
    measured = greatest_diameter_mm(lesion, (1.0, 1.0))
    assert measured == pytest.approx(greatest_diameter_mm(view.mask, (1.0, 1.0)) * 2, abs=1.5)
    # Outside the grown lesion the input is untouched.
    far = np.zeros_like(view.mask)
    far[:, :10] = True
    np.testing.assert_array_equal(grown[far], view.image_hu[far])
    assert not np.shares_memory(no_change(view.image_hu), view.image_hu)


def test_the_ruler_threshold_follows_the_lesion_density() -> None:
    solid = disc_view(12.0, "p", 0.0, size=48)
    assert lesion_threshold_hu(solid.image_hu, solid.mask) == pytest.approx(
        (LESION_HU + LUNG_HU) / 2, abs=15
    )
    ground_glass = np.where(solid.mask, -650.0, solid.image_hu)
    assert lesion_threshold_hu(ground_glass, solid.mask) == pytest.approx(
        (-650 + LUNG_HU) / 2, abs=15
    )


def test_segmentation_keeps_the_centre_lesion_and_leaves_out_the_chest_wall() -> None:
    view = disc_view(12.0, "p", 0.0, size=48)
    image = view.image_hu.copy()
    image[:, 40:] = 40.0  # a chest wall at the right edge
    threshold = lesion_threshold_hu(image, view.mask)
    background = background_tissue(image, view.mask, threshold)
    grown = disc_view(24.0, "p", 12.0, size=48)
    future = np.where(grown.mask, LESION_HU, image)
    roi = roi_disc(48, 1.0, 0.75 * 24 + 3)
    lesion = segment_lesion(future, roi, threshold, background)
    assert not lesion[:, 40:].any()
    assert not lesion[:, :8].any()  # the vessel is not connected
    expected = grown.mask & ~background
    assert (lesion & expected).sum() / expected.sum() > 0.97


def test_scores_of_the_true_future_are_perfect_and_no_change_misses_the_growth() -> None:
    before = disc_view(10.0, "p", 0.0, size=48)
    after = disc_view(20.0, "p", 12.0, size=48)
    source, target = WINDOW.to_unit(before.image_hu), WINDOW.to_unit(after.image_hu)
    common = {
        "source_diameter_mm": 10.0,
        "target_diameter_mm": 20.0,
        "patch_spacing_mm": 1.0,
        "window_low_hu": WINDOW.low_hu,
        "window_high_hu": WINDOW.high_hu,
    }
    perfect = score_patch(target, source, target, after.mask, before.mask, **common)
    assert perfect.dice_same_ruler == 1.0 and perfect.diameter_error_same_ruler_mm == 0.0
    assert perfect.dice > 0.95 and perfect.diameter_error_mm < 1.5
    unchanged = score_patch(source, source, target, after.mask, before.mask, **common)
    assert unchanged.identity_ssim == pytest.approx(1.0)
    assert unchanged.diameter_error_mm == pytest.approx(10.0, abs=1.5)
    assert unchanged.dice < 0.5


@pytest.fixture(scope="module")
def lungsim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny longitudinal LungSim set (16 patients, months 0 and 12, 64x64 slices)."""
    from lungcancer.synth.api import SynthConfig, generate

    out = tmp_path_factory.mktemp("lungsim")
    cfg = SynthConfig(
        patients=16, timepoints_months=(0.0, 12.0), size=64, off_centre_slices=0, previews=False
    )
    generate(cfg, out)
    return out


def test_evaluate_scores_gan_and_baselines_on_held_out_patients(
    lungsim: Path, tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    split = DataConfig(test_fraction=0.35, val_fraction=0.15, seed=0)
    cfg = dataclasses.replace(tiny_gan_cfg, data=str(lungsim), out_dir=str(tmp_path / "gan"))
    trained = train_gan(cfg, split, progress=False)
    classifier = write_untrained_classifier(tmp_path / "classifier.pt")
    result = evaluate_gan(
        trained.checkpoint,
        lungsim,
        classifier=classifier,
        months=12.0,
        data_cfg=split,
        out_dir=tmp_path / "eval",
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result.n_pairs == metrics["n_pairs"] >= 1
    assert set(metrics["methods"]) == {"gan", "no_change", "geometric_growth", "true_future"}
    assert metrics["methods"]["true_future"]["dice_same_ruler"] == 1.0
    assert metrics["methods"]["no_change"]["identity_ssim"] == pytest.approx(1.0)
    assert set(metrics["stage_fidelity"]) >= {"gan", "no_change", "geometric_growth"}
    assert {"dice", "diameter_mae_mm", "identity_ssim", "stage_fidelity"} <= set(metrics["targets"])
    assert "| gan |" in (tmp_path / "eval" / "metrics.md").read_text()
    # The lesion measures against geometric growth come with a paired interval and a verdict.
    gains = metrics["gan_vs_geometric_growth"]
    assert gains["n_pairs"] == result.n_pairs
    gan, geo = metrics["methods"]["gan"], metrics["methods"]["geometric_growth"]
    assert gains["dice_gain"] == pytest.approx(gan["dice"] - geo["dice"], abs=1e-9)
    assert gains["diameter_error_reduction_mm"] == pytest.approx(
        geo["diameter_mae_mm"] - gan["diameter_mae_mm"], abs=1e-9
    )
    assert metrics["targets"]["dice_beats_geometric_growth_ci95"] == (
        gains["dice_gain_ci95"][0] > 0
    )
    assert "Dice gain" in (tmp_path / "eval" / "metrics.md").read_text()
    # The ruler's own error on the unchanged inputs is reported beside the methods'.
    check = metrics["ruler_check"]
    assert 0.0 < check["dice"] <= 1.0 and check["diameter_mae_mm"] >= abs(check["diameter_bias_mm"])
    assert "Ruler check" in (tmp_path / "eval" / "metrics.md").read_text()
    # Calibrated, "no change" reads exactly the input's recorded diameter: the ruler's reading
    # of the copied input less its overshoot on that very input.
    unchanged = metrics["methods"]["no_change"]
    assert unchanged["diameter_bias_calibrated_mm"] == pytest.approx(
        unchanged["diameter_bias_mm"] - check["diameter_bias_mm"], abs=1e-9
    )
    assert "calibrated_diameter_error_reduction_mm_ci95" in gains
    assert "calibrated_diameter_beats_geometric_growth_ci95" in metrics["targets"]
    # Against the true future read by the same ruler, with its own interval and verdict.
    assert gains["same_ruler_diameter_error_reduction_mm"] == pytest.approx(
        geo["diameter_error_same_ruler_mm"] - gan["diameter_error_same_ruler_mm"], abs=1e-9
    )
    assert metrics["targets"]["same_ruler_diameter_beats_geometric_growth_ci95"] == (
        gains["same_ruler_diameter_error_reduction_mm_ci95"][0] > 0
    )
    # The report says what the true future is: here a rescan in its own pose.
    assert metrics["truth"] == {"followup_pose": "own", "followup_spread": True}
    assert "rescan in its own pose" in result.table
    with pytest.raises(DatasetError, match="month 0 and month 7"):
        evaluate_gan(trained.checkpoint, lungsim, months=7.0, data_cfg=split)
    # Settings are chosen on the validation patients, never on the test patients.
    val = evaluate_gan(trained.checkpoint, lungsim, months=12.0, data_cfg=split, split="val")
    val_patients = patient_splits(lungsim, split)["val"]
    assert val.metrics["split"] == "val" and val.metrics["heldout_patients"] == len(val_patients)
    assert val.n_pairs >= 1 and val.metrics["methods"] != result.metrics["methods"]
    assert "val split" in val.table
    with pytest.raises(ConfigError, match="split"):
        evaluate_gan(trained.checkpoint, lungsim, months=12.0, data_cfg=split, split="train")
    # The same through the CLI: `--split val` with the training split's settings from --config.
    config = tmp_path / "split.yaml"
    config.write_text("data:\n  test_fraction: 0.35\n  val_fraction: 0.15\n  seed: 0\n")
    args = ["gan", "evaluate", str(trained.checkpoint), "--data", str(lungsim)]
    args += ["--config", str(config), "--split", "val", "--json"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert printed["split"] == "val" and printed["methods"] == val.metrics["methods"]
    # Another split puts training patients into the evaluation set: refused.
    other = DataConfig(test_fraction=0.35, val_fraction=0.15, seed=3)
    with pytest.raises(DatasetError, match="trained on"):
        evaluate_gan(trained.checkpoint, lungsim, months=12.0, data_cfg=other)
    # "all" scores every patient of the data: refused here (the GAN trained on some of them),
    # with a hint to give an external set its own patient ids.
    with pytest.raises(DatasetError, match="id-prefix"):
        evaluate_gan(trained.checkpoint, lungsim, months=12.0, data_cfg=split, split="all")


def test_evaluate_draws_the_true_futures_spread_unless_told_not_to(
    lungsim: Path, tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    # An untrained checkpoint (trained on patient "p0" only, so no LungSim patient leaks).
    gan = write_untrained_checkpoint(tmp_path / "gan.pt", tiny_gan_cfg)
    classifier = write_untrained_classifier(tmp_path / "classifier.pt")
    config = tmp_path / "split.yaml"
    config.write_text("data:\n  test_fraction: 0.35\n  val_fraction: 0.15\n  seed: 0\n")
    args = ["gan", "evaluate", str(gan), "--data", str(lungsim), "--classifier", str(classifier)]
    args += ["--config", str(config), "--months", "12"]
    runner = CliRunner()
    for flags, out in (([], "on"), (["--no-spread"], "off")):
        shown = runner.invoke(app, [*args, *flags, "--out", str(tmp_path / out)])
        assert shown.exit_code == 0, shown.output
    on = json.loads((tmp_path / "on" / "metrics.json").read_text())
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    # Spread is on by default: some held-out pairs gain N or M by month 12 and get it drawn.
    assert on["spread"]["drawn"] is True and on["spread"]["pairs_with_spread"] >= 1
    assert off["spread"] == {"drawn": False}
    lesion_only = {"gan_lesion_only", "geometric_growth_lesion_only"}
    assert lesion_only <= set(on["stage_fidelity"]) and lesion_only <= set(on["realism"])
    assert not lesion_only & (set(off["stage_fidelity"]) | set(off["realism"]))
    # The lesion-only rows are the frames --no-spread scores; the lesion metrics never see spread.
    for method in ("gan", "geometric_growth"):
        assert on["stage_fidelity"][f"{method}_lesion_only"] == off["stage_fidelity"][method]
    assert on["stage_fidelity"]["no_change"] == off["stage_fidelity"]["no_change"]
    assert on["methods"] == off["methods"]
    assert "| gan_lesion_only |" in (tmp_path / "on" / "metrics.md").read_text()
    # Each method's FID beside geometric growth's, with a paired patient-bootstrap interval:
    # like with like, so the lesion-only GAN frames against geometric growth's lesion-only ones.
    expected_baseline = {
        "gan": "geometric_growth",
        "no_change": "geometric_growth",
        "gan_lesion_only": "geometric_growth_lesion_only",
    }
    for method, baseline in expected_baseline.items():
        r = on["realism"][method]
        assert r["fid_baseline"] == baseline
        assert r["fid_minus_geometric"] == pytest.approx(r["fid"] - on["realism"][baseline]["fid"])
        low, high = r["fid_minus_geometric_ci95"]
        assert low <= high
    for baseline in ("geometric_growth", "geometric_growth_lesion_only"):
        assert "fid_minus_geometric_ci95" not in on["realism"][baseline]
    for suffix in ("", "_lesion_only"):
        assert on["targets"][f"fid_beats_geometric_growth{suffix}_ci95"] == (
            on["realism"][f"gan{suffix}"]["fid_minus_geometric_ci95"][1] < 0
        )
    assert "fid_beats_geometric_growth_lesion_only" not in off["targets"]
    assert "against geometric_growth_lesion_only" in (tmp_path / "on" / "metrics.md").read_text()
    assert "paired patient resamples" in (tmp_path / "on" / "metrics.md").read_text()


def test_evaluate_all_scores_every_patient_of_an_external_set(
    lungsim: Path, tiny_gan_cfg: GanConfig, tmp_path: Path
) -> None:
    gan = write_untrained_checkpoint(tmp_path / "gan.pt", tiny_gan_cfg)  # trained on "p0" only
    split = DataConfig(test_fraction=0.35, val_fraction=0.15, seed=0)
    every = evaluate_gan(gan, lungsim, months=12.0, data_cfg=split, split="all")
    parts = [
        evaluate_gan(gan, lungsim, months=12.0, data_cfg=split, split=s) for s in SPLITS_SCORED
    ]
    assert every.metrics["heldout_patients"] == len(
        {p for ids in patient_splits(lungsim, split).values() for p in ids}
    )
    # Every patient with months 0 and 12: more pairs than the test and val splits together.
    assert every.n_pairs > sum(p.n_pairs for p in parts)
    assert "all split" in every.table


def _scores(dice: float, error_mm: float) -> LesionScores:
    return LesionScores(0.9, 30.0, dice, 10.0, error_mm, error_mm, dice, error_mm, 1.0)


def test_paired_lesion_gains_tell_a_steady_lead_from_noise() -> None:
    rng = np.random.default_rng(0)
    base = [_scores(0.90, 2.0) for _ in range(30)]
    # Better on every pair, by a little: the interval sits above zero.
    steady = [_scores(0.91, 1.5) for _ in range(30)]
    gains = paired_lesion_gains(steady, base)
    assert gains["dice_gain"] == pytest.approx(0.01)
    assert gains["diameter_error_reduction_mm"] == pytest.approx(0.5)
    assert gains["dice_gain_ci95"][0] > 0 and gains["diameter_error_reduction_mm_ci95"][0] > 0
    assert gains["dice_gain_better_worse_pairs"] == [30, 0]
    # The same mean lead carried by a few pairs among large swings: the interval holds zero.
    swings = rng.choice([-0.2, 0.2], size=30)
    noisy = [_scores(0.90 + 0.01 + d, 2.0) for d in swings - swings.mean()]
    noisy_gains = paired_lesion_gains(noisy, base)
    assert noisy_gains["dice_gain"] == pytest.approx(0.01)
    low, high = noisy_gains["dice_gain_ci95"]
    assert low < 0 < high
    assert "dice_gain_ci95" not in paired_lesion_gains(steady, base, n_boot=0)


def test_the_ruler_check_reads_a_sharp_lesion_exactly_and_a_soft_edge_as_larger(
    tiny_gan_cfg: GanConfig,
) -> None:
    """The ruler on the unchanged input: no error on a sharp disc; a 1 mm shell of
    partial-volume density outside the mask (above the half-way threshold) reads as lesion,
    as it does around LungSim's lesions."""
    sharp = [disc_view(12.0, f"p{i}", 0.0, size=40, seed=i) for i in range(3)]
    soft = []
    for view in sharp:
        shell = disc_mask(view.mask.shape, view.center, 14.0, (1.0, 1.0)) & ~view.mask
        image = np.where(shell, (LESION_HU + LUNG_HU) / 2 + 80.0, view.image_hu)
        soft.append(dataclasses.replace(view, image_hu=image.astype(np.float32)))
    geometry = gan_geometry(tiny_gan_cfg)
    checks = []
    for views in (sharp, soft):
        pairs = [(v, v) for v in views]
        patches = make_patch_set(pairs, tiny_gan_cfg.stages, geometry, WINDOW)
        diameters = np.array([v.diameter_mm for v in views])
        on_inputs = ruler_on_inputs(
            patches.source,
            patches.source_mask,
            diameters,
            diameters,
            patches.spacing_mm,
            (WINDOW.low_hu, WINDOW.high_hu),
        )
        checks.append(ruler_check(on_inputs, ruler_excess(pairs, on_inputs)))
    exact, wider = checks
    patch_pixel_mm = float(
        make_patch_set([(sharp[0], sharp[0])], tiny_gan_cfg.stages, geometry, WINDOW).spacing_mm[0]
    )
    assert abs(exact["diameter_bias_mm"]) <= patch_pixel_mm
    assert exact["dice"] > 0.9
    assert wider["diameter_bias_mm"] > exact["diameter_bias_mm"] + 1.0
    assert wider["diameter_mae_mm"] == pytest.approx(abs(wider["diameter_bias_mm"]))


def test_the_truth_kind_is_read_from_the_lungsim_config(tmp_path: Path) -> None:
    from lungcancer.config import save_configs
    from lungcancer.progression.fidelity import _truth_line, truth_kind
    from lungcancer.synth.api import SynthConfig

    twin = tmp_path / "twin"
    twin.mkdir()
    cfg = SynthConfig(followup_pose="baseline", followup_spread=False)
    save_configs(twin / "synth_config.yaml", synth=cfg)
    (twin / "manifest.csv").write_text("")
    for given in (twin, twin / "manifest.csv"):
        assert truth_kind(given) == {"followup_pose": "baseline", "followup_spread": False}
    assert "free of pose" in _truth_line(truth_kind(twin))
    assert "lesion alone" in _truth_line(truth_kind(twin))
    unknown = truth_kind(tmp_path)
    assert unknown["followup_pose"] == "unknown"
    assert "not a LungSim dataset" in _truth_line(unknown)


def test_the_median_bias_is_reported_beside_the_mean_for_heavy_tailed_ruler_errors() -> None:
    from lungcancer.progression.fidelity import _mean_scores, ruler_check

    # One ruler reading 10 mm off (a vessel root joined to the lesion) among exact ones.
    scores = [_scores(0.9, e) for e in (0.0, 0.0, 10.0)]
    excess = np.array([0.0, 0.0, 10.0])
    means = _mean_scores(scores, excess)
    assert means["diameter_bias_mm"] == pytest.approx(10.0 / 3)
    assert means["diameter_bias_median_mm"] == 0.0
    assert means["diameter_error_same_ruler_mm"] == pytest.approx(10.0 / 3)
    assert means["diameter_error_same_ruler_median_mm"] == 0.0
    assert ruler_check(scores, excess)["diameter_bias_median_mm"] == 0.0


def test_a_twins_split_file_keeps_every_patient_where_the_original_split_put_it(
    tmp_path: Path,
) -> None:
    # benchmarks/twin_split.py: the twin's own manifest would split otherwise (held spread
    # changes labels; a new pose moves the lesion centres that name samples).
    from lungcancer.data.splits import save_splits
    from lungcancer.synth.api import SynthConfig, generate

    path = Path(__file__).parents[2] / "benchmarks" / "twin_split.py"
    spec = importlib.util.spec_from_file_location("twin_split", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = dict(patients=10, timepoints_months=(0.0, 12.0), size=48, off_centre_slices=0)
    generate(SynthConfig(**base, previews=False), tmp_path / "original")
    twin_cfg = SynthConfig(**base, previews=False, followup_pose="baseline", followup_spread=False)
    generate(twin_cfg, tmp_path / "twin")
    split_cfg = DataConfig(test_fraction=0.3, val_fraction=0.2, seed=1)
    splits = module.twin_splits(str(tmp_path / "original"), str(tmp_path / "twin"), split_cfg)
    save_splits(splits, tmp_path / "twin_split.json")
    original = patient_splits(tmp_path / "original", split_cfg)
    twin = patient_splits(
        tmp_path / "twin", DataConfig(split_file=str(tmp_path / "twin_split.json"))
    )
    assert twin == original and all(original.values())
