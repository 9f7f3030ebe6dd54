"""`train(data_cfg, model_cfg, train_cfg) -> TrainResult`: the whole training run.

Reads like nanoGPT: set up (data, model, optimizer, schedule, precision), then one loop over
epochs that trains, validates, checkpoints, logs, and stops early, on a time budget, on Ctrl-C
or on a non-finite loss. Every file the run writes goes through `RunFolder`, which only the
main process (rank 0) lets through, so a DDP launch needs no change here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from lungcancer.config import DataConfig, ModelConfig, TrainConfig, to_dict
from lungcancer.data.transforms import input_channels
from lungcancer.errors import ConfigError, TrainingError
from lungcancer.models import Classifier, create_model, list_models
from lungcancer.train.aux import AuxTraining, WithAux, aux_training
from lungcancer.train.checkpoint import (
    FORMAT,
    VERSION,
    RunFolder,
    capture_rng,
    git_hash,
    library_versions,
    progress_bar,
    restore_rng,
    seed_everything,
)
from lungcancer.train.distributed import (
    DistributedContext,
    current_context,
    distributed_session,
    evaluation_sampler,
    threads_per_process,
    training_sampler,
)
from lungcancer.train.ema import WeightEma
from lungcancer.train.loop import (
    BALANCE_MODES,
    EpochMetrics,
    EpochProgress,
    EpochSampler,
    LowResPhase,
    class_weights,
    epoch_metrics,
    epoch_seed,
    evaluate_epoch,
    gather_predictions,
    make_loader,
    train_one_epoch,
)
from lungcancer.train.precise_bn import calibration_batches, recompute_batch_norm
from lungcancer.train.precision import physical_cores, resolve_policy
from lungcancer.train.schedule import WarmupCosine, build_optimizer

# Progressive resizing's smallest input: DenseNet121 and ResNet50 downsample 32 times.
_MIN_LOW_RES_PX = 32


# The time budget's clock (a module attribute, so tests can run it fast).
_clock = time.monotonic


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run folder.
        best_checkpoint: checkpoint of the epoch with the best validation macro ROC-AUC.
        last_checkpoint: checkpoint of the last completed (or interrupted) epoch.
        best_metric: validation macro ROC-AUC of the best epoch (NaN if undefined).
        best_epoch: 1-based epoch of the best checkpoint (0 if no epoch completed).
        history: one row of metrics per completed epoch.
        stopped: "completed", "early_stopping", "time_budget" or "interrupted".
        class_names: the class list (class id = position).
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, Any]]
    stopped: str
    class_names: tuple[str, ...] = ()

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


@dataclass(frozen=True)
class RunSpec:
    """Everything a checkpoint must record to rebuild the model and repeat the run."""

    model_name: str
    model_args: dict[str, Any]
    class_names: tuple[str, ...]
    data_cfg: DataConfig
    model_cfg: ModelConfig
    train_cfg: TrainConfig


@dataclass
class _BestSoFar:
    auc: float = math.nan
    loss: float = math.inf
    epoch: int = 0
    epochs_since: int = 0

    def key(self) -> tuple[float, float]:
        return (_auc_key(self.auc), -self.loss)


def _auc_key(auc: float) -> float:
    # Early stopping watches macro AUC; a single-class validation split has none, and then
    # the loss decides alone (the same for every epoch of the run, as the split is fixed).
    return auc if math.isfinite(auc) else -math.inf


def train(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig) -> TrainResult:
    """Train a classifier on a dataset and write a run folder.

    Args:
        data_cfg: dataset, splits and preprocessing.
        model_cfg: architecture and initialisation.
        train_cfg: optimisation, precision, budget and the output folder (`out_dir`).

    Returns:
        Paths of the best and last checkpoints, the best metric and the history.

    Raises:
        ConfigError: inconsistent settings.
        DatasetError: unusable data.
        TrainingError: an empty split, a busy or used run folder, or a non-finite loss.
        CheckpointError: `resume` with a checkpoint of another model or class set.
    """
    _check_configs(data_cfg, model_cfg, train_cfg)
    # Under torchrun every process runs this; the session makes them one DDP job.
    with distributed_session(train_cfg.device) as context:
        return _train_locked(data_cfg, model_cfg, train_cfg, context)


def _train_locked(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    context: DistributedContext | None,
) -> TrainResult:
    from lungcancer.data import ClassificationDataset, SampleCache, prepare_data

    run = RunFolder(train_cfg.out_dir)
    with run.locked():
        run.check_fresh_or_resumable(train_cfg.resume)
        # Rank 0 first: it writes the split file and fills the cache; the others then read
        # that very split file, so no rank can train on a split of its own.
        with context.main_first() if context is not None else contextlib.nullcontext():
            rank_cfg = data_cfg
            if context is not None and not context.is_main and not data_cfg.split_file:
                rank_cfg = dataclasses.replace(data_cfg, split_file=str(run.path / "splits.json"))
            prepared = prepare_data(rank_cfg, run.path)
        run.keep_copy(prepared.split_file, "splits.json")
        for warning in prepared.audit.warnings:
            run.warn(f"data audit: {warning}")
        cache = SampleCache(data_cfg.cache_dir) if data_cfg.cache_dir else None
        splits = prepared.splits
        train_set = ClassificationDataset(
            prepared.index,
            splits["train"],
            data_cfg,
            train=True,
            cache=cache,
            masks=train_cfg.aux_mask_weight > 0,
        )
        val_set = ClassificationDataset(
            prepared.index, splits["val"], data_cfg, train=False, cache=cache
        )
        # The training images as validation sees them (no augmentation), for precise BN.
        calibration_set = train_set.without_augmentation()
        spec = RunSpec(
            model_name=model_cfg.name,
            model_args={
                "in_chans": model_cfg.in_chans,
                "num_classes": len(prepared.class_names),
                "spatial_dims": model_cfg.spatial_dims,
                "dropout": model_cfg.dropout,
                "pool": model_cfg.pool,
            },
            class_names=tuple(prepared.class_names),
            data_cfg=data_cfg,
            model_cfg=model_cfg,
            train_cfg=train_cfg,
        )
        return fit(spec, train_set, val_set, run, calibration_set=calibration_set)


def fit(
    spec: RunSpec,
    train_set: Dataset[tuple[torch.Tensor, int]],
    val_set: Dataset[tuple[torch.Tensor, int]],
    run: RunFolder,
    *,
    sampler: Sampler[int] | None = None,
    calibration_set: Dataset[tuple[torch.Tensor, int]] | None = None,
) -> TrainResult:
    """The epoch loop on ready datasets (any Dataset with a `labels` list works).

    Args:
        spec: model, classes and configs (recorded in every checkpoint).
        train_set: training samples; must have `labels` (class id per sample).
        val_set: validation samples; must have `labels`.
        run: the run folder (locked by the caller).
        sampler: training sampler; by default an `EpochSampler` following `train_cfg.balance`.
            It must offer `set_epoch(epoch, skip)` for resuming.
        calibration_set: the training samples without augmentation, index for index, for
            `train_cfg.precise_bn_batches`; by default `train_set` itself (augmented).

    Returns:
        The run's result.
    """
    cfg = spec.train_cfg
    train_labels = list(getattr(train_set, "labels", []))
    val_labels = list(getattr(val_set, "labels", []))
    if not train_labels or not val_labels:
        raise TrainingError(
            "the training and validation splits must both hold samples",
            path=run.path,
            found=f"train: {len(train_labels)}, val: {len(val_labels)} samples",
            hint="add data, or lower data.test_fraction / raise data.val_fraction",
        )
    num_classes = len(spec.class_names)
    context = current_context()
    seed_everything(cfg.seed)
    threads = threads_per_process(cfg.threads, physical_cores(), context)
    # Under torchrun each rank's device is fixed by its local rank (cuda:N, or the CPU).
    device = str(context.device) if context is not None else cfg.device
    policy = resolve_policy(cfg.precision, device, threads=threads)
    policy.apply_threads()
    run.log(policy.describe())

    net = create_model(spec.model_name, **spec.model_args)
    resumed = run.load_resume_state(spec) if cfg.resume else None
    if resumed is None and spec.model_cfg.pretrained:
        from lungcancer.models.pretrained import load_pretrained

        run.log(load_pretrained(net, spec.model_name, spec.model_cfg.pretrained).summary())
    elif resumed is not None:
        # With an EMA, "state_dict" is the average; the raw weights resume training.
        net.load_state_dict(resumed.get("train_state_dict") or resumed["state_dict"])
    model = policy.prepare_model(net, spec.model_args["spatial_dims"])
    assert isinstance(model, Classifier)
    ema = WeightEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if ema is not None and resumed is not None and resumed.get("ema"):
        ema.restore(resumed["state_dict"], resumed["ema"])
    # What is validated, selected and saved: the average when there is one.
    judged = ema.module if ema is not None else model
    aux = aux_training(cfg, train_set, model, resumed, policy)
    trained: nn.Module = model if aux is None else WithAux(model, aux.head)

    # The lower backbone rate is a transfer-learning device: from scratch every layer is new.
    scale = cfg.backbone_lr_scale if spec.model_cfg.pretrained else 1.0
    optimizer = training_optimizer(model, aux, cfg, backbone_lr_scale=scale)
    # Under DDP each process steps through its shard; the batch size is per process.
    per_process = context.shard_size(len(train_labels)) if context else len(train_labels)
    drop_last = per_process > cfg.batch_size  # a 1-image batch breaks batch norm
    steps_per_epoch = per_process // cfg.batch_size if drop_last else 1
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        if cfg.max_steps > total_steps:
            run.log(
                f"max_steps {cfg.max_steps} is more than {cfg.epochs} epochs hold "
                f"({total_steps} steps); the epochs end the run"
            )
        total_steps = min(total_steps, cfg.max_steps)
    schedule = WarmupCosine(
        optimizer,
        base_lr=cfg.lr,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        total_steps=total_steps,
    )
    low_res = _low_res_phase(cfg, total_steps, run)
    scaler = torch.amp.GradScaler(policy.device.type) if policy.use_grad_scaler else None
    weights = class_weights(train_labels, num_classes) if cfg.balance == "weights" else None
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(policy.device),
        label_smoothing=cfg.label_smoothing,
    )
    sampler = training_sampler(
        sampler or EpochSampler(train_labels, balance=cfg.balance, seed=cfg.seed), context
    )

    history: list[dict[str, Any]] = []
    best = _BestSoFar()
    start_epoch = 0
    progress = EpochProgress()
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["scheduler"])
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        history = list(resumed["history"])
        best = _BestSoFar(**resumed["best"])
        start_epoch = int(resumed["epoch"])
        progress = EpochProgress(**(resumed.get("epoch_progress") or {}))
        run.log(f"resumed from {run.last} at epoch {start_epoch + 1} (step {progress.steps})")
    run.save_configs(spec)
    run.log(
        f"{spec.model_name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{len(train_labels)} train / {len(val_labels)} val samples, classes "
        f"{', '.join(spec.class_names)}; balance={cfg.balance}, backbone lr x{scale:g}"
    )
    if aux is not None:
        run.log(aux.describe())

    stopped = "completed"
    session_start = _clock()
    # The epochs the run means to train: cfg.epochs, fewer once the time budget cannot hold them.
    planned_epochs = cfg.epochs
    calibration = calibration_batches(cfg, train_labels, calibration_set or train_set, judged)
    if calibration is not None:
        images = "no augmentation" if calibration_set is not None else "as the training set gives"
        run.log(
            f"precise BN: batch-norm statistics recomputed from {len(calibration)} training "
            f"batches of {cfg.batch_size} ({images}) before each validation"
        )
    val_loader = make_loader(
        val_set,
        batch_size=cfg.batch_size * 2,
        sampler=evaluation_sampler(len(val_labels), context),
        workers=cfg.workers,
        seed=cfg.seed,
    )
    with _stop_on_sigint() as local_stop, _errors_logged(run):
        # One rank's Ctrl-C stops every rank after the same step, or DDP would hang.
        stop_requested = context.agreed(local_stop) if context else local_stop
        for epoch in range(start_epoch, cfg.epochs):
            if stop_requested():  # Ctrl-C during validation or saving: last.pt is complete
                stopped = "interrupted"
                run.log(f"interrupted after epoch {epoch}; {run.last} holds it; --resume")
                break
            if schedule.step_count >= total_steps:  # resumed after the last step (max_steps)
                break
            _set_frozen(model, epoch, cfg.freeze_epochs, run)
            # Ranks draw different augmentations and dropout; rank 0 draws a single process's.
            seed = epoch_seed(cfg.seed, epoch) + (context.rank if context else 0)
            _reseed_epoch(train_set, seed)
            if progress.steps and resumed is not None and resumed.get("epoch_progress"):
                restore_rng(resumed["rng"])  # continue mid-epoch with the saved RNG streams
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch, skip=progress.seen)
            loader = make_loader(
                train_set if aux is None else aux.dataset,
                batch_size=cfg.batch_size,
                sampler=sampler,
                workers=cfg.workers,
                seed=seed,
                drop_last=drop_last,
            )
            bar = f"epoch {epoch + 1}/{planned_epochs}"
            with progress_bar(bar, _epoch_size(sampler)) as advance:

                def after_step(batch: int, advance: Callable[[int], None] = advance) -> None:
                    if ema is not None:
                        if low_res is not None and schedule.step_count == low_res.until_step + 1:
                            # The first full-size step: average only weights (and batch-norm
                            # statistics) fitted at the size that is validated and deployed.
                            ema.restart()
                        ema.update(model)
                    advance(batch)

                train_one_epoch(
                    context.wrap(trained) if context else trained,
                    loader,
                    optimizer,
                    schedule,
                    loss_fn,
                    policy,
                    progress=progress,
                    grad_clip=cfg.grad_clip,
                    scaler=scaler,
                    on_batch=after_step,
                    # Ctrl-C, or the step budget: the epoch ends at a batch boundary.
                    should_stop=lambda: stop_requested() or schedule.step_count >= total_steps,
                    aux_loss_fn=None if aux is None else aux.loss,
                    low_res=low_res,
                )
            if stop_requested():
                stopped = "interrupted"
                ckpt = _checkpoint(
                    spec, model, ema, optimizer, schedule, scaler, epoch, history, best, aux
                )
                ckpt["epoch_progress"] = vars(progress).copy()
                run.save_checkpoint("last.pt", ckpt)
                run.log(
                    f"interrupted during epoch {epoch + 1} after {progress.steps} steps; "
                    f"saved {run.last}; continue with --resume"
                )
                break

            val_started = time.perf_counter()
            if calibration is not None:
                recompute_batch_norm(judged, calibration, policy, context=context)
            predictions = gather_predictions(evaluate_epoch(judged, val_loader, policy))
            metrics = epoch_metrics(predictions, spec.class_names)
            _warn_absent(metrics, run)
            row = _history_row(
                epoch, schedule, _whole_epoch(progress, context), metrics, val_started, model
            )
            history.append(row)
            improved = (_auc_key(metrics.macro_auc), -metrics.loss) > best.key()
            if improved:
                best = _BestSoFar(metrics.macro_auc, metrics.loss, epoch + 1, 0)
            else:
                best.epochs_since += 1
            ckpt = _checkpoint(
                spec, model, ema, optimizer, schedule, scaler, epoch + 1, history, best, aux
            )
            ckpt["metrics"] = row
            run.save_checkpoint("last.pt", ckpt)
            if improved:
                run.save_checkpoint("best.pt", ckpt)
            run.write_history(history)
            run.log(_epoch_line(row, planned_epochs, improved))
            if context:
                context.barrier()  # every rank sees this epoch's files before going on
            progress = EpochProgress()
            resumed = None
            if cfg.max_steps and schedule.step_count >= total_steps:
                run.log(f"step budget: {schedule.step_count} optimizer steps (max_steps)")
                break
            if cfg.patience and best.epochs_since >= cfg.patience:
                stopped = "early_stopping"
                run.log(f"early stopping: no better validation AUC for {cfg.patience} epochs")
                break
            minutes = (_clock() - session_start) / 60
            if context:  # clocks differ; every rank must plan and stop alike
                minutes = context.sum([minutes])[0] / context.world_size
            over = bool(cfg.max_minutes) and minutes >= cfg.max_minutes
            if cfg.max_minutes and not over and epoch + 1 < planned_epochs:
                timed = epoch + 1 - start_epoch  # epochs of this session, which set the pace
                fits = epochs_within_budget(
                    cfg.max_minutes, minutes, timed, epoch + 1, planned_epochs
                )
                if fits < planned_epochs:
                    # End the cosine where the budget ends the run, rather than cut the run
                    # off at a high learning rate with the weights still moving.
                    planned_epochs = fits
                    schedule.total_steps = min(schedule.total_steps, fits * steps_per_epoch)
                    run.log(
                        f"time budget: {minutes / timed:.1f} minutes an "
                        f"epoch, so {fits} of {cfg.epochs} epochs fit in {cfg.max_minutes:g}; "
                        f"the learning rate now decays to its floor by the end of epoch {fits}"
                    )
            if epoch + 1 < cfg.epochs and (over or epoch + 1 >= planned_epochs):
                stopped = "time_budget"
                run.log(f"time budget: {minutes:.1f} of {cfg.max_minutes:g} minutes used")
                break
    run.close()
    if stopped != "interrupted":
        run.log(f"done ({stopped}); best epoch {best.epoch}, val macro AUC {best.auc:.4f}")
    return TrainResult(
        run_dir=run.path,
        best_checkpoint=run.best,
        last_checkpoint=run.last,
        best_metric=best.auc,
        best_epoch=best.epoch,
        history=history,
        stopped=stopped,
        class_names=spec.class_names,
    )


def epochs_within_budget(
    max_minutes: float, minutes: float, epochs_timed: int, epochs_done: int, planned: int
) -> int:
    """The run's epoch count that a time budget holds: the epochs done, plus as many more as
    the minutes left hold at this session's pace (`minutes` over `epochs_timed` epochs,
    validation included); never more than `planned`."""
    per_epoch = minutes / max(1, epochs_timed)
    if per_epoch <= 0:
        return planned
    more = math.floor(max(0.0, max_minutes - minutes) / per_epoch)
    return max(epochs_done, min(planned, epochs_done + more))


def training_optimizer(
    model: Classifier, aux: AuxTraining | None, cfg: TrainConfig, *, backbone_lr_scale: float
) -> torch.optim.Optimizer:
    """AdamW over the classifier (`build_optimizer`) and, when there is one, the auxiliary head
    at the head's full rate."""
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, backbone_lr_scale=backbone_lr_scale
    )
    if aux is not None:
        optimizer.add_param_group(
            {
                "params": list(aux.head.parameters()),
                "name": "aux",
                "weight_decay": cfg.weight_decay,
                "lr_scale": 1.0,
                "lr": cfg.lr,
            }
        )
    return optimizer


def _whole_epoch(progress: EpochProgress, context: DistributedContext | None) -> EpochProgress:
    """The epoch's training totals over all processes (this process's in a plain run)."""
    if context is None:
        return progress
    seen, loss_sum, correct = context.sum([progress.seen, progress.loss_sum, progress.correct])
    return EpochProgress(progress.steps, round(seen), loss_sum, round(correct), progress.seconds)


def _epoch_size(sampler: Sampler[int]) -> int:
    return len(sampler) if isinstance(sampler, Sized) else 0


def _check_configs(data_cfg: DataConfig, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    if model_cfg.name not in list_models():
        raise ConfigError(
            f"unknown model {model_cfg.name!r}",
            expected=" | ".join(list_models()),
            found=model_cfg.name,
            hint="pass --model with one of the registered models",
        )
    if cfg.balance not in BALANCE_MODES:
        raise ConfigError(
            "unknown class balancing", expected=" | ".join(BALANCE_MODES), found=cfg.balance
        )
    if model_cfg.spatial_dims != data_cfg.spatial_dims:
        raise ConfigError(
            "the model and the data disagree on 2D vs 3D",
            expected=f"model.spatial_dims == data.spatial_dims ({data_cfg.spatial_dims})",
            found=f"model.spatial_dims = {model_cfg.spatial_dims}",
            hint="set both to 2 (slices) or both to 3 (volume patches)",
        )
    if model_cfg.in_chans != input_channels(data_cfg):
        raise ConfigError(
            "the model's input channels must equal the number of CT windows (times the slab's "
            "slices for 2.5D input)",
            expected=f"model.in_chans = {input_channels(data_cfg)} ({len(data_cfg.windows)} "
            f"windows x {data_cfg.slab_slices if data_cfg.spatial_dims == 2 else 1} slices)",
            found=f"model.in_chans = {model_cfg.in_chans}",
            hint="set model.in_chans to len(data.windows) x data.slab_slices",
        )
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConfigError(
            "epochs, batch size and learning rate must be positive",
            found=f"epochs={cfg.epochs}, batch_size={cfg.batch_size}, lr={cfg.lr}",
        )
    if cfg.max_steps < 0:
        raise ConfigError(
            "train.max_steps must be 0 (the epochs decide) or a number of optimizer steps",
            expected="max_steps >= 0",
            found=str(cfg.max_steps),
        )
    full_px = data_cfg.image_size if data_cfg.spatial_dims == 2 else data_cfg.patch_size_3d
    if cfg.low_res_px and not _MIN_LOW_RES_PX <= cfg.low_res_px < full_px:
        raise ConfigError(
            "train.low_res_px must be smaller than the input it stands in for, and no smaller "
            f"than {_MIN_LOW_RES_PX} px (the networks downsample 32 times)",
            expected=f"{_MIN_LOW_RES_PX} <= low_res_px < {full_px} (the input size), or 0",
            found=str(cfg.low_res_px),
            hint="e.g. 96 for a 128 px input, or 0 to train every step at full size",
        )
    _check_low_res_crop(cfg, data_cfg, full_px)
    cheap = bool(cfg.low_res_px) or bool(cfg.low_res_crop_px)
    if not 0.0 <= cfg.low_res_fraction <= 1.0 or cheap != bool(cfg.low_res_fraction):
        raise ConfigError(
            "progressive resizing needs train.low_res_px (or train.low_res_crop_px) and "
            "train.low_res_fraction (the share of the optimizer steps at the smaller size), "
            "or neither",
            expected="low_res_px > 0 or low_res_crop_px set, with 0 < low_res_fraction <= 1; "
            "or all off",
            found=f"low_res_px={cfg.low_res_px}, low_res_crop_px={list(cfg.low_res_crop_px)}, "
            f"low_res_fraction={cfg.low_res_fraction}",
            hint="e.g. low_res_px: 96 with low_res_fraction: 0.6 for a 128 px input",
        )
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(
            "train.ema_decay must be 0 (no weight average) or a decay below 1",
            expected="0 <= ema_decay < 1, e.g. 0.998",
            found=str(cfg.ema_decay),
        )
    if cfg.precise_bn_batches < 0:
        raise ConfigError(
            "train.precise_bn_batches is a number of training batches",
            expected="0 (off) or more, e.g. 8",
            found=str(cfg.precise_bn_batches),
        )


def _check_low_res_crop(cfg: TrainConfig, data_cfg: DataConfig, full_px: int) -> None:
    """A crop phase needs one size per spatial axis, each within the input, one below it,
    none below what the networks downsample to a cell, and no resize phase beside it."""
    crop = cfg.low_res_crop_px
    if not crop:
        return
    axes = data_cfg.spatial_dims
    in_range = all(_MIN_LOW_RES_PX <= c <= full_px for c in crop)
    if cfg.low_res_px or len(crop) != axes or not in_range or min(crop) == full_px:
        raise ConfigError(
            "train.low_res_crop_px must give one size per spatial axis, each at least "
            f"{_MIN_LOW_RES_PX} px and at most the input's {full_px} px, one of them smaller, "
            "and cannot be combined with train.low_res_px",
            expected=f"{axes} sizes in [{_MIN_LOW_RES_PX}, {full_px}], e.g. "
            f"{[80, 112] if axes == 2 else [48, 48, 48]}, and low_res_px 0",
            found=f"low_res_crop_px={list(crop)}, low_res_px={cfg.low_res_px}",
            hint="crop (same pixel size) or resize (low_res_px), not both",
        )


def _low_res_phase(cfg: TrainConfig, total_steps: int, run: RunFolder) -> LowResPhase | None:
    """The cheap first phase (resized or cropped inputs) over the run's `total_steps` (None
    when off)."""
    if not (cfg.low_res_px or cfg.low_res_crop_px):
        return None
    phase = LowResPhase(
        cfg.low_res_px, round(cfg.low_res_fraction * total_steps), tuple(cfg.low_res_crop_px)
    )
    run.log(
        f"progressive resizing: optimizer steps 1-{phase.until_step} of {total_steps} on "
        f"{phase.describe()}, the rest at full size"
    )
    return phase


def _set_frozen(model: Classifier, epoch: int, freeze_epochs: int, run: RunFolder) -> None:
    if freeze_epochs <= 0:
        return
    frozen = epoch < freeze_epochs
    model.set_backbone_trainable(not frozen)
    if epoch == 0 and frozen:
        run.log(f"backbone frozen for the first {freeze_epochs} epoch(s); training the head")
    elif epoch == freeze_epochs:
        run.log("backbone unfrozen")


def _reseed_epoch(dataset: object, seed: int) -> None:
    """Seed every RNG an epoch uses, so epoch k is the same whether or not the run resumed."""
    seed_everything(seed)
    reseed = getattr(dataset, "reseed", None)
    if callable(reseed):
        reseed(seed)
    else:
        from monai.data.utils import set_rnd

        set_rnd(dataset, seed)


def _warn_absent(metrics: EpochMetrics, run: RunFolder) -> None:
    if metrics.absent_classes:
        run.warn(
            f"classes absent from the validation split: {', '.join(metrics.absent_classes)}; "
            "macro AUC is computed over the classes present"
        )


def _history_row(
    epoch: int,
    schedule: WarmupCosine,
    progress: EpochProgress,
    metrics: EpochMetrics,
    val_started: float,
    model: Classifier,
) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "lr": schedule.lr_at(max(0, schedule.step_count - 1)),
        "train_loss": progress.loss,
        "train_acc": progress.accuracy,
        "val_loss": metrics.loss,
        "val_acc": metrics.accuracy,
        "val_macro_auc": metrics.macro_auc,
        "val_macro_f1": metrics.macro_f1,
        "seconds": progress.seconds + (time.perf_counter() - val_started),
        "images_per_s": progress.images_per_s,
        "backbone_frozen": not any(p.requires_grad for _, p in model.backbone_parameters()),
    }


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
        f"AUC {row['val_macro_auc']:.4f} F1 {row['val_macro_f1']:.3f} | lr {row['lr']:.2e} "
        f"| {row['images_per_s']:.0f} img/s, {row['seconds']:.1f} s{' *' if improved else ''}"
    )


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    # Stored contiguous so loading never depends on the training memory format.
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _checkpoint(
    spec: RunSpec,
    model: Classifier,
    ema: WeightEma | None,
    optimizer: torch.optim.Optimizer,
    schedule: WarmupCosine,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    history: list[dict[str, Any]],
    best: _BestSoFar,
    aux: AuxTraining | None = None,
) -> dict[str, Any]:
    # "state_dict" is what inference loads: the average when there is one; the raw weights then
    # ride along under "train_state_dict" for --resume, as does the auxiliary head.
    extra: dict[str, Any] = {}
    if ema is not None:
        extra = {"train_state_dict": _weights(model), "ema": ema.state()}
    if aux is not None:
        extra["aux"] = {"spec": aux.spec.to_dict(), "state_dict": _weights(aux.head)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": spec.model_name, "args": dict(spec.model_args)},
        "class_names": list(spec.class_names),
        "data_config": to_dict(spec.data_cfg),
        "model_config": to_dict(spec.model_cfg),
        "train_config": to_dict(spec.train_cfg),
        "state_dict": _weights(ema.module if ema is not None else model),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "metrics": history[-1] if history else {},
        "best": vars(best).copy(),
        "history": [dict(r) for r in history],
        "epoch_progress": None,
        "rng": capture_rng(),
        "versions": library_versions(),
        "git_hash": git_hash(),
        **extra,
    }


@contextlib.contextmanager
def _errors_logged(run: RunFolder) -> Iterator[None]:
    """Record why a run stopped in train.log before the error reaches the caller."""
    try:
        yield
    except TrainingError as exc:
        run.log(f"error: {exc}")
        raise


@contextlib.contextmanager
def _stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a request to stop after the current batch.

    The loop then saves `last.pt` and returns; a second Ctrl-C interrupts at once.
    """
    requested = {"stop": False}
    previous: Any = None

    def handler(signum: int, frame: FrameType | None) -> None:
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"] = True

    in_main_thread = _is_main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested["stop"]
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
