"""The epoch loop through `fit`: files, learning, determinism, resume, stops and refusals."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_builders import BlobDataset, make_spec

from lungcancer.errors import CheckpointError, ConfigError, TrainingError
from lungcancer.models import create_model
from lungcancer.train import api as train_api
from lungcancer.train.api import TrainResult, fit
from lungcancer.train.checkpoint import HISTORY_FIELDS, RunFolder, load_checkpoint
from lungcancer.train.precision import PrecisionPolicy
from lungcancer.train.schedule import WarmupCosine


def run_fit(
    out: Path,
    train_set: BlobDataset | None = None,
    val_set: BlobDataset | None = None,
    **spec_kwargs: object,
) -> TrainResult:
    spec = make_spec(**spec_kwargs)  # type: ignore[arg-type]
    folder = RunFolder(out, echo=False)
    with folder.locked():
        folder.check_fresh_or_resumable(spec.train_cfg.resume)
        return fit(
            spec,
            train_set if train_set is not None else BlobDataset(24, seed=1),
            val_set if val_set is not None else BlobDataset(8, seed=2),
            folder,
        )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_run_writes_its_folder(tmp_path: Path) -> None:
    result = run_fit(tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "best.pt", "last.pt", "history.jsonl", "history.csv", "train.log"):
        assert (run / name).is_file(), name
    assert not (run / ".lock").exists()
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] == [r["epoch"] for r in result.history]
    assert set(HISTORY_FIELDS) <= set(rows[0])
    assert (run / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_FIELDS)
    log = (run / "train.log").read_text()
    assert "precision fp32 on cpu" in log and "fp32 was requested" in log
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["model"] == {
        "name": "cnn",
        "args": {"in_chans": 1, "num_classes": 2, "spatial_dims": 2, "dropout": 0.1},
    }
    assert ckpt["class_names"] == ["benign", "malignant"]
    assert ckpt["epoch"] == 2
    assert ckpt["train_config"]["epochs"] == 2
    assert ckpt["data_config"]["image_size"] == 32
    assert set(ckpt["versions"]) == {"torch", "monai", "lungcancer"}
    assert isinstance(ckpt["git_hash"], str)


def test_training_learns_an_easy_task(tmp_path: Path) -> None:
    result = run_fit(
        tmp_path / "run",
        BlobDataset(64, seed=1),
        BlobDataset(24, seed=2),
        epochs=6,
        lr=3e-3,
    )
    assert result.best_metric > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_3d_volumes_train_and_checkpoint(tmp_path: Path, precision: str) -> None:
    train_set = BlobDataset(8, size=16, seed=1).as_volumes()
    val_set = BlobDataset(4, size=16, seed=2).as_volumes()
    result = run_fit(
        tmp_path / "run", train_set, val_set, spatial_dims=3, epochs=1, precision=precision
    )
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["model"]["args"]["spatial_dims"] == 3
    assert ckpt["state_dict"]["stages.0.0.weight"].shape == (32, 1, 3, 3, 3)
    assert result.history[0]["train_loss"] > 0


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    a = run_fit(tmp_path / "a", seed=3)
    b = run_fit(tmp_path / "b", seed=3)
    c = run_fit(tmp_path / "c", seed=4)
    assert_same_weights(a.last_checkpoint, b.last_checkpoint)
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
    assert not torch.equal(
        weights(a.last_checkpoint)["fc.weight"], weights(c.last_checkpoint)["fc.weight"]
    )


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_resume_from_an_epoch_boundary_continues_exactly(tmp_path: Path, precision: str) -> None:
    straight = run_fit(tmp_path / "straight", epochs=3, precision=precision)
    run_fit(tmp_path / "resumed", epochs=3, precision=precision, max_minutes=1e-6)
    partial = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert partial["epoch"] == 1
    resumed = run_fit(tmp_path / "resumed", epochs=3, precision=precision, resume=True)
    assert resumed.stopped == "completed"
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    assert resumed.best_epoch == straight.best_epoch


class InterruptingDataset(BlobDataset):
    """Sends the process a SIGINT (as Ctrl-C does) while fetching item number `at`."""

    def __init__(self, *args: object, at: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.at = at

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.calls + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(i)


def test_ctrl_c_saves_last_and_resume_continues_exactly(tmp_path: Path) -> None:
    # No precise BN: its reads of training items would move the dataset's read counter.
    straight = run_fit(tmp_path / "straight", epochs=2, precise_bn_batches=0)
    # Item 30 is in the second epoch (24 items per epoch): stop after its batch.
    interrupted = run_fit(
        tmp_path / "run", InterruptingDataset(24, seed=1, at=30), epochs=2, precise_bn_batches=0
    )
    assert interrupted.interrupted
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1
    assert ckpt["epoch_progress"]["steps"] == 1
    assert "continue with --resume" in (tmp_path / "run" / "train.log").read_text()
    resumed = run_fit(tmp_path / "run", epochs=2, resume=True, precise_bn_batches=0)
    assert resumed.stopped == "completed"
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    assert resumed.history[-1]["train_loss"] == pytest.approx(straight.history[-1]["train_loss"])


def test_ctrl_c_during_validation_stops_before_the_next_epoch(tmp_path: Path) -> None:
    interrupted = run_fit(tmp_path / "run", val_set=InterruptingDataset(8, seed=2, at=1), epochs=3)
    assert interrupted.interrupted
    assert len(interrupted.history) == 1  # the epoch whose validation saw Ctrl-C completed
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["epoch_progress"] is None
    assert run_fit(tmp_path / "run", epochs=3, resume=True).stopped == "completed"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # 24 items per epoch: the second epoch's images turn to NaN (counted in reads, so no
    # precise BN, which reads training items between the epochs).
    nan_later = BlobDataset(24, seed=1, nan_from=24)
    with pytest.raises(TrainingError, match="loss became nan"):
        run_fit(tmp_path / "run", nan_later, epochs=3, precise_bn_batches=0)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert "loss became nan" in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "run" / ".lock").exists()


def test_early_stopping_and_time_budget(tmp_path: Path) -> None:
    noise = BlobDataset(24, seed=1, labels=[i % 2 for i in range(24)])
    noise.images = torch.rand_like(noise.images)  # nothing to learn: AUC cannot keep rising
    early = run_fit(tmp_path / "early", noise, epochs=12, patience=1, lr=1e-5)
    assert early.stopped == "early_stopping"
    assert len(early.history) < 12
    budget = run_fit(tmp_path / "budget", epochs=5, max_minutes=1e-6)
    assert budget.stopped == "time_budget"
    assert len(budget.history) == 1


def _four_minutes_an_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    # fit reads the budget's clock when the session starts and after each epoch.
    ticks = itertools.count(0.0, 240.0)
    monkeypatch.setattr(train_api, "_clock", lambda: next(ticks))


def test_a_time_budget_too_short_for_the_epochs_ends_the_cosine_with_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _four_minutes_an_epoch(monkeypatch)
    result = run_fit(tmp_path / "run", epochs=6, max_minutes=10)
    # After epoch 1 (4 minutes), 10 minutes hold 2 epochs: the run plans 2 and ends after them.
    assert result.stopped == "time_budget"
    assert len(result.history) == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "4.0 minutes an epoch, so 2 of 6 epochs fit in 10" in log
    assert "epoch 2/2:" in log
    # The cosine was re-planned over those 2 epochs (3 steps each, the first warming up).
    planned = WarmupCosine(
        torch.optim.SGD([torch.zeros(1)], lr=1.0), base_lr=3e-3, warmup_steps=3, total_steps=6
    )
    unplanned = WarmupCosine(
        torch.optim.SGD([torch.zeros(1)], lr=1.0), base_lr=3e-3, warmup_steps=3, total_steps=18
    )
    assert result.history[1]["lr"] == pytest.approx(planned.lr_at(5))
    assert result.history[1]["lr"] < unplanned.lr_at(5) / 3


def test_a_time_budget_that_holds_every_epoch_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = run_fit(tmp_path / "plain", epochs=3)
    _four_minutes_an_epoch(monkeypatch)
    budget = run_fit(tmp_path / "budget", epochs=3, max_minutes=100)
    assert budget.stopped == "completed"
    assert [r["val_loss"] for r in budget.history] == [r["val_loss"] for r in plain.history]
    assert "epochs fit in" not in (tmp_path / "budget" / "train.log").read_text()


@pytest.mark.parametrize(
    ("minutes", "timed", "done", "expected"),
    [
        (4.0, 1, 1, 2),  # 6 minutes left hold one more 4-minute epoch
        (12.0, 3, 3, 3),  # the budget is spent: no more, but never fewer than done
        (0.0, 1, 1, 6),  # no time measured yet: keep the plan
        (1.0, 1, 1, 6),  # room for more than planned: never more than planned
        (8.0, 1, 3, 3),  # after a resume only this session's epochs set the pace
    ],
)
def test_epochs_within_budget(minutes: float, timed: int, done: int, expected: int) -> None:
    assert train_api.epochs_within_budget(10.0, minutes, timed, done, 6) == expected


def test_a_class_missing_from_validation_warns_and_still_scores(tmp_path: Path) -> None:
    classes = ("a", "b", "c")
    train_set = BlobDataset(24, num_classes=3, seed=1)
    val_set = BlobDataset(8, seed=2, labels=[0, 1] * 4)
    result = run_fit(tmp_path / "run", train_set, val_set, class_names=classes, epochs=1)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "classes absent from the validation split: c" in log
    assert 0.0 <= result.history[0]["val_macro_auc"] <= 1.0


@pytest.mark.parametrize("balance", ["weights", "none"])
def test_other_balancing_modes_train(tmp_path: Path, balance: str) -> None:
    train_set = BlobDataset(24, seed=1, labels=[0] * 18 + [1] * 6)
    result = run_fit(tmp_path / "run", train_set, epochs=1, balance=balance)
    assert result.history[0]["train_loss"] > 0


def test_frozen_backbone_does_not_move_then_trains_at_a_lower_rate(tmp_path: Path) -> None:
    source = run_fit(tmp_path / "source", epochs=1)
    frozen = run_fit(
        tmp_path / "frozen",
        epochs=2,
        freeze_epochs=2,
        pretrained=str(source.last_checkpoint),
    )
    before, after = weights(source.last_checkpoint), weights(frozen.last_checkpoint)
    assert torch.equal(before["stages.0.0.weight"], after["stages.0.0.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert all(r["backbone_frozen"] for r in frozen.history)

    thawed = run_fit(
        tmp_path / "thawed",
        epochs=2,
        freeze_epochs=1,
        backbone_lr_scale=0.1,
        pretrained=str(source.last_checkpoint),
    )
    assert [r["backbone_frozen"] for r in thawed.history] == [True, False]
    assert not torch.equal(
        before["stages.0.0.weight"], weights(thawed.last_checkpoint)["stages.0.0.weight"]
    )
    groups = load_checkpoint(thawed.last_checkpoint)["optimizer"]["param_groups"]
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales["backbone"] == 0.1 and scales["head"] == 1.0
    assert "backbone unfrozen" in (tmp_path / "thawed" / "train.log").read_text()


def test_a_used_folder_needs_resume_and_resume_needs_a_run(tmp_path: Path) -> None:
    run_fit(tmp_path / "run", epochs=1)
    with pytest.raises(TrainingError, match="already holds a training run"):
        run_fit(tmp_path / "run", epochs=1)
    with pytest.raises(TrainingError, match="nothing to resume"):
        run_fit(tmp_path / "empty", epochs=1, resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "densenet121"}, "another model"),
        ({"class_names": ("benign", "malignant", "other")}, "another class set"),
    ],
)
def test_resume_refuses_another_model_or_class_set(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    run_fit(tmp_path / "run", epochs=1)
    with pytest.raises(CheckpointError, match=message):
        run_fit(tmp_path / "run", epochs=2, resume=True, **change)


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(TrainingError, match=f"pid {holder.pid}") as info:
            run_fit(run, epochs=1)
        assert str(run) in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone now: its lock is stale and the next run takes the folder.
    assert run_fit(run, epochs=1).stopped == "completed"


def test_precision_requests_the_cpu_cannot_run_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        run_fit(tmp_path / "run", epochs=1, precision="fp16")


def test_a_slab_needs_one_input_channel_per_window_and_slice() -> None:
    from lungcancer.config import DataConfig, ModelConfig, TrainConfig, WindowConfig
    from lungcancer.train.api import _check_configs

    data = DataConfig(windows=(WindowConfig(), WindowConfig(40.0, 400.0)), slab_slices=3)
    with pytest.raises(ConfigError, match="slab") as info:
        _check_configs(data, ModelConfig(in_chans=2), TrainConfig())
    assert "model.in_chans = 6" in str(info.value)
    _check_configs(data, ModelConfig(in_chans=6), TrainConfig())


def test_max_steps_ends_the_run_mid_epoch_with_the_schedule_spanning_it(tmp_path: Path) -> None:
    # 24 items, batch 8: 3 steps an epoch, so 4 steps end a step into the second epoch.
    run = run_fit(tmp_path / "run", epochs=5, max_steps=4, warmup_epochs=0.5)
    assert run.stopped == "completed"
    assert len(run.history) == 2  # the partial epoch is validated and kept like a whole one
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["scheduler"]["step_count"] == 4 and ckpt["scheduler"]["total_steps"] == 4
    assert ckpt["epoch"] == 2 and ckpt["epoch_progress"] is None
    # The cosine spans the 4 steps (warmup 2), not the 15 of five epochs: half-way at step 3.
    ratio = ckpt["scheduler"]["min_lr_ratio"]
    assert run.history[-1]["lr"] == pytest.approx(3e-3 * (ratio + (1 - ratio) * 0.5))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step budget: 4 optimizer steps" in log
    # Resuming a run that used its budget trains nothing more.
    again = run_fit(tmp_path / "run", epochs=5, max_steps=4, warmup_epochs=0.5, resume=True)
    assert again.stopped == "completed" and len(again.history) == 2
    assert_same_weights(tmp_path / "run" / "last.pt", run.last_checkpoint)
    # More steps than the epochs hold: the epochs end the run, and the log says so.
    capped = run_fit(tmp_path / "capped", epochs=1, max_steps=50)
    assert len(capped.history) == 1
    assert load_checkpoint(capped.last_checkpoint)["scheduler"]["step_count"] == 3
    assert "the epochs end the run" in (tmp_path / "capped" / "train.log").read_text()


def test_ctrl_c_inside_a_step_budget_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = run_fit(tmp_path / "straight", epochs=3, max_steps=7)
    assert load_checkpoint(straight.last_checkpoint)["scheduler"]["step_count"] == 7
    # Item 30 is in the second epoch's first batch: stop after global step 4 of 7.
    interrupted = run_fit(
        tmp_path / "run", InterruptingDataset(24, seed=1, at=30), epochs=3, max_steps=7
    )
    assert interrupted.interrupted
    resumed = run_fit(tmp_path / "run", epochs=3, max_steps=7, resume=True)
    assert resumed.stopped == "completed"
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)


def test_a_negative_step_budget_is_a_config_error() -> None:
    from lungcancer.config import DataConfig, ModelConfig, TrainConfig
    from lungcancer.train.api import _check_configs

    with pytest.raises(ConfigError, match="max_steps"):
        _check_configs(DataConfig(), ModelConfig(), TrainConfig(max_steps=-1))


def test_progressive_resizing_trains_early_steps_small_and_validates_at_full_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lungcancer.train.api as api

    seen: list[tuple[bool, int]] = []  # (training, input side) of every forward pass

    def recording_model(*args: object, **kwargs: object) -> torch.nn.Module:
        net = create_model(*args, **kwargs)  # type: ignore[arg-type]
        net.register_forward_pre_hook(lambda m, a: seen.append((m.training, a[0].shape[-1])))
        return net

    monkeypatch.setattr(api, "create_model", recording_model)
    # 3 steps an epoch, 9 in all; a third of them (3) at 16 px instead of the data's 32.
    phase: dict[str, object] = {"low_res_px": 16, "low_res_fraction": 1 / 3, "ema_decay": 0.99}
    straight = run_fit(tmp_path / "straight", epochs=3, **phase)
    trained = [side for training, side in seen if training]
    assert trained == [16] * 3 + [32] * 6
    assert {side for training, side in seen if not training} == {32}
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "optimizer steps 1-3 of 9 on inputs resized to 16 px" in log
    # The weight average restarts at the first full-size step: it holds the last 6 only.
    assert load_checkpoint(straight.last_checkpoint)["ema"]["updates"] == 6
    # The phase follows the run's step count, so a Ctrl-C inside it resumes exactly: item 5
    # is in the first batch, so the run stops after step 1 of the phase's 3.
    interrupted = run_fit(
        tmp_path / "run",
        InterruptingDataset(24, seed=1, at=5),
        epochs=3,
        **phase,
    )
    assert interrupted.interrupted
    resumed = run_fit(tmp_path / "run", epochs=3, resume=True, **phase)
    assert resumed.stopped == "completed"
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)


@pytest.mark.parametrize(
    ("low_res", "match"),
    [
        ({"low_res_px": 128, "low_res_fraction": 0.5}, "smaller than the input"),
        ({"low_res_px": 16, "low_res_fraction": 0.5}, "no smaller than 32"),
        ({"low_res_px": 96}, "or neither"),
        ({"low_res_fraction": 0.5}, "or neither"),
        ({"low_res_px": 96, "low_res_fraction": 1.5}, "or neither"),
        ({"low_res_crop_px": (80, 112)}, "or neither"),
        ({"low_res_crop_px": (80,), "low_res_fraction": 0.5}, "one size per spatial axis"),
        ({"low_res_crop_px": (16, 112), "low_res_fraction": 0.5}, "at least 32"),
        ({"low_res_crop_px": (80, 144), "low_res_fraction": 0.5}, "at most the input's 128"),
        ({"low_res_crop_px": (128, 128), "low_res_fraction": 0.5}, "one of them smaller"),
        ({"low_res_crop_px": (80, 112), "low_res_px": 96, "low_res_fraction": 0.5}, "not both"),
    ],
)
def test_progressive_resizing_settings_are_checked(low_res: dict[str, float], match: str) -> None:
    from lungcancer.config import DataConfig, ModelConfig, TrainConfig
    from lungcancer.train.api import _check_configs

    with pytest.raises(ConfigError, match=match):
        _check_configs(DataConfig(image_size=128), ModelConfig(), TrainConfig(**low_res))  # type: ignore[arg-type]
    _check_configs(
        DataConfig(image_size=128), ModelConfig(), TrainConfig(low_res_px=96, low_res_fraction=0.5)
    )
    crop = TrainConfig(low_res_crop_px=(80, 112), low_res_fraction=0.5)
    _check_configs(DataConfig(image_size=128), ModelConfig(), crop)
    # In 3D a crop has three sizes, within the patch.
    volumes = DataConfig(spatial_dims=3, patch_size_3d=64)
    cube = TrainConfig(low_res_crop_px=(48, 48, 48), low_res_fraction=0.5)
    _check_configs(volumes, ModelConfig(spatial_dims=3), cube)
    with pytest.raises(ConfigError, match=r"expected: 3 sizes in \[32, 64\]"):
        _check_configs(volumes, ModelConfig(spatial_dims=3), crop)


def _fp16_scaled_policy(*_: object, **__: object) -> PrecisionPolicy:
    # The policy a GPU without bf16 gets (fp16 autocast + GradScaler), forced onto the CPU:
    # resolve_policy refuses fp16 there (slow), but torch runs it, so the scaler's path
    # through the loop, the checkpoint and --resume is exercised without a GPU.
    return PrecisionPolicy(torch.device("cpu"), "fp16", False, True, 1, "fp16 forced for a test")


def test_the_fp16_grad_scaler_path_trains_checkpoints_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lungcancer.train.api.resolve_policy", _fp16_scaled_policy)
    straight = run_fit(tmp_path / "straight", epochs=3, grad_clip=1.0)
    assert "precision fp16 on cpu" in (tmp_path / "straight" / "train.log").read_text()
    assert all(np.isfinite(r["train_loss"]) for r in straight.history)
    scaler = load_checkpoint(straight.last_checkpoint)["scaler"]
    # GradScaler starts at 2^16 and only halves on an overflow; its state travels with the run.
    assert 0 < scaler["scale"] <= 2.0**16 and scaler["_growth_tracker"] > 0
    run_fit(tmp_path / "resumed", epochs=3, grad_clip=1.0, max_minutes=1e-6)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = run_fit(tmp_path / "resumed", epochs=3, grad_clip=1.0, resume=True)
    assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    assert load_checkpoint(resumed.last_checkpoint)["scaler"] == scaler
