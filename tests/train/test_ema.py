"""The weight average: its arithmetic, and a run that validates, saves and resumes with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_api import assert_same_weights, run_fit
from torch import nn

from lungcancer.errors import ConfigError
from lungcancer.train.checkpoint import load_checkpoint
from lungcancer.train.ema import WeightEma
from lungcancer.train.inference import load_classifier


def test_the_average_moves_toward_the_weights_and_copies_counters() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2))
    ema = WeightEma(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 7
    ema.update(model)
    # The first update uses the ramped decay (1 + 1) / (10 + 1) = 2/11, not 0.9.
    beta = 2.0 / 11.0
    torch.testing.assert_close(ema.module[0].weight, start + (1.0 - beta))
    assert int(ema.module[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())
    for _ in range(200):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight, atol=1e-6, rtol=0)


def test_a_decay_outside_zero_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightEma(nn.Linear(1, 1), decay=1.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        from lungcancer.config import DataConfig, ModelConfig, TrainConfig
        from lungcancer.train.api import train

        train(DataConfig(source=str(tmp_path)), ModelConfig(), TrainConfig(ema_decay=1.5))


def test_a_run_with_ema_saves_the_average_for_inference_and_raw_weights_to_resume(
    tmp_path: Path,
) -> None:
    result = run_fit(tmp_path / "run", epochs=2, ema_decay=0.9)
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["ema"]["updates"] == 2 * 3  # 24 samples, batch 8, two epochs
    averaged, raw = ckpt["state_dict"], ckpt["train_state_dict"]
    assert averaged.keys() == raw.keys()
    assert not torch.equal(averaged["fc.weight"], raw["fc.weight"])
    loaded = load_classifier(result.last_checkpoint)
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value.float(), averaged[name].float())


def test_resume_with_ema_continues_exactly(tmp_path: Path) -> None:
    straight = run_fit(tmp_path / "straight", epochs=3, ema_decay=0.9)
    run_fit(tmp_path / "resumed", epochs=3, ema_decay=0.9, max_minutes=1e-6)
    resumed = run_fit(tmp_path / "resumed", epochs=3, ema_decay=0.9, resume=True)
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    a = load_checkpoint(straight.last_checkpoint)["train_state_dict"]
    b = load_checkpoint(resumed.last_checkpoint)["train_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
