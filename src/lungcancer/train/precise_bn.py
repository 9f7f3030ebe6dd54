"""Precise batch-norm statistics: recompute them for the weights that are about to be judged.

In evaluation mode a batch-norm layer normalises with its running mean and variance, an
exponential average (momentum 0.1) over the training batches. Two things make those a poor fit
for the weights being validated:

- Early in a run the weights move faster than the average follows, so the statistics describe
  the network of several steps ago. A short run (the demo's DenseNet121: two epochs in its
  time budget on a slow CPU) can then call every slice one class in eval mode, with weights
  that are fine: `benchmarks/bn_recalibration_check.py` recomputed the statistics of such a
  checkpoint and its test F1 went from 0.050 to 0.261 with no weight changed.
- With a weight average (`train.ema_decay`) the averaged weights are a network nobody ran
  forward; the average of its running statistics is not that network's statistics. SWA
  (`torch.optim.swa_utils.update_bn`) recomputes them for the same reason.

`recompute_batch_norm` runs a fixed set of training images, un-augmented, through the model
with only its batch-norm layers in training mode and their momentum set to None, so each
layer's running statistics become the plain average of the batch statistics over those images
(fvcore's PreciseBN, Wu & Johnson, "Rethinking Batch in BatchNorm", 2021). Dropout stays off.
The batches have the training batch size, so each batch statistic is the kind the layer saw
in training. Under DDP every process runs the same batches and rank 0's result is broadcast,
so the replicas stay identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lungcancer.config import TrainConfig
from lungcancer.train.distributed import DistributedContext
from lungcancer.train.loop import EpochSampler
from lungcancer.train.precision import PrecisionPolicy

_BatchNorm = nn.modules.batchnorm._BatchNorm


def batch_norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's batch-norm layers that keep running statistics, in `modules()` order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def calibration_indices(
    labels: Sequence[int], *, batches: int, batch_size: int, balance: str, seed: int
) -> list[int]:
    """A fixed draw of `batches * batch_size` training samples, drawn the way training draws
    them (class-balanced with replacement when `balance == "sampler"`, else a shuffle, cycled
    if the split is smaller), so the statistics describe the class mix the layers trained on.
    The same for every epoch and every process of a run: a pure function of the arguments."""
    wanted = batches * batch_size
    sampler = EpochSampler(labels, balance=balance, seed=seed)
    sampler.set_epoch(-1)  # an order no training epoch uses
    order = list(sampler)
    return [order[i % len(order)] for i in range(wanted)] if order else []


def calibration_loader(
    dataset: Dataset[tuple[torch.Tensor, int]], indices: Sequence[int], *, batch_size: int
) -> DataLoader[tuple[torch.Tensor, int]]:
    """Batches of `dataset[indices]` in that order, every one full (no size-1 batch, which
    batch norm refuses in training mode)."""
    return DataLoader(
        Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False, drop_last=True
    )


def calibration_batches(
    cfg: TrainConfig,
    labels: Sequence[int],
    dataset: Dataset[tuple[torch.Tensor, int]],
    model: nn.Module,
) -> DataLoader[tuple[torch.Tensor, int]] | None:
    """The fixed batches a run recomputes the statistics from (`cfg.precise_bn_batches` of
    `cfg.batch_size`), or None when precise BN is off or the model has no batch norm. One draw
    for the whole run (the training seed's), so every epoch, a resumed run and every DDP
    process use the same images."""
    if not cfg.precise_bn_batches or not batch_norm_layers(model):
        return None
    indices = calibration_indices(
        labels,
        batches=cfg.precise_bn_batches,
        batch_size=cfg.batch_size,
        balance=cfg.balance,
        seed=cfg.seed,
    )
    return calibration_loader(dataset, indices, batch_size=cfg.batch_size)


@torch.no_grad()
def recompute_batch_norm(
    model: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    policy: PrecisionPolicy,
    *,
    context: DistributedContext | None = None,
) -> int:
    """Replace every batch-norm layer's running statistics with their average over `batches`.

    Args:
        model: the network (any mode; it is left in eval mode, its batch norms updated).
        batches: (images, ...) tuples; only the images are used.
        policy: device, autocast and memory format, as in training.
        context: under DDP, rank 0's statistics are broadcast to every process.

    Returns:
        The number of batches seen (0: the model has no batch norm, or `batches` was empty,
        and nothing changed).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())  # type: ignore[union-attr]
        for m in layers
    ]
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
        m.train()
    seen = 0
    try:
        for images, *_ in batches:
            with policy.autocast():
                model(policy.prepare_input(images))
            seen += 1
    finally:
        for m, momentum, (mean, var, count) in zip(layers, momenta, saved, strict=True):
            m.momentum = momentum
            m.eval()
            if seen == 0:  # nothing ran (or it failed at once): the old statistics stand
                m.running_mean.copy_(mean)  # type: ignore[union-attr]
                m.running_var.copy_(var)  # type: ignore[union-attr]
                m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
    if context is not None and seen:
        import torch.distributed as dist

        for m in layers:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                tensor = getattr(m, name)
                if context.backend == "nccl" or tensor.device.type == "cpu":
                    dist.broadcast(tensor, src=0)
                else:  # gloo collectives run on CPU tensors
                    host = tensor.cpu()
                    dist.broadcast(host, src=0)
                    tensor.copy_(host)
    return seen
