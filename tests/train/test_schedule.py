"""Warmup + cosine, weight-decay groups and the backbone learning-rate scale."""

from __future__ import annotations

import itertools

import pytest
import torch

from lungcancer.models import create_model
from lungcancer.train.schedule import WarmupCosine, build_optimizer, param_groups


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, base_lr=1.0, warmup_steps=4, total_steps=104)
    warmup = [schedule.lr_at(s) for s in range(4)]
    assert warmup == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule.lr_at(4) == pytest.approx(1.0)
    assert schedule.lr_at(54) == pytest.approx(0.505)  # half-way: (1 + 0.01) / 2
    assert schedule.lr_at(104) == pytest.approx(0.01)
    decay = [schedule.lr_at(s) for s in range(4, 105)]
    assert all(a >= b for a, b in itertools.pairwise(decay))


def test_no_weight_decay_on_norms_and_biases_and_a_scaled_backbone() -> None:
    model = create_model("densenet121", num_classes=3)
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.05, backbone_lr_scale=0.1)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert all(p.ndim == 1 for p in groups["backbone_no_decay"]["params"])
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["weight_decay"] == 0.05
    assert groups["backbone"]["lr_scale"] == 0.1 and groups["head"]["lr_scale"] == 1.0
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_apply_sets_each_group_to_its_scaled_rate_and_resume_keeps_the_step() -> None:
    model = create_model("cnn", num_classes=2)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1)
    schedule = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=10)
    for _ in range(3):
        schedule.advance()
    head_lr = schedule.apply()
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(head_lr * group["lr_scale"])
    again = WarmupCosine(optimizer, base_lr=1e-3, warmup_steps=0, total_steps=10)
    again.load_state_dict(schedule.state_dict())
    assert again.apply() == head_lr
