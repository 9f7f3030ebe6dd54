"""Tiny disc-growth data for the progression tests: a bright disc on noisy lung-like background
that grows with time, a tiny GAN config and an untrained checkpoint writer."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from lungcancer.config import GanConfig
from lungcancer.progression.checkpoint import (
    build_discriminator,
    build_generator,
    save_gan_checkpoint,
)
from lungcancer.progression.pairs import LesionView
from lungcancer.progression.patches import disc_mask
from lungcancer.staging import coarse_stage, stage_group, t_from_diameter
from lungcancer.synth.growth import diameter_at_months

LESION_HU = 30.0
LUNG_HU = -850.0


def disc_view(
    diameter_mm: float,
    patient: str,
    months: float,
    size: int = 48,
    spacing_mm: float = 1.0,
    seed: int = 0,
    center: tuple[float, float] | None = None,
    lesion_hu: float = LESION_HU,
) -> LesionView:
    """One slice with a disc lesion; the background noise is fixed per patient (same anatomy)."""
    rng = np.random.default_rng(zlib.crc32(patient.encode()) + seed)
    image = LUNG_HU + 30.0 * rng.standard_normal((size, size)).astype(np.float32)
    # A "vessel": a bright line away from the lesion, so identity outside the ROI is testable.
    image[:, 4:6] = 40.0
    c = center or ((size - 1) / 2, (size - 1) / 2)
    mask = disc_mask((size, size), c, diameter_mm, (spacing_mm, spacing_mm))
    image[mask] = lesion_hu
    stage = coarse_stage(stage_group(t_from_diameter(diameter_mm), "N0", "M0"))
    return LesionView(
        image_hu=image.astype(np.float32),
        mask=mask,
        spacing_mm=(spacing_mm, spacing_mm),
        center=c,
        diameter_mm=diameter_mm,
        stage=stage,
        patient_id=patient,
        months=months,
    )


def disc_series(n_patients: int, months: tuple[float, ...] = (0.0, 6.0, 12.0)) -> list[LesionView]:
    """Longitudinal disc views: baseline 6-14 mm, VDT 120 days; the lesion also gets denser
    (+15 HU a month), which geometric growth alone cannot reproduce."""
    rng = np.random.default_rng(1)
    views = []
    for p in range(n_patients):
        d0 = float(rng.uniform(6.0, 14.0))
        for m in months:
            d = diameter_at_months(d0, m, 120.0)
            views.append(disc_view(d, f"p{p}", m, lesion_hu=LESION_HU + 15.0 * m))
    return views


def tiny_config() -> GanConfig:
    """A GAN small enough to train a few steps in seconds on 2 cores."""
    return GanConfig(
        patch_size=32,
        min_spacing_mm=1.0,
        base_channels=8,
        levels=3,
        cond_dim=16,
        d_channels=8,
        d_layers=2,
        batch_size=8,
        steps=4,
        sample_every=1000,
        checkpoint_every=1000,
        log_every=2,
        r1_every=2,
        precision="fp32",
        device="cpu",
        threads=1,
        max_minutes=0.0,
    )


def write_untrained_checkpoint(path: Path, cfg: GanConfig, max_diameter_mm: float = 30.0) -> Path:
    """A checkpoint of freshly initialised networks (its generator is the identity)."""
    torch.manual_seed(0)
    g = build_generator(cfg)
    d = build_discriminator(cfg)
    save_gan_checkpoint(
        path,
        cfg=cfg,
        generator=g,
        generator_ema=g,
        discriminator=d,
        opt_g=torch.optim.Adam(g.parameters()),
        opt_d=torch.optim.Adam(d.parameters()),
        step=0,
        train_patients=("p0",),
        heldout_patients=("p9",),
        max_diameter_mm=max_diameter_mm,
    )
    return path


STAGE_CLASSES = ("normal", "benign", "stage_I", "stage_II", "stage_III", "stage_IV")


def write_untrained_classifier(
    path: Path, image_size: int = 32, class_names: tuple[str, ...] = STAGE_CLASSES
) -> Path:
    """A classifier checkpoint of a freshly initialised custom CNN (LungSim's stage classes)."""
    from typing import Any

    from lungcancer.config import DataConfig, ModelConfig, TrainConfig, to_dict
    from lungcancer.models import create_model
    from lungcancer.train.checkpoint import FORMAT, VERSION, save_checkpoint

    torch.manual_seed(0)
    names = list(class_names)
    model = create_model("cnn", num_classes=len(names))
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": "cnn",
            "args": {"in_chans": 1, "num_classes": len(names), "spatial_dims": 2, "dropout": 0.0},
        },
        "class_names": names,
        "data_config": to_dict(DataConfig(image_size=image_size)),
        "model_config": to_dict(ModelConfig(name="cnn")),
        "train_config": to_dict(TrainConfig()),
        "state_dict": model.state_dict(),
    }
    save_checkpoint(path, checkpoint)
    return path
