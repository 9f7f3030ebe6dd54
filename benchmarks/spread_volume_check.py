"""How much new fluid the volume spread renderer draws, against LungSim's truth.

Usage:
    python benchmarks/spread_volume_check.py runs/bench_gan3d/lungsim [--controls 40]

For every malignant patient of a LungSim volume set with scans at month 0 and month 12, the
month-0 volume gets the findings its month-12 N and M add (`plan_spread_volume` +
`draw_spread_volume`, the tumour grown to its month-12 diameter guarded, as `simulate`
draws them). One measure then reads the drawn volume and the true month-12 volume: how many
more millilitres (and, on the lesion's slice, square millimetres) are at fluid density
(-20..+25 HU after a 3x3x3 median; pleural fluid is 12 HU, soft tissue and nodes 35-50) than
in the month-0 volume, outside the guarded tumour.
A count, not a voxel-by-voxel difference: the patient lies differently at month 12, and a
rigid shift moves tissue without changing how much of it is fluid. Pairs whose N and M do
not change are the control (noise, and LungSim's own changes between visits). Nothing here is
fitted: the renderer's values are the textbook ones of `progression.spread`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungcancer.io import read_image
from lungcancer.progression.simulate import cranial_direction
from lungcancer.progression.spread import draw_spread_volume, plan_spread_volume, tumour_guard
from lungcancer.progression.timeline import SimulationError

FLUID_HU = (-20.0, 25.0)
CONTROL = "N and M unchanged (control)"


def _turned_mm2(
    before: np.ndarray, after: np.ndarray, outside: np.ndarray, pixel_mm2: float
) -> float:
    """The 2D calibration's measure on one slice: lung (below -500 HU after a 3x3 median) that
    is dense (above -150 HU) in `after`, outside the guarded tumour, in mm2. It counts the
    fluid's partial-volume edge and the band of compressed lung where it is dense enough, and
    pose shifts between visits add to it (the control measures how much)."""
    lung = ndimage.median_filter(before, size=3) < -500.0
    dense = ndimage.median_filter(after, size=3) > -150.0
    return float((lung & dense & outside).sum()) * pixel_mm2


def _fluid(volume: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Voxels at fluid density after a 3x3x3 median, outside the guarded tumour."""
    smooth = ndimage.median_filter(volume, size=3)
    return (smooth >= FLUID_HU[0]) & (smooth <= FLUID_HU[1]) & outside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="LungSim volume set (manifest.csv)")
    parser.add_argument(
        "--controls",
        type=int,
        default=40,
        help="unchanged pairs measured (plans are seeded by the count of patients measured "
        "before, so another count draws other plans for the later patients)",
    )
    args = parser.parse_args()
    with open(args.data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    visits: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        visits[row["patient_id"]][row["time_point"]] = row
    groups: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    measured: list[str] = []  # one plan seed per patient, as `gan evaluate` seeds by pair
    for patient in sorted(visits):
        before, after = visits[patient].get("0.0"), visits[patient].get("12.0")
        if before is None or after is None or not before["m"] or not after["m"]:
            continue
        nm0, nm12 = (before["n"], before["m"]), (after["n"], after["m"])
        new_m1a = nm0[1] == "M0" and nm12[1] == "M1a"
        if new_m1a and after["m1a_findings"] in ("effusion", "both"):
            group = "new effusion"
        elif new_m1a:
            group = "new M1a nodule only"
        elif nm12[0] != nm0[0]:
            group = "new nodes only"
        else:
            group = CONTROL
            if len(groups[group]) >= args.controls:
                continue
        scan0 = read_image(args.data / before["path"])
        scan12 = read_image(args.data / after["path"])
        mask = read_image(args.data / before["mask_path"]).array > 0
        center = tuple(float(before[f"lesion_center_{a}"]) for a in "zyx")
        scale = float(after["diameter_mm"]) / float(before["diameter_mm"])
        guard = tumour_guard(mask, center, scale, scan0.spacing_mm)
        drawn = scan0.array
        if nm12 != nm0:
            try:
                plan = plan_spread_volume(
                    scan0.array,
                    scan0.spacing_mm,
                    center,
                    cranial=cranial_direction(scan0),
                    seed=len(measured),
                )
            except SimulationError:
                print(f"{patient}: no two lung fields on the lesion's slice; skipped")
                continue
            kind = after["m1a_findings"] if after["m1a_findings"] else "effusion"
            (drawn,), _ = draw_spread_volume(
                [scan0.array], plan, baseline=nm0, targets=[nm12], m1a_kind=kind, protect=[guard]
            )
        measured.append(patient)
        voxel_ml = float(np.prod(scan0.spacing_mm)) / 1000.0
        k = round(center[0])
        pixel_mm2 = scan0.spacing_mm[1] * scan0.spacing_mm[2]
        base, true = _fluid(scan0.array, ~guard), _fluid(scan12.array, ~guard)
        ours = base if drawn is scan0.array else _fluid(drawn, ~guard)
        groups[group].append(
            (
                float(true.sum() - base.sum()) * voxel_ml,
                float(ours.sum() - base.sum()) * voxel_ml,
                float(true[k].sum() - base[k].sum()) * pixel_mm2,
                float(ours[k].sum() - base[k].sum()) * pixel_mm2,
                _turned_mm2(scan0.array[k], scan12.array[k], ~guard[k], pixel_mm2),
                _turned_mm2(scan0.array[k], drawn[k], ~guard[k], pixel_mm2),
            )
        )
    print(f"{args.data}: new fluid-density volume, month 12 minus month 0 (mL), outside the tumour")
    print("(and on the lesion's own slice, mm2: what a 2D simulation of that slice draws; then")
    print(" the 2D calibration's turned-lung measure on that slice)")
    print(f"{'group':30s} {'pairs':>5s} {'true mL':>8s} {'drawn mL':>9s} {'true mm2':>9s} "
          f"{'drawn mm2':>10s} {'turned true':>12s} {'turned drawn':>13s}")  # fmt: skip
    for group, values in sorted(groups.items()):
        means = [statistics.mean(v[j] for v in values) for j in range(6)]
        print(f"{group:30s} {len(values):5d} {means[0]:8.1f} {means[1]:9.1f} {means[2]:9.0f} "
              f"{means[3]:10.0f} {means[4]:12.0f} {means[5]:13.0f}")  # fmt: skip
    control = groups.get(CONTROL, [])
    floor = statistics.mean(v[0] for v in control) if control else 0.0
    rng = np.random.default_rng(0)
    for group, values in sorted(groups.items()):
        if group == CONTROL or len(values) < 2:
            continue
        added = np.array([v[0] for v in values]) - floor
        drawn_ml = np.array([v[1] for v in values])
        diff = drawn_ml - added
        boot = [float(diff[i].mean()) for i in rng.integers(0, len(values), (2000, len(values)))]
        low, high = np.percentile(boot, [2.5, 97.5])
        print(
            f"{group}: the true scans add {added.mean():.1f} mL beyond the control's "
            f"{floor:.1f}; the renderer draws {drawn_ml.mean():.1f} mL; drawn minus true "
            f"{diff.mean():+.1f} mL (95% CI {low:+.1f} to {high:+.1f}, {len(values)} pairs)"
        )


if __name__ == "__main__":
    main()
