"""Where the drawn effusion lies, against LungSim's own effusion painted on the same slice.

Usage:
    python benchmarks/spread_effusion_check.py [--patients 480] [--seed 51]

The patients are those of the calibration set (`lungcancer synth --out data/lungsim-spreadcal
--patients 480 --timepoints 0,12 --size 256 --off-centre-slices 0 --no-png --seed 51
--id-prefix cal`), rebuilt in memory. Each whose month-12 visit gains an effusion (M0 -> M1a,
shown as an effusion or both) gives one pair:

- truth: LungSim's month-12 effusion painted into the month-0 slice's own tissue labels (the
  patient's anatomy and pose at month 0, so no pose shift between visits enters), the fluid
  pixels exactly;
- drawn: `progression.spread`'s fluid region on the rendered month-0 slice, in the lung field
  on LungSim's side and at LungSim's depth, so that only *where* the renderer puts fluid for a
  given depth is compared (depth and side are random draws of the same distributions in both).

The fluid's depth and its thinning up the wall are measured about a centre. Three are scored:
the lungs' centroid (the renderer before this check), the body's centre as read from the image
(`spread._body_centre`, the renderer now) and LungSim's own polar origin (the exact answer,
which a real scan does not give). Dice and area against the truth, with a paired bootstrap of
Dice gained over the lungs' centroid. Nothing is fitted.

With `--hu`, the same pairs in Hounsfield units, free of pose: LungSim renders the month-0
slice again with the month-12 effusion in force (same anatomy, pose and noise), and
`draw_spread` draws the effusion on the month-0 slice at LungSim's side and depth. Over the
lung that changed, both are read with the turned-lung measures of
`spread_volume_check.py` (3 x 3 median: above -150 HU, at fluid density -20..+25 HU, between
-150 and -20 HU, and -600..-150 HU for the band of compressed lung), with the HU inside the
fluid (two pixels in from its edge), the mean absolute HU difference where either changed,
and a profile across the fluid's surface (mean HU by depth below it, in the renderer's own
depth, so LungSim's surface, a little off the renderer's, is blurred in that average).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import TypeVar
from unittest import mock

import numpy as np
from scipy import ndimage

from lungcancer.progression import spread
from lungcancer.synth import anatomy as an
from lungcancer.synth import visit
from lungcancer.synth.api import _TRUTH_STREAM, SynthConfig, class_plan, patient_id
from lungcancer.synth.case import PatientModel, build_patient
from lungcancer.synth.findings import paint_findings
from lungcancer.synth.fit import patient_grid, slice_zs
from lungcancer.synth.paint import label_slice, polar_fields
from lungcancer.synth.render import to_patient
from lungcancer.synth.truth import sample_truth
from lungcancer.synth.visit import render_visit, visit_state

T = TypeVar("T")
CENTRES = ("lungs' centroid", "body centre (renderer)", "LungSim's origin (exact)")


def _gains_effusion(cfg: SynthConfig, index: int, requested: str) -> PatientModel | None:
    """Patient `index` of `cfg`, when its month-12 visit gains an effusion (M0 -> M1a, shown as
    an effusion or both); else None."""
    truth_rng = np.random.default_rng(
        np.random.SeedSequence(cfg.seed, spawn_key=(index, _TRUTH_STREAM))
    )
    truth = sample_truth(requested, cfg.classes, truth_rng, cfg.difficulty())
    if truth.m_kind not in ("effusion", "both"):
        return None
    model = build_patient(
        patient_id(index, cfg.id_prefix),
        (cfg.seed, index),
        truth,
        cfg.render_settings(),
        cfg.timepoints_months,
    )
    if model.effusion is None or visit_state(model, 0.0).m != "M0":
        return None
    return model if visit_state(model, 12.0).m == "M1a" else None


def _pair(cfg: SynthConfig, index: int, requested: str) -> dict[str, tuple[float, float]] | None:
    """Dice and drawn/true area per centre for one patient, or None when it is not a pair."""
    model = _gains_effusion(cfg, index, requested)
    if model is None or model.effusion is None:
        return None
    settings = cfg.render_settings()
    sample = render_visit(model, 0, 0.0, 0.0, settings)[0]
    image = sample.image.array[0]
    spacing = (float(sample.image.spacing_mm[1]), float(sample.image.spacing_mm[2]))
    acq, pose = model.acquisition, model.poses[0]
    grid = patient_grid(model.anatomy, acq, settings.size)
    z_w = slice_zs(model.center_mm, settings, pose, acq.thickness_mm, model.offsets_mm[0])[0]
    xs, ys, z = to_patient(pose, grid.xs_w, grid.ys_w, float(z_w))
    x2, y2 = xs[np.newaxis, :], ys[:, np.newaxis]
    polar = polar_fields(model.anatomy, x2, y2)
    labels = label_slice(model.anatomy, xs, ys, z, polar)
    side = labels == model.effusion.side
    paint_findings(labels, x2, y2, z, polar, (), model.effusion)
    true_fluid = labels == an.EFFUSION
    lungs = spread._lungs(image)
    if len(lungs) < 2 or not true_fluid.any():
        return None
    lung = max(lungs, key=lambda m: int((m & side).sum()))
    rows, cols = np.nonzero(lungs[0] | lungs[1])
    origin = (
        float(np.interp(0.0, ys, np.arange(len(ys)))),
        float(np.interp(0.0, xs, np.arange(len(xs)))),
    )
    centres = (
        (float(rows.mean()), float(cols.mean())),
        spread._body_centre(image, spacing, fallback=lungs[0] | lungs[1]),
        origin,
    )
    out = {}
    pixel_mm2 = spacing[0] * spacing[1]
    for name, centre in zip(CENTRES, centres, strict=True):
        depth, gap = spread._effusion_depth_mm(lung, centre, spacing, model.effusion.thickness_mm)
        fluid = lung & (gap < depth)
        overlap = 2.0 * float((fluid & true_fluid).sum()) / float(fluid.sum() + true_fluid.sum())
        out[name] = (overlap, float(fluid.sum()) * pixel_mm2)
    out["truth"] = (1.0, float(true_fluid.sum()) * pixel_mm2)
    out["offset"] = (
        float(np.hypot(*((np.array(centres[0]) - origin) * spacing))),
        float(np.hypot(*((np.array(centres[1]) - origin) * spacing))),
    )
    return out


HU_COLUMNS = ("above -150", "fluid -20..+25", "-150..-20", "band -600..-150")
# Bin edges (mm below the drawn fluid's surface, along the ray; < 0 inside the fluid).
PROFILE_MM = np.arange(-3.0, 8.0, 1.0)


def _turned_mm2(before: np.ndarray, after: np.ndarray, pixel_mm2: float) -> np.ndarray:
    """Areas (mm2) of lung in `before` that `after` shows in each of HU_COLUMNS' ranges."""
    lung = ndimage.median_filter(before, size=3) < -500.0
    level = ndimage.median_filter(after, size=3)
    ranges = ((-150.0, np.inf), (-20.0, 25.0), (-150.0, -20.0), (-600.0, -150.0))
    areas = [(lung & (level > lo) & (level <= hi)).sum() for lo, hi in ranges]
    return np.array(areas, float) * pixel_mm2


def _hu_pair(cfg: SynthConfig, index: int, requested: str) -> dict[str, np.ndarray] | None:
    """`--hu`: LungSim's month-0 slice with the month-12 effusion against the drawn one."""
    model = _gains_effusion(cfg, index, requested)
    if model is None or model.effusion is None:
        return None
    settings = cfg.render_settings()
    before = render_visit(model, 0, 0.0, 0.0, settings)[0]
    # The same visit with M1a in force, shown as an effusion only (the contralateral nodule of
    # "both" would add tissue the renderer is not asked to draw here).
    fluid_only = dataclasses.replace(
        model, truth=dataclasses.replace(model.truth, m_kind="effusion")
    )
    with mock.patch.object(
        visit, "visit_state", lambda m, months: dataclasses.replace(visit_state(m, months), m="M1a")
    ):
        after = render_visit(fluid_only, 0, 0.0, 0.0, settings)[0]
    image, true_image = before.image.array[0], after.image.array[0]
    spacing = (float(before.image.spacing_mm[1]), float(before.image.spacing_mm[2]))
    changed = np.abs(ndimage.median_filter(true_image - image, size=3)) > 100.0
    lungs = spread._lungs(image)
    if len(lungs) < 2 or not changed.any():
        return None
    centre = ndimage.center_of_mass(before.mask[0] > 0)
    plan = spread.plan_spread(image, spacing, (float(centre[0]), float(centre[1])), seed=0)
    lung = max(lungs, key=lambda m: int((m & changed).sum()))
    thickness = model.effusion.thickness_mm
    depth, gap = spread._effusion_depth_mm(lung, plan.chest_centre_yx, spacing, thickness)
    plan = dataclasses.replace(
        plan,
        effusion_lung=lung,
        effusion_depth_mm=depth,
        wall_gap_mm=gap,
        effusion_thickness_mm=thickness,
    )
    drawn, _ = spread.draw_spread(image, plan, baseline=("N0", "M0"), target=("N0", "M1a"))
    pixel_mm2 = spacing[0] * spacing[1]
    inside = ndimage.binary_erosion(lung & (gap < depth), iterations=2)
    true_inside = ndimage.binary_erosion(
        changed & (ndimage.median_filter(true_image, size=3) > -100.0), iterations=2
    )
    if not inside.any() or not true_inside.any():
        return None
    either = changed | (np.abs(drawn - image) > 50.0)
    # Across the fluid's surface where it is deep: mean HU by depth below the surface.
    below_mm = np.where(lung, gap - depth, np.inf)
    across = lung & (depth > 10.0) & (below_mm >= PROFILE_MM[0]) & (below_mm < PROFILE_MM[-1])
    bins = np.digitize(below_mm[across], PROFILE_MM) - 1
    sums = np.zeros((2, len(PROFILE_MM) - 1))
    for row, im in enumerate((true_image, drawn)):
        sums[row] = np.bincount(bins, im[across], minlength=len(PROFILE_MM) - 1)
    counts = np.bincount(bins, minlength=len(PROFILE_MM) - 1)
    return {
        "true": _turned_mm2(image, true_image, pixel_mm2),
        "drawn": _turned_mm2(image, drawn, pixel_mm2),
        "inside": np.array(
            [
                true_image[true_inside].mean(),
                true_image[true_inside].std(),
                drawn[inside].mean(),
                drawn[inside].std(),
            ]
        ),
        "mae_hu": np.array([np.abs(drawn - true_image)[either].mean()]),
        "profile_sums": sums,
        "profile_counts": counts,
    }


def _config(patients: int, seed: int) -> SynthConfig:
    return SynthConfig(
        patients=patients,
        timepoints_months=(0.0, 12.0),
        size=256,
        off_centre_slices=0,
        seed=seed,
        id_prefix="cal",
        previews=False,
    )


def _measure(patients: int, seed: int, one: Callable[..., T | None]) -> list[T]:
    """`one(cfg, index, requested class)` for every stage patient; the pairs it returns."""
    cfg = _config(patients, seed)
    pairs = []
    for index, requested in enumerate(class_plan(cfg)):
        if requested.startswith("stage"):
            pair = one(cfg, index, requested)
            if pair is not None:
                pairs.append(pair)
    return pairs


def measure(patients: int, seed: int) -> list[dict[str, tuple[float, float]]]:
    """Every pair of a calibration-style set of `patients` (see the module docstring)."""
    return _measure(patients, seed, _pair)


def measure_hu(patients: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`--hu` for every pair (see the module docstring)."""
    return _measure(patients, seed, _hu_pair)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=480)
    parser.add_argument("--seed", type=int, default=51)
    parser.add_argument("--hu", action="store_true", help="the pose-free HU comparison instead")
    args = parser.parse_args()
    if args.hu:
        _report_hu(measure_hu(args.patients, args.seed), args)
        return
    pairs = measure(args.patients, args.seed)
    if not pairs:
        raise SystemExit(f"no patient of {args.patients} (seed {args.seed}) gains an effusion")
    true_area = np.array([p["truth"][1] for p in pairs])
    print(
        f"{len(pairs)} pairs gaining an effusion at month 12 (seed {args.seed}, "
        f"{args.patients} patients); true fluid {true_area.mean():.0f} mm2 on average"
    )
    offsets = np.array([p["offset"] for p in pairs])
    print(f"distance from LungSim's origin (mm): lungs' centroid {offsets[:, 0].mean():.1f}, "
          f"body centre {offsets[:, 1].mean():.1f}")  # fmt: skip
    print(f"{'centre':28s} {'Dice mean':>9s} {'median':>7s} {'area drawn / true':>18s}")
    base = np.array([p[CENTRES[0]][0] for p in pairs])
    rng = np.random.default_rng(0)
    for name in CENTRES:
        dice = np.array([p[name][0] for p in pairs])
        area = np.array([p[name][1] for p in pairs])
        print(f"{name:28s} {dice.mean():9.3f} {np.median(dice):7.3f} "
              f"{area.sum() / true_area.sum():18.3f}")  # fmt: skip
        if name != CENTRES[0]:
            gain = dice - base
            draws = rng.integers(0, len(gain), (2000, len(gain)))
            low, high = np.percentile(gain[draws].mean(axis=1), [2.5, 97.5])
            print(f"{'':28s} Dice gained over the lungs' centroid {gain.mean():+.3f} "
                  f"(95% CI {low:+.3f} to {high:+.3f}; better on {(gain > 0).sum()}, "
                  f"worse on {(gain < 0).sum()})")  # fmt: skip


def _report_hu(pairs: list[dict[str, np.ndarray]], args: argparse.Namespace) -> None:
    if not pairs:
        raise SystemExit(f"no patient of {args.patients} (seed {args.seed}) gains an effusion")
    print(f"{len(pairs)} pairs (seed {args.seed}, {args.patients} patients): lung of the month-0 "
          "slice read in HU after the effusion, mean mm2 (3 x 3 median)")  # fmt: skip
    print(f"{'':8s} " + " ".join(f"{c:>16s}" for c in HU_COLUMNS))
    for who in ("true", "drawn"):
        means = np.mean([p[who] for p in pairs], axis=0)
        print(f"{who:8s} " + " ".join(f"{m:16.0f}" for m in means))
    inside = np.mean([p["inside"] for p in pairs], axis=0)
    print(f"inside the fluid: true {inside[0]:.0f} +- {inside[1]:.0f} HU, "
          f"drawn {inside[2]:.0f} +- {inside[3]:.0f} HU")  # fmt: skip
    mae = float(np.mean([p["mae_hu"][0] for p in pairs]))
    print(f"mean absolute HU difference where either changed: {mae:.0f} HU")
    sums = np.sum([p["profile_sums"] for p in pairs], axis=0)
    counts = np.maximum(np.sum([p["profile_counts"] for p in pairs], axis=0), 1)
    print("mean HU by depth below the drawn fluid's surface where it is over 10 mm deep (mm, bin "
          "start; < 0 in the fluid, 0-5 the band):")  # fmt: skip
    print(f"{'':8s} " + " ".join(f"{e:+6.0f}" for e in PROFILE_MM[:-1]))
    for row, who in enumerate(("true", "drawn")):
        print(f"{who:8s} " + " ".join(f"{v:6.0f}" for v in sums[row] / counts))


if __name__ == "__main__":
    main()
