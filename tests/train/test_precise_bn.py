"""Precise BN: the recomputed statistics, the fixed calibration draw, and a run that uses them."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from precise_bn_worker import batches, probe
from test_api import run_fit
from torch import nn
from train_builders import BlobDataset

from lungcancer.config import DataConfig, ModelConfig, TrainConfig
from lungcancer.errors import ConfigError
from lungcancer.train.api import train
from lungcancer.train.checkpoint import load_checkpoint
from lungcancer.train.precise_bn import (
    batch_norm_layers,
    calibration_indices,
    calibration_loader,
    recompute_batch_norm,
)
from lungcancer.train.precision import resolve_policy

WORKER = Path(__file__).parent / "precise_bn_worker.py"
FP32 = resolve_policy("fp32", "cpu", threads=1)


def expected_stats(model: nn.Sequential, data: list[tuple[torch.Tensor, torch.Tensor]]) -> list:
    """Per BN layer: the mean over batches of each batch's mean and unbiased variance of the
    layer's input, computed with every BN normalising by its batch (training) statistics and
    dropout off."""
    sums: dict[int, list[torch.Tensor]] = {1: [], 4: []}
    with torch.no_grad():
        for images, _ in data:
            x = images
            for i, layer in enumerate(model):
                if i in sums:
                    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
                    sums[i].append(torch.stack([flat.mean(1), flat.var(1, unbiased=True)]))
                    x = nn.functional.batch_norm(
                        x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps
                    )
                elif not isinstance(layer, nn.Dropout):
                    x = layer(x)
    return [torch.stack(sums[i]).mean(0) for i in (1, 4)]


def test_the_statistics_become_the_average_of_the_batch_statistics() -> None:
    model = probe()
    data = batches(3)
    want = expected_stats(model, data)
    model.train()  # any mode: it comes back in eval mode
    assert recompute_batch_norm(model, data, FP32) == 3
    for bn, (mean, var) in zip(batch_norm_layers(model), want, strict=True):
        torch.testing.assert_close(bn.running_mean, mean)
        torch.testing.assert_close(bn.running_var, var)
        assert int(bn.num_batches_tracked) == 3
        assert bn.momentum == 0.1 and not bn.training
    assert not model.training and not model[2].training


def test_the_result_does_not_depend_on_the_old_statistics() -> None:
    a, b = probe(), probe()
    for bn in batch_norm_layers(b):
        bn.running_mean.fill_(50.0)  # type: ignore[union-attr]
        bn.running_var.fill_(1e-3)  # type: ignore[union-attr]
    recompute_batch_norm(a, batches(2), FP32)
    recompute_batch_norm(b, batches(2), FP32)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_no_batches_or_no_batch_norm_changes_nothing() -> None:
    model = probe()
    for bn in batch_norm_layers(model):
        bn.running_mean.fill_(2.0)  # type: ignore[union-attr]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_batch_norm(model, [], FP32) == 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(bn.momentum == 0.1 for bn in batch_norm_layers(model))
    plain = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert recompute_batch_norm(plain, batches(1), FP32) == 0


def test_a_failing_forward_restores_the_momentum() -> None:
    model = probe()
    bad = [(torch.randn(4, 5, 6, 6), torch.zeros(4))]  # 5 channels into a 1-channel conv
    with pytest.raises(RuntimeError):
        recompute_batch_norm(model, bad, FP32)
    assert all(bn.momentum == 0.1 and not bn.training for bn in batch_norm_layers(model))
    assert all(float(bn.running_var.min()) == 1.0 for bn in batch_norm_layers(model))  # type: ignore[union-attr]


def test_the_calibration_draw_is_fixed_balanced_and_full() -> None:
    labels = [0] * 90 + [1] * 10
    first = calibration_indices(labels, batches=4, batch_size=25, balance="sampler", seed=3)
    again = calibration_indices(labels, batches=4, batch_size=25, balance="sampler", seed=3)
    other = calibration_indices(labels, batches=4, batch_size=25, balance="sampler", seed=4)
    assert first == again != other and len(first) == 100
    counts = Counter(labels[i] for i in first)
    assert 30 <= counts[1] <= 70  # balanced drawing, not the 10% of the split
    # Without balancing, a shuffle, cycled when the split is smaller than the draw.
    small = calibration_indices([0, 1, 0], batches=2, batch_size=4, balance="none", seed=0)
    assert len(small) == 8 and sorted(small[:3]) == [0, 1, 2] and small[3:6] == small[:3]
    loader = calibration_loader(BlobDataset(3), small, batch_size=4)
    assert [images.shape[0] for images, _ in loader] == [4, 4]


def test_a_negative_batch_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precise_bn_batches"):
        train(
            DataConfig(source=str(tmp_path)),
            ModelConfig(),
            TrainConfig(precise_bn_batches=-1),
        )


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_a_run_validates_and_saves_recomputed_statistics_and_trains_the_same(
    tmp_path: Path, ema_decay: float
) -> None:
    plain = run_fit(tmp_path / "plain", ema_decay=ema_decay)
    precise = run_fit(tmp_path / "precise", ema_decay=ema_decay, precise_bn_batches=2)
    log = (tmp_path / "precise" / "train.log").read_text()
    # fit() was given no un-augmented copy of the training set, and the log says so.
    assert (
        "precise BN: batch-norm statistics recomputed from 2 training batches of 8 (as the "
        "training set gives)" in log
    )
    a = load_checkpoint(plain.last_checkpoint)
    b = load_checkpoint(precise.last_checkpoint)
    # Training is untouched: the raw weights (parameters, not statistics) are the same.
    raw_a = a.get("train_state_dict") or a["state_dict"]
    raw_b = b.get("train_state_dict") or b["state_dict"]
    buffers = [k for k in a["state_dict"] if k.endswith(("running_mean", "running_var"))]
    assert buffers
    for key in raw_a:
        if key not in buffers and not key.endswith("num_batches_tracked"):
            assert torch.equal(raw_a[key], raw_b[key]), key
    # What was validated and saved carries the statistics of the calibration batches: the
    # same draw recomputed on the saved weights reproduces them exactly.
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in buffers)
    from lungcancer.models import create_model

    spec = b["model"]
    model = create_model(spec["name"], **spec["args"])
    model.load_state_dict(b["state_dict"])
    train_set = BlobDataset(24, seed=1)
    indices = calibration_indices(
        train_set.labels, batches=2, batch_size=8, balance="sampler", seed=0
    )
    recompute_batch_norm(model, calibration_loader(train_set, indices, batch_size=8), FP32)
    for key in buffers:
        torch.testing.assert_close(model.state_dict()[key], b["state_dict"][key])
    assert [r["val_loss"] for r in plain.history] != [r["val_loss"] for r in precise.history]


def test_resume_with_precise_bn_continues_exactly(tmp_path: Path) -> None:
    settings: dict[str, object] = {"epochs": 3, "ema_decay": 0.9, "precise_bn_batches": 2}
    straight = run_fit(tmp_path / "straight", **settings)
    run_fit(tmp_path / "resumed", **settings, max_minutes=1e-6)
    resumed = run_fit(tmp_path / "resumed", **settings, resume=True)
    a = load_checkpoint(straight.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    for part in ("state_dict", "train_state_dict"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]


def test_ddp_processes_end_with_rank_zeros_statistics(
    tmp_path: Path, torchrun: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    torchrun(str(WORKER), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Each rank ran different batches; both now hold what rank 0's batches give alone.
    alone = probe()
    recompute_batch_norm(alone, batches(2, seed=0), FP32)
    for key, value in alone.state_dict().items():
        assert torch.equal(ranks[0][key], value), key
        assert torch.equal(ranks[1][key], value), key
    own = probe()
    recompute_batch_norm(own, batches(2, seed=1), FP32)  # what rank 1 had alone
    assert not torch.equal(own.state_dict()["1.running_mean"], ranks[1]["1.running_mean"])
