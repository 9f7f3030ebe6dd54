"""The GAN checkpoint: one file, written atomically, read with `weights_only=True` only.

It holds everything needed to resume training (G, G_ema, D, both optimizers, step) and to use
the generator on its own (config, stage list, patch geometry, HU window), plus the patients it
was trained on so evaluation can refuse to score on them.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungcancer.config import GanConfig, from_dict, to_dict
from lungcancer.errors import CheckpointError, ConfigError
from lungcancer.io.atomic import atomic_write_with
from lungcancer.models.gan import ProgressionDiscriminator, ProgressionGenerator
from lungcancer.progression.patches import HUWindow, PatchGeometry

GAN_FORMAT = "lungcancer-gan"
GAN_FORMAT_VERSION = 1


def gan_geometry(cfg: GanConfig) -> PatchGeometry:
    """The patch geometry a config trains with."""
    return PatchGeometry(cfg.patch_size, cfg.min_spacing_mm, cfg.fov_per_diameter)


def gan_window(cfg: GanConfig) -> HUWindow:
    """The HU window a config trains with."""
    return HUWindow(cfg.window_low_hu, cfg.window_high_hu)


def build_generator(cfg: GanConfig) -> ProgressionGenerator:
    """A fresh generator for a config."""
    return ProgressionGenerator(
        spatial_dims=cfg.spatial_dims,
        num_stages=len(cfg.stages),
        base_channels=cfg.base_channels,
        levels=cfg.levels,
        cond_dim=cfg.cond_dim,
        soft_gate=cfg.soft_gate,
    )


def build_discriminator(cfg: GanConfig) -> ProgressionDiscriminator:
    """A fresh discriminator for a config (paired: sees input and candidate; unpaired: one)."""
    return ProgressionDiscriminator(
        spatial_dims=cfg.spatial_dims,
        in_channels=2 if cfg.mode == "paired" else 1,
        num_stages=len(cfg.stages),
        channels=cfg.d_channels,
        num_layers=cfg.d_layers,
        aux_classifier=cfg.mode == "unpaired",
    )


def _git_hash() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def _versions() -> dict[str, str]:
    import monai

    from lungcancer import __version__

    return {
        "lungcancer": __version__,
        "torch": str(torch.__version__),
        "monai": str(monai.__version__),
        "python": platform.python_version(),
    }


def save_gan_checkpoint(
    path: str | Path,
    *,
    cfg: GanConfig,
    generator: nn.Module,
    generator_ema: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    step: int,
    train_patients: tuple[str, ...],
    heldout_patients: tuple[str, ...],
    max_diameter_mm: float,
    metrics: dict[str, float] | None = None,
) -> None:
    """Write the checkpoint atomically (a reader sees the old file or the new one).

    Args:
        path: destination file.
        cfg: the resolved GAN config.
        generator: G being trained.
        generator_ema: the EMA of G (what simulation uses).
        discriminator: D.
        opt_g: G's optimizer.
        opt_d: D's optimizer.
        step: number of completed training steps.
        train_patients: patients whose pairs were trained on.
        heldout_patients: patients kept for evaluation.
        max_diameter_mm: the largest target diameter seen in training (larger ones are
            rendered at this size, and simulation says so).
        metrics: last logged losses.
    """
    payload: dict[str, Any] = {
        "format": GAN_FORMAT,
        "format_version": GAN_FORMAT_VERSION,
        "G": generator.state_dict(),
        "G_ema": generator_ema.state_dict(),
        "D": discriminator.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "step": int(step),
        "gan_config": to_dict(cfg),
        "stages": list(cfg.stages),
        "spatial_dims": cfg.spatial_dims,
        "patch_size": cfg.patch_size,
        "min_spacing_mm": cfg.min_spacing_mm,
        "fov_per_diameter": cfg.fov_per_diameter,
        "window": {"low_hu": cfg.window_low_hu, "high_hu": cfg.window_high_hu},
        "train_patients": list(train_patients),
        "heldout_patients": list(heldout_patients),
        "max_diameter_mm": float(max_diameter_mm),
        "metrics": dict(metrics or {}),
        "versions": _versions(),
        "git": _git_hash(),
    }
    atomic_write_with(path, lambda tmp: torch.save(payload, tmp))


def read_gan_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a GAN checkpoint file (never executes code: `weights_only=True`).

    Raises:
        CheckpointError: missing file, unsafe or corrupt content, or not a GAN checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            "GAN checkpoint not found", path=p, hint="train one with `lungcancer gan train`"
        )
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(
            "the file cannot be read as a safe checkpoint",
            path=p,
            expected="a lungcancer-gan checkpoint (tensors and plain values only)",
            found=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint="the file is corrupt, truncated, or holds pickled code; retrain or re-download it",
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != GAN_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            "not a progression-GAN checkpoint",
            path=p,
            expected=f"format '{GAN_FORMAT}'",
            found=repr(found),
            hint="pass the .pt file written by `lungcancer gan train` (classifier checkpoints "
            "go to --classifier)",
        )
    if payload.get("format_version", 0) > GAN_FORMAT_VERSION:
        raise CheckpointError(
            "the checkpoint was written by a newer lungcancer",
            path=p,
            expected=f"format_version <= {GAN_FORMAT_VERSION}",
            found=str(payload.get("format_version")),
            hint="upgrade lungcancer",
        )
    return payload


@dataclass(frozen=True)
class LoadedGan:
    """A generator ready to render, with the geometry and window it was trained with.

    Attributes:
        generator: the EMA generator in eval mode.
        config: the GAN config it was trained with.
        stages: stage names, index = stage id.
        window: HU window of the network units.
        geometry: patch size and how its pixel size follows the lesion.
        step: training steps done.
        train_patients: patients it was trained on.
        heldout_patients: patients kept out of training.
        max_diameter_mm: the largest target diameter it was trained on.
        path: the checkpoint file.
    """

    generator: ProgressionGenerator
    config: GanConfig
    stages: tuple[str, ...]
    window: HUWindow
    geometry: PatchGeometry
    step: int
    train_patients: tuple[str, ...]
    heldout_patients: tuple[str, ...]
    max_diameter_mm: float
    path: str

    @property
    def patch_size(self) -> int:
        """Pixels per side of its patches."""
        return self.geometry.patch_size


def check_compatible(
    payload: dict[str, Any],
    path: str | Path,
    *,
    patch_size: int | None = None,
    stages: tuple[str, ...] | None = None,
    spatial_dims: int | None = None,
) -> None:
    """Refuse a checkpoint trained on another patch size, stage list or dimensionality."""
    if patch_size is not None and int(payload["patch_size"]) != patch_size:
        raise CheckpointError(
            "the GAN checkpoint was trained on another patch size",
            path=path,
            expected=f"patch size {patch_size}",
            found=f"patch size {payload['patch_size']}",
            hint=f"use --patch {payload['patch_size']}, or train a GAN for {patch_size}",
        )
    if stages is not None and tuple(payload["stages"]) != tuple(stages):
        raise CheckpointError(
            "the GAN checkpoint was trained on another stage (class) set",
            path=path,
            expected=", ".join(stages),
            found=", ".join(payload["stages"]),
            hint="use a GAN trained on the same stage names, or retrain it on this dataset",
        )
    if spatial_dims is not None and int(payload["spatial_dims"]) != spatial_dims:
        raise CheckpointError(
            "the GAN checkpoint has another dimensionality",
            path=path,
            expected=f"{spatial_dims}D",
            found=f"{payload['spatial_dims']}D",
            hint="use a 2D GAN on slices and a 3D GAN on volumes",
        )


def load_gan(
    path: str | Path,
    *,
    patch_size: int | None = None,
    stages: tuple[str, ...] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedGan:
    """Load the EMA generator of a GAN checkpoint.

    Args:
        path: checkpoint file.
        patch_size: refuse a checkpoint trained on another patch size.
        stages: refuse a checkpoint trained on another stage list.
        device: where the generator goes.

    Returns:
        The loaded generator and its geometry.
    """
    payload = read_gan_checkpoint(path)
    check_compatible(payload, path, patch_size=patch_size, stages=stages)
    try:
        cfg = from_dict(GanConfig, payload["gan_config"])
    except ConfigError as exc:
        raise CheckpointError(
            "the checkpoint's GAN config does not fit this lungcancer version",
            path=path,
            found=exc.message,
            hint="load it with the lungcancer version that wrote it",
        ) from exc
    generator = build_generator(cfg)
    generator.load_state_dict(payload["G_ema"])
    generator.eval().to(device)
    window = payload["window"]
    return LoadedGan(
        generator=generator,
        config=cfg,
        stages=tuple(payload["stages"]),
        window=HUWindow(float(window["low_hu"]), float(window["high_hu"])),
        geometry=gan_geometry(cfg),
        step=int(payload["step"]),
        train_patients=tuple(payload.get("train_patients", ())),
        heldout_patients=tuple(payload.get("heldout_patients", ())),
        max_diameter_mm=float(payload.get("max_diameter_mm", 0.0)),
        path=str(path),
    )
