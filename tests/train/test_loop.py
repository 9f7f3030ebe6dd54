"""Samplers, loss weights, the epoch metrics and the NaN guard."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn
from train_builders import BlobDataset

from lungcancer.errors import TrainingError
from lungcancer.models import create_model
from lungcancer.train.loop import (
    EpochProgress,
    EpochSampler,
    LowResPhase,
    Predictions,
    class_weights,
    epoch_metrics,
    make_loader,
    train_one_epoch,
)
from lungcancer.train.precision import PrecisionPolicy, resolve_policy
from lungcancer.train.schedule import WarmupCosine, build_optimizer


@pytest.mark.parametrize("balance", ["sampler", "none"])
def test_epoch_order_depends_only_on_seed_and_epoch(balance: str) -> None:
    labels = [0] * 30 + [1] * 10
    a = EpochSampler(labels, balance=balance, seed=1)
    b = EpochSampler(labels, balance=balance, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    b.set_epoch(3, skip=16)
    assert list(b) == list(a)[16:] and len(b) == 24


def test_shuffle_is_a_permutation_and_the_balanced_sampler_evens_out_classes() -> None:
    labels = [0] * 90 + [1] * 10
    shuffle = EpochSampler(labels, balance="none", seed=0)
    assert sorted(shuffle) == list(range(100))
    balanced = EpochSampler(labels, balance="sampler", seed=0)
    drawn = Counter(
        labels[i] for epoch in range(5) for i in (balanced.set_epoch(epoch) or balanced)
    )
    assert 0.4 < drawn[1] / sum(drawn.values()) < 0.6


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    weights = class_weights([0, 0, 0, 1], num_classes=3)
    assert weights[0] * 3 == pytest.approx(weights[1])
    assert weights[2] == 0
    assert (weights[0] + weights[1]) / 2 == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("labels", "probs", "auc", "f1", "absent"),
    [
        ([0, 0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]], 1.0, 1.0, ()),
        ([0, 0, 1, 1], [[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]], 0.0, 0.0, ()),
        # Class "c" has no sample: AUC over a and b only, and it is reported absent.
        (
            [0, 1, 0, 1],
            [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]],
            1.0,
            1.0,
            ("c",),
        ),
        ([1, 1], [[0.2, 0.8], [0.4, 0.6]], math.nan, 1.0, ("a",)),
    ],
)
def test_epoch_metrics(
    labels: list[int], probs: list[list[float]], auc: float, f1: float, absent: tuple[str, ...]
) -> None:
    names = ("a", "b", "c")[: len(probs[0])]
    metrics = epoch_metrics(Predictions(np.array(labels), np.array(probs), 0.5), names)
    if math.isnan(auc):
        assert math.isnan(metrics.macro_auc)
    else:
        assert metrics.macro_auc == pytest.approx(auc)
    assert metrics.macro_f1 == pytest.approx(f1)
    assert metrics.absent_classes == absent
    assert metrics.loss == 0.5


def test_nan_inputs_raise_a_training_error_before_any_update() -> None:
    model = create_model("cnn", num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, backbone_lr_scale=1.0)
    schedule = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=10)
    data = BlobDataset(8, nan_from=0)
    loader = make_loader(data, batch_size=4, sampler=None, workers=0, seed=0)
    with pytest.raises(TrainingError, match="lower the learning rate"):
        train_one_epoch(
            model,
            loader,
            optimizer,
            schedule,
            nn.CrossEntropyLoss(),
            resolve_policy("fp32", "cpu", threads=1),
            progress=EpochProgress(),
        )
    for key, value in model.state_dict().items():
        if value.is_floating_point() and "running" not in key:
            assert torch.equal(value, before[key]), key


def test_should_stop_ends_the_epoch_at_a_batch_boundary() -> None:
    model = create_model("cnn", num_classes=2)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, backbone_lr_scale=1.0)
    schedule = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=10)
    loader = make_loader(BlobDataset(16), batch_size=4, sampler=None, workers=0, seed=0)
    progress = train_one_epoch(
        model,
        loader,
        optimizer,
        schedule,
        nn.CrossEntropyLoss(),
        resolve_policy("fp32", "cpu", threads=1),
        progress=EpochProgress(),
        should_stop=lambda: True,
    )
    assert (progress.steps, progress.seen, schedule.step_count) == (1, 4, 1)


def test_low_res_phase_resizes_only_the_early_steps_with_antialiasing() -> None:
    phase = LowResPhase(px=8, until_step=3)
    # A one-pixel checkerboard is all detail above the new grid's Nyquist limit: resized a
    # third with antialiasing it blurs to its mean; plain bilinear or nearest sampling would
    # pick single pixels (0 or 1) and alias it.
    board = (torch.arange(24)[:, None] + torch.arange(24)[None, :]) % 2
    images = board.float().expand(2, 3, 24, 24)
    small = phase.resize(images, step=2)
    assert small.shape == (2, 3, 8, 8)
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)
    assert phase.resize(images, step=3) is images  # full size from `until_step` on
    volumes = board.float().expand(1, 1, 24, 24, 24)
    assert phase.resize(volumes, step=0).shape == (1, 1, 8, 8, 8)
    assert phase.resize(small, step=0) is small  # already at the size


def test_a_crop_phase_keeps_the_pixel_size_and_crops_grid_targets_with_the_images() -> None:
    phase = LowResPhase(px=0, until_step=2, crop_px=(16, 24))
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    mask = (images[:, :1] % 7 == 0).float()  # on the input's grid: cropped with it
    mask[1] = float("nan")  # a sample without a mask stays unknown
    columns = torch.randn(2, 4)  # per-sample targets: left alone
    small, (mask_crop, kept) = phase.apply(images, [mask, columns], step=1)
    # The central 16 x 24: rows 8-23, columns 4-27, pixel for pixel (no resampling).
    assert torch.equal(small, images[:, :, 8:24, 4:28])
    assert torch.equal(mask_crop[0], mask[0, :, 8:24, 4:28])
    assert mask_crop.shape == (2, 1, 16, 24) and torch.isnan(mask_crop[1]).all()
    assert kept is columns
    full, (mask_full, _) = phase.apply(images, [mask, columns], step=2)
    assert full is images and mask_full is mask  # full size from `until_step` on
    # A size at or above the input's along an axis leaves that axis whole.
    wide = LowResPhase(px=0, until_step=2, crop_px=(16, 40)).apply(images, [], step=0)[0]
    assert torch.equal(wide, images[:, :, 8:24, :])
    volumes = torch.zeros(1, 1, 8, 32, 32)
    assert LowResPhase(0, 1, (4, 16, 16)).apply(volumes, [], step=0)[0].shape == (1, 1, 4, 16, 16)
    with pytest.raises(ValueError, match="2-axis crop"):
        phase.apply(volumes, [], step=0)
    # Resizing leaves a grid target alone: the resized image still spans all of it.
    resized, (same, _) = LowResPhase(px=16, until_step=2).apply(images, [mask, columns], step=0)
    assert resized.shape == (2, 3, 16, 16) and same is mask


def test_the_low_res_phase_follows_the_run_step_count_across_epochs() -> None:
    seen: list[tuple[int, ...]] = []
    model = create_model("cnn", in_chans=3, num_classes=2)
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[2:])))
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, backbone_lr_scale=1.0)
    schedule = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=8)
    data = BlobDataset(16)
    data.images = data.images.repeat(1, 3, 1, 1)  # 3 channels: the layout check is not vacuous
    loader = make_loader(data, batch_size=4, sampler=None, workers=0, seed=0)
    # fp32 in channels_last (any CPU): the layout the bf16 policy uses must survive resizing.
    policy = dataclasses.replace(resolve_policy("fp32", "cpu", threads=1), channels_last=True)
    model.register_forward_pre_hook(
        lambda _m, args: (
            None
            if args[0].is_contiguous(memory_format=torch.channels_last)
            else pytest.fail("the resized batch lost the policy's memory format")
        )
    )
    for _epoch in range(2):  # 4 steps an epoch; the phase ends at step 6 of the run
        train_one_epoch(
            policy.prepare_model(model, 2),
            loader,
            optimizer,
            schedule,
            nn.CrossEntropyLoss(),
            policy,
            progress=EpochProgress(),
            low_res=LowResPhase(px=16, until_step=6),
        )
    assert seen == [(16, 16)] * 6 + [(32, 32)] * 2


def test_an_fp16_overflow_step_is_skipped_and_the_loss_scale_halves() -> None:
    # fp16 AMP (a GPU without bf16) scales the loss; a step whose gradients overflow must
    # leave the weights as they were and halve the scale, and the next finite step must
    # update them. Run on the CPU with the CUDA policy's scaler logic.
    model = create_model("cnn", num_classes=2)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, backbone_lr_scale=1.0)
    schedule = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=10)
    policy = PrecisionPolicy(torch.device("cpu"), "fp16", False, True, 1, "fp16 for a test")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    calls = []

    def overflow_once(grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.full_like(grad, math.inf) if len(calls) == 1 else grad

    model.fc.weight.register_hook(overflow_once)
    before = {k: v.clone() for k, v in model.named_parameters()}
    loader = make_loader(BlobDataset(4), batch_size=4, sampler=None, workers=0, seed=0)
    run = dict(progress=EpochProgress(), grad_clip=1.0, scaler=scaler)
    train_one_epoch(model, loader, optimizer, schedule, nn.CrossEntropyLoss(), policy, **run)
    assert scaler.get_scale() == 2.0**9
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name
    run["progress"] = EpochProgress()
    train_one_epoch(model, loader, optimizer, schedule, nn.CrossEntropyLoss(), policy, **run)
    assert not torch.equal(model.fc.weight, before["fc.weight"])
    assert scaler.get_scale() == 2.0**9
