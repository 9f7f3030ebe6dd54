"""What the GAN's size terms charge the true future itself, under each `gan.size_target`.

Usage:
    python benchmarks/size_terms_check.py GAN_CONFIG DATA
    e.g. runs/bench_gan3d_2000/gan/config.yaml runs/bench_gan3d/lungsim (3D bench set)
         runs/bench_gan_v5/gan/config.yaml runs/bench_gan_v5/lungsim (2D bench set)

The size terms (`progression.loop._Trainer._size_terms`: soft area, greatest diameter and
soft Dice, read through the input's half-way threshold) are meant to pull the rendered lesion
to its true size. A perfect generator returns the true future; if the true future pays these
terms, they pull the GAN away from it. This feeds the training split's true future patches
(and, for scale, the geometric prior the generator starts from) to the terms as if they were
the generator's output, and prints the mean of each term over all pairs and by nodule type
(a threshold under -600 HU is a ground-glass or part-solid nodule). Training patients only:
nothing here looks at the patients a GAN is scored on.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from lungcancer.config import DataConfig, GanConfig, load_section
from lungcancer.progression import loop
from lungcancer.progression.pairs import PatchSet, lesion_views_from_index
from lungcancer.progression.training import SIZE_TARGETS, build_patch_sets, patient_splits

GROUND_GLASS_BELOW_HU = -600.0


def charges(cfg: GanConfig, patches: PatchSet) -> dict[str, np.ndarray]:
    """(N, 3) size, diameter (pixels) and Dice terms of the true future and of the prior, plus
    each pair's threshold in HU, (N,)."""
    device = torch.device("cpu")
    trainer = loop._Trainer(cfg, device, bf16=False)
    data = loop._as_tensors(
        patches, device, trainer.window, ruler_excess=cfg.size_target == "calibrated"
    )
    out: dict[str, list[list[float]]] = {"true future": [], "geometric prior": []}
    for i in range(data["source"].shape[0]):
        # One pair at a time: the terms are batch means.
        batch = loop._Batch({k: v[i : i + 1] for k, v in data.items()})
        trainer.set_prior(batch, batch.target_size)
        roi = loop._lesion_roi(batch, cfg.patch_size)
        for name, image in (("true future", batch.target), ("geometric prior", batch.prior)):
            size, diameter, dice = trainer._size_terms(batch, image, roi, batch.target_size)
            dice_value = float(dice) if dice is not None else float("nan")
            out[name].append([float(size), float(diameter), dice_value])
    thresholds_hu = trainer.window.to_hu(data["threshold_unit"].numpy())
    return {**{k: np.array(v) for k, v in out.items()}, "threshold_hu": thresholds_hu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a GAN's config.yaml (its gan: and data: sections)")
    parser.add_argument("data", help="the LungSim longitudinal set it trains on")
    args = parser.parse_args()
    gan_cfg = load_section(args.config, "gan", GanConfig)
    data_cfg = load_section(args.config, "data", DataConfig)
    if gan_cfg.mode != "paired":
        parser.error("the size terms charge a true future only in paired mode")
    splits = patient_splits(args.data, data_cfg)
    views = lesion_views_from_index(args.data, gan_cfg.stages, gan_cfg.spatial_dims)
    patches = build_patch_sets(views, gan_cfg, splits.get("train", ()))
    if patches is None:
        parser.error(f"no training pairs in {args.data}")
    print(f"{len(patches)} training pairs, {gan_cfg.spatial_dims}D, patch {gan_cfg.patch_size}")
    print("size target | rendering | pairs | size (px) | diameter (px) | 1 - soft Dice")
    for target in (t for t in SIZE_TARGETS if t != "auto"):  # auto is future here (paired)
        result = charges(dataclasses.replace(gan_cfg, size_target=target), patches)
        glass = result["threshold_hu"] < GROUND_GLASS_BELOW_HU
        groups = (("all", np.ones_like(glass)), ("ground glass", glass), ("solid", ~glass))
        for name in ("true future", "geometric prior"):
            for group, chosen in groups:
                size, diameter, dice = result[name][chosen].mean(axis=0)
                print(
                    f"{target} | {name} | {group} {int(chosen.sum())} | {size:.2f} | "
                    f"{diameter:.2f} | {dice:.3f}"
                )


if __name__ == "__main__":
    main()
