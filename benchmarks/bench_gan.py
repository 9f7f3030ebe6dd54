"""Progression GAN: step speed (fp32 vs bf16 + channels_last) and the full train + evaluate run.

Usage:
    python benchmarks/bench_gan.py --speed                 # step time ratio (~2 min)
    python benchmarks/bench_gan.py --loss-speed --dims 3   # loss implementation ratio (~3 min)
    python benchmarks/bench_gan.py --full --work runs/bench_gan [--threads 1]
    python benchmarks/bench_gan.py --full --work runs/bench_gan --split val --gan lambda_diameter=2

1. --speed: one GAN training step (D main, lazy R1, G main, EMA) of the default config
   (64x64 patches, batch 8) in naive fp32 and in bf16 autocast + channels_last, the two modes
   alternating in one process so background load hits both alike; prints seconds per step and
   the ratio.
2. --loss-speed: the same fp32 step (2D default config, or `--dims 3`: 32^3 cubes) with the
   SSIM term and the mask dilations computed as now (separable 1D windows, one max-pool per
   axis) and as before (MONAI's SSIMLoss with the full 2D/3D window, one cubic max-pool),
   alternating; prints seconds per step and the ratio. Both compute the same values.
3. --full: the issue-5 benchmark from scratch. Generates LungSim longitudinal data with
   `lungcancer.synth` (months 0, 3, 6, 12), trains the stage classifier that judges the frames
   (`lungcancer.train`, custom CNN, lung crop), trains the GAN with the *default* GanConfig,
   and runs `evaluate_gan` at 12 months on the held-out patients. Data, classifier and GAN
   already in --work are reused (delete one to redo that phase). Prints wall and CPU minutes
   of each phase and the metrics against the targets (Dice >= 0.8, diameter MAE <= 2 mm, stage
   fidelity >= 0.8, outside-ROI SSIM >= 0.95; GAN beats both baselines on Dice and diameter
   error and geometric growth on FID). Takes 30+ minutes on 2 cores.
   `--split val` scores the validation patients instead (into --work/evaluation_val): choose
   settings there, then report the test split once. `--gan KEY=VALUE` overrides a GanConfig
   field of the GAN trained in --work (a GAN already there is reused as it is).
   `--dims 3`: the same with LungSim volumes (192 x 192 x 48, 2 mm slices) and a 3D GAN on
   32^3 cubes; the 2D judge is trained on, and scores, the slice through each lesion.

CPU minutes are process CPU time over the machine's physical cores: on a machine shared with
other jobs they estimate what the run takes on an idle one; wall minutes are reported beside.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lungcancer.config import DataConfig, GanConfig, ModelConfig, TrainConfig, from_dict, to_dict
from lungcancer.progression import loop
from lungcancer.progression.pairs import PatchSet
from lungcancer.train.precision import cpu_supports_bf16, physical_cores


def _synthetic_patches(cfg: GanConfig, n: int = 64) -> PatchSet:
    """Random patches with a centred disc (ball): the step time does not depend on the content."""
    rng = np.random.default_rng(0)
    p = cfg.patch_size
    grid = np.mgrid[(slice(0, p),) * cfg.spatial_dims] - (p - 1) / 2
    disc = ((grid**2).sum(axis=0) <= (p / 6) ** 2).astype(np.float32)
    shape = (n, 1) + (p,) * cfg.spatial_dims
    source = (rng.normal(-0.8, 0.05, shape) + 0.9 * disc).astype(np.float32)
    return PatchSet(
        source=source,
        target=source.copy(),
        source_mask=np.broadcast_to(disc, source.shape).copy(),
        target_mask=np.broadcast_to(disc, source.shape).copy(),
        source_size=np.full(n, 1 / 3, np.float32),
        target_size=np.full(n, 0.45, np.float32),
        spacing_mm=np.full(n, 1.5, np.float32),
        source_stage=np.zeros(n, np.int64),
        target_stage=np.ones(n, np.int64),
        months=np.full(n, 12.0, np.float32),
        patient_ids=tuple(f"p{i}" for i in range(n)),
    )


def _step_seconds(trainer: loop._Trainer, data: dict[str, torch.Tensor], steps: int) -> float:
    cfg = trainer.cfg
    times = []
    for step in range(steps):
        rng = np.random.default_rng([0, step])
        gen = torch.Generator().manual_seed(step)
        started = time.perf_counter()
        batch = loop._sample_batch(data, cfg.batch_size, rng, trainer.memory_format)
        trainer.set_real(batch)
        stage_t, size_t = trainer._targets(batch, rng, [])
        trainer.set_prior(batch, size_t)
        trainer.d_main(batch, stage_t, size_t, gen)
        if step % cfg.r1_every == 0:
            trainer.d_reg(batch, stage_t)
        trainer.g_main(batch, stage_t, size_t, gen)
        trainer.update_ema(step)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def _alternating_medians(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each run's seconds per step, the runs alternating round by round so that
    background load on a shared machine hits them alike."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def speed(threads: int, steps: int, rounds: int) -> None:
    """Seconds per GAN step, naive fp32 against bf16 + channels_last, alternating."""
    torch.set_num_threads(threads)
    cfg = GanConfig()
    patches = _synthetic_patches(cfg)
    trainers = {
        "fp32": loop._Trainer(cfg, torch.device("cpu"), bf16=False),
        "bf16+channels_last": loop._Trainer(cfg, torch.device("cpu"), bf16=True),
    }
    data = loop._as_tensors(patches, torch.device("cpu"), trainers["fp32"].window)
    medians = _alternating_medians(
        {name: functools.partial(_step_seconds, t, data, steps) for name, t in trainers.items()},
        rounds,
    )
    fp32, bf16 = medians["fp32"], medians["bf16+channels_last"]
    print(f"GAN step, default config (patch {cfg.patch_size}, batch {cfg.batch_size})")
    print(f"  threads: {threads}")
    print(f"  fp32 naive:          {fp32:.3f} s/step")
    print(f"  bf16+channels_last:  {bf16:.3f} s/step")
    print(f"  speed-up: {fp32 / bf16:.2f}x")
    if not cpu_supports_bf16():
        print("  (bf16 is emulated on this CPU: the precision policy trains the GAN in fp32 here)")


class _MonaiSSIM:
    """The SSIM term as the GAN computed it before: MONAI's SSIMLoss (full 2D/3D window)."""

    def __init__(self, cfg: GanConfig) -> None:
        from monai.losses import SSIMLoss

        win = 11 if cfg.patch_size >= 44 else 7
        self.loss = SSIMLoss(spatial_dims=cfg.spatial_dims, data_range=2.0, win_size=win)

    def __call__(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(fake.float(), target.float())


def _cubic_dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """The dilation as the GAN computed it before: one square/cubic max-pool."""
    pool = F.max_pool2d if mask.ndim == 4 else F.max_pool3d
    return pool(mask.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def loss_speed(dims: int, threads: int, steps: int, rounds: int) -> None:
    """Seconds per fp32 GAN step: the separable SSIM window and per-axis dilation against the
    full-window MONAI SSIMLoss and one cubic max-pool, alternating in one process."""
    torch.set_num_threads(threads)
    cfg = GanConfig()
    if dims == 3:
        cfg = dataclasses.replace(cfg, spatial_dims=3, patch_size=32)
    patches = _synthetic_patches(cfg, n=32)
    separable = loop._Trainer(cfg, torch.device("cpu"), bf16=False)
    reference = loop._Trainer(cfg, torch.device("cpu"), bf16=False)
    reference.ssim = _MonaiSSIM(cfg)  # type: ignore[assignment]
    data = loop._as_tensors(patches, torch.device("cpu"), separable.window)
    fast_dilate = loop.dilate

    def with_reference_losses() -> float:
        loop.dilate = _cubic_dilate  # type: ignore[assignment]
        try:
            return _step_seconds(reference, data, steps)
        finally:
            loop.dilate = fast_dilate

    medians = _alternating_medians(
        {
            "reference": with_reference_losses,
            "separable": functools.partial(_step_seconds, separable, data, steps),
        },
        rounds,
    )
    ref, new = medians["reference"], medians["separable"]
    print(f"GAN step, fp32, {dims}D (patch {cfg.patch_size}, batch {cfg.batch_size})")
    print(f"  threads: {threads}")
    print(f"  MONAI SSIMLoss + cubic max-pool:   {ref:.3f} s/step")
    print(f"  separable SSIM + per-axis max-pool: {new:.3f} s/step")
    print(f"  speed-up: {ref / new:.2f}x")


class _Clock:
    """Wall and process-CPU minutes of a phase."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def minutes(self) -> tuple[float, float]:
        cores = physical_cores()
        return (time.perf_counter() - self.wall) / 60, (time.process_time() - self.cpu) / 60 / cores


def full(
    work: Path,
    patients: int,
    threads: int,
    classifier_epochs: int,
    steps: int | None,
    split: str = "test",
    overrides: tuple[str, ...] = (),
    dims: int = 2,
) -> None:
    """Generate LungSim, train the judge classifier and the default GAN, evaluate at 12 months."""
    from lungcancer.progression.fidelity import evaluate_gan
    from lungcancer.progression.training import train_gan
    from lungcancer.synth.api import SynthConfig, generate
    from lungcancer.train.api import train as train_classifier

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "lungsim"
    phases: dict[str, tuple[float, float]] = {}
    if not (data / "manifest.csv").is_file():
        clock = _Clock()
        # Volumes are smaller in-plane: 192 x 192 x 48 is 1.8 M voxels, 27 times a 256 slice.
        shape: dict[str, Any] = {"size": 256}
        if dims == 3:
            shape = {"size": 192, "depth": 48, "slice_thickness_mm": 2.0}
        generate(
            SynthConfig(patients=patients, timepoints_months=(0.0, 3.0, 6.0, 12.0), dims=dims,
                        off_centre_slices=0, previews=False, **shape),
            data,
        )  # fmt: skip
        phases["LungSim"] = clock.minutes()
    # The classifier recipe of bench_train (lung crop, lr 1e-3), trained longer: this set is small.
    data_cfg = DataConfig(source=str(data), image_size=128, augment=True, lung_crop=True)
    classifier = work / "classifier" / "best.pt"
    if not classifier.is_file():
        clock = _Clock()
        train_classifier(
            data_cfg,
            ModelConfig(name="cnn"),
            # precise_bn_batches 0: the judge as measured in the README, before precise BN.
            TrainConfig(out_dir=str(work / "classifier"), epochs=classifier_epochs, batch_size=32,
                        lr=1e-3, patience=classifier_epochs, threads=threads,
                        precise_bn_batches=0),
        )  # fmt: skip
        phases["classifier"] = clock.minutes()
    gan_cfg = GanConfig(data=str(data), out_dir=str(work / "gan"), threads=threads)
    if dims == 3:
        gan_cfg = dataclasses.replace(gan_cfg, spatial_dims=3, patch_size=32)
    if steps is not None:
        gan_cfg = dataclasses.replace(gan_cfg, steps=steps)
    if overrides:
        pairs = dict(item.split("=", 1) for item in overrides)
        gan_cfg = from_dict(GanConfig, {**to_dict(gan_cfg), **pairs})
    checkpoint = work / "gan" / "checkpoint.pt"
    if not checkpoint.is_file():
        clock = _Clock()
        result = train_gan(gan_cfg, DataConfig(source=str(data)), progress=False)
        phases["GAN training"] = clock.minutes()
        margin = "n/a" if result.d_margin is None else f"{result.d_margin:.4f}"
        print(
            f"GAN: {result.steps} steps, stopped early: {result.stopped_early}, "
            f"discriminator margin {margin} (under {loop.INERT_D_MARGIN:g}: inert)"
        )
    clock = _Clock()
    evaluation = evaluate_gan(
        checkpoint,
        data,
        classifier=classifier,
        months=12.0,
        out_dir=work / ("evaluation" if split == "test" else f"evaluation_{split}"),
        split=split,
    )
    phases["evaluation"] = clock.minutes()
    for name, (wall, cpu) in phases.items():
        cores = physical_cores()
        print(f"  {name:13s} wall {wall:6.1f} min   CPU {cpu:6.1f} min (over {cores} cores)")
    print(evaluation.table)
    print(json.dumps(evaluation.metrics["targets"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", action="store_true", help="fp32 vs bf16 step time")
    parser.add_argument(
        "--loss-speed", action="store_true", help="separable vs full-window SSIM + dilation"
    )
    parser.add_argument("--full", action="store_true", help="LungSim + classifier + GAN + evaluate")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_gan"))
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2, help="3: volumes, 3D GAN")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--gan-steps", type=int, default=None, help="override the default steps")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="patients scored")
    parser.add_argument(
        "--gan", action="append", default=[], metavar="KEY=VALUE", help="GanConfig override"
    )
    parser.add_argument("--steps", type=int, default=6, help="steps per speed round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (args.speed or args.loss_speed or args.full):
        parser.error("pass --speed, --loss-speed and/or --full")
    if args.speed:
        speed(args.threads, args.steps, args.rounds)
    if args.loss_speed:
        loss_speed(args.dims, args.threads, args.steps, args.rounds)
    if args.full:
        full(
            args.work,
            args.patients,
            args.threads,
            args.classifier_epochs,
            args.gan_steps,
            args.split,
            tuple(args.gan),
            args.dims,
        )


if __name__ == "__main__":
    main()
