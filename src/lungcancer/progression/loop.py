"""The GAN training loop: D main, D reg (lazy R1), G main, EMA of G — one step per batch.

Pure: it takes resolved configs and patch arrays and writes into one run folder (checkpoint,
losses JSONL, sample grids). Reading the dataset and splitting patients is `train_gan`'s job
(progression/training.py); the CLI only parses flags.

Precision (train.precision's policy): bf16 autocast + channels_last where the CPU
(AVX512-BF16/AMX) or GPU supports it, else fp32 in the contiguous layout; losses, the R1 penalty
and the EMA are computed in fp32.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn import functional as F

from lungcancer.config import GanConfig
from lungcancer.errors import CheckpointError, TrainingError
from lungcancer.models.gan import (
    ROI_FEATHER_MM,
    ProgressionDiscriminator,
    ProgressionGenerator,
    lesion_roi,
    radial_grid,
)
from lungcancer.progression import losses
from lungcancer.progression.baselines import dilate, grow_lesion
from lungcancer.progression.checkpoint import (
    build_discriminator,
    build_generator,
    check_compatible,
    read_gan_checkpoint,
    save_gan_checkpoint,
)
from lungcancer.progression.metrics import lesion_threshold_hu, ruler_on_inputs
from lungcancer.progression.pairs import PatchSet
from lungcancer.progression.patches import HUWindow
from lungcancer.train.distributed import current_context, sync_replicas, threads_per_process
from lungcancer.train.ema import ema_step, ramped_decay
from lungcancer.train.precision import physical_cores, resolve_policy

CHECKPOINT_NAME = "checkpoint.pt"
# Gaussian sigma (pixels) of the low-pass applied to the differences in the paired L1 terms
# (losses.masked_l1 says why).
BLUR_PX = 1.0
# Below this margin (2 minus the discriminator's hinge loss, averaged over the second half of
# the run) the discriminator tells real from generated patches no better than a constant: the
# adversarial term then has no effect (README, "Progression simulator", Measured).
INERT_D_MARGIN = 0.005


@dataclass(frozen=True)
class GanTrainResult:
    """What a training run produced.

    Attributes:
        out_dir: the run folder.
        checkpoint: the checkpoint file.
        steps: training steps completed (counting resumed ones).
        minutes: wall-clock minutes of this run.
        stopped_early: True when `max_minutes` ended the run before `steps`.
        losses: the last logged average of every loss term.
        val_l1: mean |G_ema(input) - true future| on validation pairs (window units), or None.
        d_margin: 2 minus the discriminator's mean hinge loss over the second half of this
            run's logged steps (`discriminator_margin`), or None when nothing was logged.
            0 is a discriminator that outputs the same for real and generated patches; below
            `INERT_D_MARGIN` in size the adversarial term did nothing.
        log: the JSONL loss log.
        samples: sample-grid PNGs written.
    """

    out_dir: Path
    checkpoint: Path
    steps: int
    minutes: float
    stopped_early: bool
    losses: dict[str, float]
    val_l1: float | None
    d_margin: float | None
    log: Path
    samples: tuple[Path, ...]


def discriminator_margin(d_hinge: list[float]) -> float | None:
    """2 - the mean hinge loss of the discriminator over the second half of a run's log.

    The hinge loss is 2 exactly when D gives real and generated patches the same logit (any
    value in [-1, 1]); it falls as D separates them. The first half is left out: every
    discriminator starts at 2.
    """
    if not d_hinge:
        return None
    late = d_hinge[len(d_hinge) // 2 :]
    return 2.0 - float(np.mean(late))


# The most pixels `size_target: calibrated` grows a target mask by, per side.
MAX_MASK_GROWTH_PX = 3
# `size_target: future` reads the rendered and the true lesion within this many pixels of the
# future's mask or the prior's (the lesion L1's margin too): the lesion's own blurred edge is
# in, noise and vessels further out in the ROI are not.
FUTURE_NEAR_PX = 2


def _grow_masks(masks: torch.Tensor, radius_px: torch.Tensor) -> torch.Tensor:
    """Each (B, 1, *spatial) mask dilated by its own whole number of pixels (0..3)."""
    out = grown = masks
    radius = radius_px.clamp(0, MAX_MASK_GROWTH_PX).reshape(-1, *([1] * (masks.ndim - 1)))
    for r in range(1, MAX_MASK_GROWTH_PX + 1):
        grown = dilate(grown, 1)  # r one-pixel dilations: the square of side 2r + 1
        out = torch.where(radius >= r, grown, out)
    return out


class _Batch:
    """Tensors of one batch on the training device."""

    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        self.source = data["source"]
        self.target = data["target"]
        self.source_mask = data["source_mask"]
        self.target_mask = data["target_mask"]
        self.source_size = data["source_size"]
        self.spacing_mm = data["spacing_mm"]
        self.target_size = data["target_size"]
        self.source_stage = data["source_stage"]
        self.target_stage = data["target_stage"]
        self.threshold_unit = data["threshold_unit"]
        self.ruler_excess_px = data.get("ruler_excess_px")
        # What a real output looks like: set by `_Trainer.set_real` (paired: the true future
        # inside the lesion ROI and the input outside it).
        self.real = self.source
        # The geometric prior toward this step's targets, and its grown lesion mask.
        self.prior = self.source
        self.prior_mask = self.source_mask


def lesion_thresholds_unit(patches: PatchSet, window: HUWindow) -> np.ndarray:
    """Each input's lesion threshold (`metrics.lesion_threshold_hu`) in window units, (N,).

    The size terms cut the rendered lesion where the fidelity ruler will cut it: half-way
    between the input lesion's density and the lung around it, not at one HU level for all
    (a fixed -400 HU misses most of a ground-glass lesion).
    """
    return np.array(
        [
            window.unit_threshold(
                lesion_threshold_hu(window.to_hu(patches.source[i, 0]), patches.source_mask[i, 0])
            )
            for i in range(len(patches))
        ],
        dtype=np.float32,
    )


def size_target(cfg: GanConfig) -> str:
    """The size target a config trains with: `auto` is `future` when paired (README, "Size
    terms that the true future passes"), `mask` unpaired."""
    if cfg.size_target == "auto":
        return "future" if cfg.mode == "paired" else "mask"
    return cfg.size_target


def _as_tensors(
    patches: PatchSet,
    device: torch.device,
    window: HUWindow | None = None,
    ruler_excess: bool = False,
) -> dict[str, torch.Tensor]:
    """The PatchSet's arrays on `device`; with `window`, also each input's lesion threshold
    (what the size terms need in training; rendering does not) and, with `ruler_excess`, the
    ruler's overshoot on each input (`size_target: calibrated` only: it runs the ruler on every
    input)."""
    names = (
        "source", "target", "source_mask", "target_mask",
        "source_size", "target_size", "spacing_mm", "source_stage", "target_stage",
    )  # fmt: skip
    data = {
        n: torch.from_numpy(np.ascontiguousarray(getattr(patches, n))).to(device) for n in names
    }
    if window is not None:
        thresholds = lesion_thresholds_unit(patches, window)
        data["threshold_unit"] = torch.from_numpy(thresholds).to(device)
        if ruler_excess:
            excess = ruler_excess_px(patches, window)
            data["ruler_excess_px"] = torch.from_numpy(excess).to(device)
    return data


def ruler_excess_px(patches: PatchSet, window: HUWindow) -> np.ndarray:
    """How far the ruler reads each unchanged input beyond its recorded diameter, in patch
    pixels, (N,): what `size_target: calibrated` adds to the targets, since a real lesion of
    the target size reads about that much larger too (`metrics.ruler_on_inputs`)."""
    fov_px = patches.source.shape[-1]
    source_mm = patches.source_size * fov_px * patches.spacing_mm
    target_mm = patches.target_size * fov_px * patches.spacing_mm
    scores = ruler_on_inputs(
        patches.source,
        patches.source_mask,
        source_mm,
        target_mm,
        patches.spacing_mm,
        (window.low_hu, window.high_hu),
    )
    excess_mm = np.array([s.diameter_mm for s in scores]) - source_mm
    return (excess_mm / patches.spacing_mm).astype(np.float32)


def _sample_batch(
    data: dict[str, torch.Tensor],
    size: int,
    rng: np.random.Generator,
    memory_format: torch.memory_format,
) -> _Batch:
    n = data["source"].shape[0]
    idx = torch.from_numpy(rng.integers(0, n, size=size))
    batch = {k: v[idx.to(v.device)] for k, v in data.items()}
    # Flips and 90-degree turns (same for input and future): lesions have no preferred side.
    spatial = list(range(2, batch["source"].ndim))
    flips = [a for a in spatial if rng.random() < 0.5]
    turns = int(rng.integers(0, 4))
    for k in ("source", "target", "source_mask", "target_mask"):
        v = batch[k]
        if flips:
            v = torch.flip(v, flips)
        if turns:
            v = torch.rot90(v, turns, dims=(spatial[-2], spatial[-1]))
        batch[k] = v.contiguous(memory_format=memory_format)
    return _Batch(batch)


def _lesion_roi(batch: _Batch, patch_size: int, feather_mm: float = 0.0) -> torch.Tensor:
    """Disc around the centre where the lesion is looked for (`models.gan.lesion_roi`)."""
    radial = radial_grid(tuple(batch.source.shape[2:]), batch.source.device, torch.float32)
    return lesion_roi(
        radial, batch.source_size, batch.target_size, batch.spacing_mm, feather_mm=feather_mm
    )


def _item(value: torch.Tensor) -> float:
    """A scalar for the log, detached from the graph."""
    return float(value.detach())


class _Trainer:
    """Holds the networks and optimizers; one method per phase of a step."""

    def __init__(self, cfg: GanConfig, device: torch.device, bf16: bool) -> None:
        self.cfg = cfg
        self.device = device
        self.bf16 = bf16
        # channels_last only with bf16: unlike the classifiers, the GAN's fp32 step runs slower
        # in it (0.86x contiguous, default config, on an AVX-512 CPU without BF16).
        self.memory_format = (
            (torch.channels_last if cfg.spatial_dims == 2 else torch.channels_last_3d)
            if bf16
            else torch.contiguous_format
        )
        self.G: ProgressionGenerator = build_generator(cfg).to(device)
        self.D: ProgressionDiscriminator = build_discriminator(cfg).to(device)
        self.G.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.D.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        # Lazy R1: Adam's moments are rescaled as in StyleGAN2 so the penalty's step matches.
        ratio = cfg.r1_every / (cfg.r1_every + 1)
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=cfg.lr_d * ratio, betas=(cfg.beta1**ratio, cfg.beta2**ratio)
        )
        self.window = HUWindow(cfg.window_low_hu, cfg.window_high_hu)
        self.size_target = size_target(cfg)
        self.ssim = losses.SSIMTerm(cfg.spatial_dims, cfg.patch_size)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def set_real(self, batch: _Batch) -> None:
        """The image a perfect generator would return for this batch.

        Paired: the true future inside the lesion ROI, the input outside it (feathered). The
        future scan has fresh noise and the patient lay slightly differently; outside the
        lesion the generator must keep the input, so that is what it is compared with, and D
        sees the same background in real and fake pairs (else "background differs from the
        input" would tell real from fake and push G to change anatomy).
        """
        if self.cfg.mode != "paired":
            batch.real = batch.source
            return
        weight = _lesion_roi(batch, self.cfg.patch_size, feather_mm=ROI_FEATHER_MM)
        batch.real = (weight * batch.target + (1 - weight) * batch.source).contiguous(
            memory_format=self.memory_format
        )

    @torch.no_grad()
    def set_prior(self, batch: _Batch, size_t: torch.Tensor) -> None:
        """Grow each input lesion geometrically to its target size (the generator's prior)."""
        scale = size_t / batch.source_size.clamp_min(1e-6)
        prior, mask = grow_lesion(batch.source, batch.source_mask, scale)
        batch.prior = prior.contiguous(memory_format=self.memory_format)
        batch.prior_mask = mask

    def _d_input(self, batch: _Batch, candidate: torch.Tensor) -> torch.Tensor:
        if self.cfg.mode == "paired":
            return torch.cat([batch.source, candidate], dim=1)
        return candidate

    def _augment_pair(
        self, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        both = losses.diff_augment(torch.cat([real, fake]), gen, self.cfg.augment)
        return both[: real.shape[0]], both[real.shape[0] :]

    def _targets(
        self, batch: _Batch, rng: np.random.Generator, sizes_by_stage: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target stage and size: the future's (paired), or drawn at or above the input.

        Unpaired: a stage at or after the input's, and the diameter (mm) of a random training
        lesion of that stage, never smaller than the input and never wider than the patch's
        lesion allowance (field of view / fov_per_diameter).
        """
        if self.cfg.mode == "paired":
            return batch.target_stage, batch.target_size
        n_stages = len(self.cfg.stages)
        fov_mm = (batch.spacing_mm * self.cfg.patch_size).tolist()
        largest = 1.0 / self.cfg.fov_per_diameter
        stages, sizes = [], []
        for s, d, fov in zip(
            batch.source_stage.tolist(), batch.source_size.tolist(), fov_mm, strict=True
        ):
            t = int(rng.integers(s, n_stages))
            pool = sizes_by_stage[t]
            drawn_mm = float(pool[rng.integers(0, len(pool))]) if len(pool) else 0.0
            stages.append(t)
            sizes.append(min(max(d, drawn_mm / fov), max(d, largest)))
        return (
            torch.tensor(stages, device=self.device),
            torch.tensor(sizes, device=self.device, dtype=torch.float32),
        )

    def d_main(
        self, batch: _Batch, stage_t: torch.Tensor, size_t: torch.Tensor, gen: torch.Generator
    ) -> dict[str, float]:
        with torch.no_grad(), self.autocast():
            fake = self.G(
                batch.source, batch.prior, stage_t, size_t, batch.source_size, batch.spacing_mm
            )
        real_img = batch.real
        real_stage = stage_t if self.cfg.mode == "paired" else batch.source_stage
        real_in, fake_in = self._augment_pair(
            self._d_input(batch, real_img), self._d_input(batch, fake.float()), gen
        )
        with self.autocast():
            real_logits, real_cls = self.D(real_in, real_stage)
            fake_logits, _ = self.D(fake_in, stage_t)
        loss = losses.d_hinge_loss(real_logits, fake_logits)
        terms = {"d_hinge": _item(loss)}
        if real_cls is not None:
            cls_loss = F.cross_entropy(real_cls.float(), batch.source_stage)
            loss = loss + self.cfg.lambda_cls * cls_loss
            terms["d_cls"] = _item(cls_loss)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return terms

    def d_reg(self, batch: _Batch, stage_t: torch.Tensor) -> dict[str, float]:
        real_img = batch.real
        real_stage = stage_t if self.cfg.mode == "paired" else batch.source_stage
        real_in = self._d_input(batch, real_img).detach().requires_grad_(True)
        logits, _ = self.D(real_in, real_stage)  # fp32: R1 is a second-order term
        penalty = losses.r1_penalty(logits, real_in)
        loss = penalty * (self.cfg.r1_gamma / 2) * self.cfg.r1_every
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"r1": _item(penalty)}

    def g_main(
        self, batch: _Batch, stage_t: torch.Tensor, size_t: torch.Tensor, gen: torch.Generator
    ) -> dict[str, float]:
        cfg = self.cfg
        with self.autocast():
            fake = self.G(
                batch.source, batch.prior, stage_t, size_t, batch.source_size, batch.spacing_mm
            )
        fake = fake.float()
        _, fake_in = self._augment_pair(
            self._d_input(batch, batch.real), self._d_input(batch, fake), gen
        )
        with self.autocast():
            fake_logits, fake_cls = self.D(fake_in, stage_t)
        adv = losses.g_hinge_loss(fake_logits)
        terms = {"g_adv": _item(adv)}
        loss = cfg.lambda_adv * adv
        roi = _lesion_roi(batch, cfg.patch_size)
        if cfg.mode == "paired":
            l1 = losses.gaussian_blur(fake - batch.real, BLUR_PX).abs().mean()
            ssim = self.ssim(fake, batch.real)
            lesion_w = dilate(torch.maximum(batch.source_mask, batch.target_mask), 2)
            lesion = losses.masked_l1(fake, batch.target, lesion_w, BLUR_PX)
            loss = loss + cfg.lambda_l1 * l1 + cfg.lambda_ssim * ssim + cfg.lambda_lesion * lesion
            terms.update(l1=_item(l1), ssim=_item(ssim), lesion_l1=_item(lesion))
        else:
            assert fake_cls is not None
            cls = F.cross_entropy(fake_cls.float(), stage_t)
            with torch.no_grad():
                back_prior, _ = grow_lesion(
                    fake, batch.prior_mask, batch.source_size / size_t.clamp_min(1e-6)
                )
            with self.autocast():
                back = self.G(
                    fake, back_prior, batch.source_stage, batch.source_size, size_t,
                    batch.spacing_mm,
                ).float()  # fmt: skip
                same = self.G(
                    batch.source, batch.source, batch.source_stage, batch.source_size,
                    batch.source_size, batch.spacing_mm,
                ).float()  # fmt: skip
            cycle = (back - batch.source).abs().mean()
            identity = (same - batch.source).abs().mean()
            loss = loss + cfg.lambda_cls * cls + cfg.lambda_cycle * cycle
            loss = loss + cfg.lambda_identity * identity
            terms.update(g_cls=_item(cls), cycle=_item(cycle), identity=_item(identity))
        size, diameter, dice = self._size_terms(batch, fake, roi, size_t)
        loss = loss + cfg.lambda_size * size + cfg.lambda_diameter * diameter
        terms.update(size_px=_item(size), diameter_px=_item(diameter))
        if dice is not None:
            loss = loss + cfg.lambda_dice * dice
            terms.update(dice=_item(dice))
        if not torch.isfinite(loss):
            raise TrainingError(
                "the generator loss is not finite",
                found=str({k: round(v, 4) for k, v in terms.items()}),
                hint="lower gan.lr_g / gan.lr_d or use --precision fp32",
            )
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return terms

    def _size_terms(
        self, batch: _Batch, fake: torch.Tensor, roi: torch.Tensor, size_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Area and greatest-diameter errors (pixels) of the rendered lesion vs its target.

        The rendered lesion is read like the fidelity ruler reads it (`metrics.score_patch`):
        cut at the input's own threshold, inside the ROI, leaving out tissue that was already
        dense in the input outside its lesion (chest wall, vessels). Paired, the target area is
        the true future's lesion mask there (the future *scan* thresholded would add vessel
        stubs the input's anatomy lacks, and pull every lesion too big); the target diameter is
        the recorded one. Unpaired, a disc of the drawn target diameter. Paired, the third term
        is 1 - soft Dice against the true future's lesion mask (None unpaired: no mask).

        `size_target: future` (paired) aims at the true future *scan* read the same way, near
        its lesion: its soft area and greatest diameter, and its pixels above the threshold for
        the Dice. The true future then pays none of the size or diameter terms. With the mask
        targets it does: in 3D, under the soft cut inside the ROI, LungSim's future lesions
        read 22% (solid) to 41% (ground glass) more volume than their masks hold, their edges
        blurring past the masks, so those targets train the GAN to draw lesions smaller and
        fainter than real ones (README, "Size terms that the true future passes").
        """
        threshold = batch.threshold_unit.reshape(-1, *([1] * (fake.ndim - 1)))
        background = (batch.source > threshold) & (dilate(batch.source_mask, 2) == 0)
        keep = roi * (~background).float()
        target_px = size_t * self.cfg.patch_size
        target_mask = batch.target_mask
        target_area = None
        if self.size_target == "future":
            near = torch.maximum(batch.target_mask, batch.prior_mask)
            keep = keep * dilate(near, FUTURE_NEAR_PX)
            with torch.no_grad():
                future = losses.soft_lesion_mask(batch.target, keep, batch.threshold_unit)
                target_area = future.flatten(1).sum(dim=1)
                target_px = losses.greatest_diameter_px(future)
                target_mask = (batch.target > threshold).float()
        elif self.size_target == "calibrated":
            # Aim where the ruler reads a real lesion of the target size: its diameter plus the
            # overshoot measured on this pair's input, its mask grown by half that per side.
            assert batch.ruler_excess_px is not None, "_as_tensors(..., ruler_excess=True)"
            excess = batch.ruler_excess_px.clamp_min(0.0)
            target_px = target_px + excess
            target_mask = _grow_masks(target_mask, torch.round(excess / 2))
        dice = None
        if self.cfg.mode == "paired":
            if target_area is None:
                target_area = (target_mask * keep).flatten(1).sum(dim=1)
            if self.cfg.lambda_dice > 0:
                mask = losses.soft_lesion_mask(fake, keep, batch.threshold_unit)
                dice = losses.soft_dice_loss(mask, target_mask * keep)
        else:
            target_area = math.pi * (target_px / 2) ** 2
        size = losses.size_loss(fake, target_area, keep, batch.threshold_unit)
        diameter = losses.diameter_loss(fake, target_px, keep, batch.threshold_unit)
        return size, diameter, dice

    def update_ema(self, step: int) -> None:
        # The classifier trainer's average, its decay ramped by the (0-based) step.
        ema_step(self.G_ema, self.G, ramped_decay(self.cfg.ema_beta, step))

    @torch.no_grad()
    def render(self, patches: PatchSet, use_ema: bool = True) -> np.ndarray:
        """Run G (or G_ema) over a PatchSet toward its targets, in chunks."""
        net = self.G_ema if use_ema else self.G
        outs = []
        for start in range(0, len(patches), 32):
            part = _as_tensors(
                patches.subset(range(start, min(start + 32, len(patches)))), self.device
            )
            source = part["source"].contiguous(memory_format=self.memory_format)
            prior, _ = grow_lesion(
                source, part["source_mask"], part["target_size"] / part["source_size"]
            )
            with self.autocast():
                out = net(
                    source,
                    prior.contiguous(memory_format=self.memory_format),
                    part["target_stage"],
                    part["target_size"],
                    part["source_size"],
                    part["spacing_mm"],
                )
            outs.append(out.float().cpu().numpy())
        return np.concatenate(outs)

    def load_state(self, payload: dict[str, Any]) -> int:
        self.G.load_state_dict(payload["G"])
        self.G_ema.load_state_dict(payload["G_ema"])
        self.D.load_state_dict(payload["D"])
        self.opt_g.load_state_dict(payload["opt_g"])
        self.opt_d.load_state_dict(payload["opt_d"])
        return int(payload["step"])


def _preview(patches: PatchSet, count: int = 8) -> PatchSet:
    """Up to `count` examples for the sample grids: the longest-horizon pair of each patient."""
    best: dict[str, int] = {}
    for i, patient in enumerate(patches.patient_ids):
        if patient not in best or patches.months[i] > patches.months[best[patient]]:
            best[patient] = i
    chosen = list(best.values())[:count]
    return patches.subset(chosen)


def _sizes_by_stage(patches: PatchSet, n_stages: int, patch_size: int) -> list[np.ndarray]:
    """Lesion diameters (mm) of the training inputs, per stage."""
    diameters = patches.source_size * patches.spacing_mm * patch_size
    return [diameters[patches.source_stage == s] for s in range(n_stages)]


def training_loop(
    cfg: GanConfig,
    train_set: PatchSet,
    val_set: PatchSet | None,
    out_dir: str | Path,
    *,
    train_patients: tuple[str, ...] = (),
    heldout_patients: tuple[str, ...] = (),
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> GanTrainResult:
    """Train the GAN on patch arrays and write checkpoint, losses and sample grids to `out_dir`.

    Args:
        cfg: resolved GAN config (`cfg.resume` continues from `out_dir/checkpoint.pt`).
        train_set: training examples.
        val_set: validation examples for the end-of-run L1 and the sample grids, or None.
        out_dir: run folder.
        train_patients: recorded in the checkpoint.
        heldout_patients: recorded in the checkpoint (evaluation refuses training patients).
        progress: show a progress bar.
        on_step: called after every step with the step number and its loss terms.

    Returns:
        What the run produced.
    """
    from lungcancer.progression.render import save_sample_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    # Under torchrun each rank draws its own batches (the global batch is batch_size x ranks);
    # rank 0 alone writes the log, samples and checkpoint. Each rank's device is fixed by its
    # local rank (cuda:N, or the CPU), as in the classifier trainer: cfg.device would put every
    # rank on the first GPU.
    context = current_context()
    policy = resolve_policy(cfg.precision, str(context.device) if context else cfg.device)
    device = policy.device
    rank = context.rank if context is not None else 0
    main = rank == 0
    if device.type == "cpu":
        torch.set_num_threads(threads_per_process(cfg.threads, physical_cores(), context))
    # fp16 (a CUDA GPU without bf16) runs in fp32: hinge logits and R1 gradients underflow in
    # fp16 without loss scaling, and one GradScaler per player is not worth it for this size.
    trainer = _Trainer(cfg, device, policy.name == "bf16")
    ckpt_path = out / CHECKPOINT_NAME
    start_step = 0
    if cfg.resume:
        if not ckpt_path.is_file():
            raise CheckpointError(
                "nothing to resume", path=ckpt_path, hint="drop --resume to start a new run"
            )
        payload = read_gan_checkpoint(ckpt_path)
        check_compatible(
            payload,
            ckpt_path,
            patch_size=cfg.patch_size,
            stages=cfg.stages,
            spatial_dims=cfg.spatial_dims,
        )
        start_step = trainer.load_state(payload)
    if context is not None:
        players = [trainer.G, trainer.G_ema, trainer.D]
        sync_replicas(context, players, [trainer.opt_g, trainer.opt_d])
    data = _as_tensors(
        train_set, device, trainer.window, ruler_excess=trainer.size_target == "calibrated"
    )
    sizes_by_stage = _sizes_by_stage(train_set, len(cfg.stages), cfg.patch_size)
    preview = _preview(val_set if val_set is not None and len(val_set) else train_set)
    max_diameter_mm = float((train_set.target_size * train_set.spacing_mm).max()) * cfg.patch_size
    log_path = out / "losses.jsonl"
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    last: dict[str, float] = {}
    logged_d_hinge: list[float] = []
    samples: list[Path] = []
    t0 = time.perf_counter()
    stopped_early = False
    done = start_step

    def save(step_done: int) -> None:
        save_gan_checkpoint(
            ckpt_path, cfg=cfg, generator=trainer.G, generator_ema=trainer.G_ema,
            discriminator=trainer.D, opt_g=trainer.opt_g, opt_d=trainer.opt_d, step=step_done,
            train_patients=train_patients, heldout_patients=heldout_patients,
            max_diameter_mm=max_diameter_mm, metrics=last,
        )  # fmt: skip

    bar = _progress_bar(progress and main)
    task = bar.add_task("gan train", total=cfg.steps, completed=start_step) if bar else None
    try:
        if bar:
            bar.start()
        with (log_path if main else Path(os.devnull)).open("a", encoding="utf-8") as log:
            for step in range(start_step, cfg.steps):
                rng = np.random.default_rng([cfg.seed, step, rank] if rank else [cfg.seed, step])
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + rank * 2**40)
                trainer.G.train()
                batch = _sample_batch(data, cfg.batch_size, rng, trainer.memory_format)
                trainer.set_real(batch)
                stage_t, size_t = trainer._targets(batch, rng, sizes_by_stage)
                trainer.set_prior(batch, size_t)
                terms = trainer.d_main(batch, stage_t, size_t, gen)
                if cfg.r1_gamma > 0 and step % cfg.r1_every == 0:
                    terms.update(trainer.d_reg(batch, stage_t))
                terms.update(trainer.g_main(batch, stage_t, size_t, gen))
                trainer.update_ema(step)
                for k, v in terms.items():
                    sums[k] += v
                    counts[k] += 1
                if on_step is not None:
                    on_step(step + 1, terms)
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    last = {k: sums[k] / counts[k] for k in sums}
                    logged_d_hinge.append(last["d_hinge"])
                    minutes = (time.perf_counter() - t0) / 60
                    log.write(
                        json.dumps({"step": done, "minutes": round(minutes, 3), **last}) + "\n"
                    )
                    log.flush()
                    sums.clear()
                    counts.clear()
                if main and (done % cfg.sample_every == 0 or done == cfg.steps):
                    path = out / f"samples_{done:06d}.png"
                    save_sample_grid(path, preview, trainer.render(preview), cfg.mode == "paired")
                    samples.append(path)
                if main and done % cfg.checkpoint_every == 0:
                    save(done)
                if bar and task is not None:
                    bar.update(
                        task,
                        completed=done,
                        description=f"gan train g={terms.get('l1', terms.get('g_adv', 0.0)):.3f}",
                    )
                late = cfg.max_minutes > 0 and (time.perf_counter() - t0) / 60 > cfg.max_minutes
                if context is not None and cfg.max_minutes > 0:
                    late = context.any_rank(late)  # clocks differ; all ranks stop together
                if late and done < cfg.steps:
                    stopped_early = True
                    break
    finally:
        if bar:
            bar.stop()
    steps_done = done
    if not last and sums:
        last = {k: sums[k] / counts[k] for k in sums}
    if main:
        save(steps_done)
    if context is not None:
        context.barrier()
    val_l1 = None
    if val_set is not None and len(val_set) and cfg.mode == "paired":
        val_l1 = float(np.abs(trainer.render(val_set) - val_set.target).mean())
    return GanTrainResult(
        out_dir=out,
        checkpoint=ckpt_path,
        steps=steps_done,
        minutes=(time.perf_counter() - t0) / 60,
        stopped_early=stopped_early,
        losses=last,
        val_l1=val_l1,
        d_margin=discriminator_margin(logged_d_hinge),
        log=log_path,
        samples=tuple(samples),
    )


def _progress_bar(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
