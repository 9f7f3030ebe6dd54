"""Where the lesion ruler's overshoot on unchanged LungSim lesions comes from, by margin.

Usage:
    python benchmarks/ruler_overshoot.py DATA GAN_CKPT [--split train] [--months 12]
    e.g. DATA runs/bench_gan_v5/lungsim, GAN_CKPT runs/bench_gan_v5/gan/checkpoint.pt

`gan evaluate`'s `ruler_check` runs the ruler (`progression.metrics`: the input's half-way
threshold, the ROI, the background rule, the component at the centre, greatest diameter) on
each pair's unchanged month-0 patch; what it reads beyond the recorded diameter is its own
overshoot. This splits that overshoot by the lesion's margin (smooth, lobulated, spiculated,
from the manifest) and shows what a morphological opening of the segmentation (a disc of 1, 2
or 3 pixels' radius, which cuts off anything thinner) would take off. LungSim records the
greatest diameter of the lesion's body, spicules left out, as radiologists measure a
spiculated nodule; the ruler keeps any spicule that stays above the threshold. The patches are
the GAN's (its geometry and window), on the split given (the training split by default, so
that nothing here looks at the patients the GAN is scored on).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungcancer.config import DataConfig
from lungcancer.progression import metrics
from lungcancer.progression.checkpoint import load_gan
from lungcancer.progression.fidelity import heldout_pairs
from lungcancer.progression.pairs import lesion_views_from_index, make_patch_set
from lungcancer.progression.training import patient_splits

OPENINGS_PX = (1, 2, 3)


def _disc(radius_px: int) -> np.ndarray:
    axis = np.arange(-radius_px, radius_px + 1)
    return np.asarray(axis[:, None] ** 2 + axis[None, :] ** 2 <= radius_px**2 + 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="LungSim longitudinal set (manifest.csv)")
    parser.add_argument("gan", type=Path, help="a 2D GAN checkpoint (its patch geometry)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--months", type=float, default=12.0)
    args = parser.parse_args()
    loaded = load_gan(args.gan)
    splits = patient_splits(args.data, DataConfig())
    views = lesion_views_from_index(args.data, loaded.stages, loaded.config.spatial_dims)
    pairs = heldout_pairs(views, splits[args.split], args.months)
    patches = make_patch_set(pairs, loaded.stages, loaded.geometry, loaded.window)
    with open(args.data / "manifest.csv", newline="") as f:
        margins = {str(args.data / r["path"]): r["margin"] for r in csv.DictReader(f)}
    rows: dict[str, list[np.ndarray]] = {}
    for i, (source, target) in enumerate(pairs):
        spacing = float(patches.spacing_mm[i])
        ruler = metrics.pair_ruler(
            patches.source[i, 0],
            patches.source_mask[i, 0],
            source_diameter_mm=source.diameter_mm,
            target_diameter_mm=target.diameter_mm,
            patch_spacing_mm=spacing,
            window_low_hu=loaded.window.low_hu,
            window_high_hu=loaded.window.high_hu,
        )
        lesion = ruler.segment(patches.source[i, 0])
        readings = [ruler.diameter_mm(lesion)]
        readings += [
            ruler.diameter_mm(ndimage.binary_opening(lesion, _disc(r))) for r in OPENINGS_PX
        ]
        margin = margins.get(str(source.source)) or "unknown"
        rows.setdefault(margin, []).append(np.array(readings) - source.diameter_mm)
    heads = ["ruler"] + [f"opened r={r} px" for r in OPENINGS_PX]
    print(f"{args.data}, {args.split} split, month 0 of the (0, {args.months:g}) pairs: "
          "ruler reading minus recorded diameter, mean (MAE), mm")  # fmt: skip
    print(f"{'margin':12s} {'pairs':>5s} " + " ".join(f"{h:>16s}" for h in heads))
    every = [v for values in rows.values() for v in values]
    for margin, values in [*sorted(rows.items()), ("all", every)]:
        table = np.array(values)
        cells = [
            f"{m:+.2f} ({a:.2f})" for m, a in zip(table.mean(0), np.abs(table).mean(0), strict=True)
        ]
        print(f"{margin:12s} {len(values):5d} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
