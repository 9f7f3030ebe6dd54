"""Training on several processes under `torchrun`: process group, sharded data, DDP, reductions.

`lungcancer train` and `lungcancer gan train` take no flag for this. Launched by torchrun
(which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT) they
join the process group (NCCL on GPUs, gloo on CPUs), each process trains on its own shard of
every epoch, DistributedDataParallel averages the gradients, validation predictions are
gathered so metrics are those of the whole split, and only rank 0 writes files. The batch size
is per process: the global batch is `batch_size * world_size`.

Without torchrun's variables every helper here is a no-op and nothing is imported from
`torch.distributed` beyond the availability check.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from lungcancer.errors import ConfigError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A rank that waits longer than this for the others (a crashed peer, a stuck filesystem) fails
# instead of hanging; torchrun then stops the whole job.
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a multi-process run.

    Attributes:
        rank: global rank (0 is the process that writes files).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        local_world_size: processes on this machine (they share its CPU cores).
        backend: "nccl" or "gloo".
        device: this process's device.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs."""
        return self.rank == 0

    def shard_size(self, n: int) -> int:
        """Training samples per process per epoch (the epoch is padded to divide evenly)."""
        return math.ceil(n / self.world_size)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run a block on rank 0 before the others (it fills caches the others then reuse)."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every process if `flag` is True on any (all ranks must call it together)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def agreed(self, poll: Callable[[], bool]) -> Callable[[], bool]:
        """`poll` made collective: a stop request on one rank stops all at the same step."""
        return lambda: self.any_rank(poll())

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over all processes."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in DistributedDataParallel (BatchNorm made synchronous on GPUs).

        Build a fresh wrapper whenever parameters change `requires_grad` (a backbone freeze
        ends): DDP registers the trainable parameters when it is built. The wrapped module is
        still `model`, so optimizers and checkpoints keep using `model` itself.
        """
        if self.device.type == "cuda" and _has_plain_batch_norm(model):
            # Per-GPU batches are small; synchronised statistics match a single-GPU batch.
            # Children are replaced in place and keep their parameters, so optimizers still hold
            # the right tensors.
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.local_rank] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def sync_replicas(
    context: DistributedContext,
    modules: Sequence[nn.Module],
    optimizers: Sequence[torch.optim.Optimizer],
) -> None:
    """Keep hand-stepped model replicas identical on every rank, without DDP.

    For loops with several players and phases (a GAN: discriminator, R1 penalty, generator),
    which DDP's one-backward-per-step reducer does not fit. Rank 0's parameters and buffers are
    broadcast once; from then on every optimizer step first averages the gradients over all
    ranks, so every replica takes the same step, as stylegan2-ada does.

    Args:
        context: the process group.
        modules: the networks (their parameters and buffers are copied from rank 0).
        optimizers: their optimizers (each gets a pre-step gradient average).
    """
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor.data, src=0)
    for optimizer in optimizers:
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: average_gradients(opt.param_groups, context)
        )


def average_gradients(
    param_groups: Sequence[dict[str, object]], context: DistributedContext
) -> None:
    """Replace each parameter's gradient by its mean over all ranks (in one collective).

    A parameter without a gradient on this rank counts as zero when another rank has one, and
    stays without one when no rank has (so optimizers still skip it).
    """
    params = [p for group in param_groups for p in group["params"]]  # type: ignore[attr-defined]
    if not params:
        return
    device = context._collective_device()
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    present = present.to(device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    wanted = [p for p, any_rank in zip(params, present.tolist(), strict=True) if any_rank]
    if not wanted:
        return
    flat = torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device)
            for p in wanted
        ]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    offset = 0
    for p in wanted:
        n = p.numel()
        mean = flat[offset : offset + n].view(p.shape).to(p.device, p.dtype)
        if p.grad is None:
            p.grad = mean.clone()
        else:
            p.grad.copy_(mean)
        offset += n


def _has_plain_batch_norm(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
        for m in model.modules()
    )


def _int_variable(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(
            f"the environment variable {name} is not an integer",
            expected=f"{name} set by torchrun to a whole number",
            found=repr(value),
            hint="launch with `torchrun --nproc_per_node N -m lungcancer.cli ...`",
        ) from exc


def launched_by_torchrun() -> bool:
    """Whether torchrun (or a user imitating it) set the process-group variables."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(
    device: str = "auto", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistributedContext | None:
    """Join the process group torchrun describes in the environment.

    Args:
        device: the training device setting ("auto", "cpu", "cuda"); "cpu" forces gloo even
            on a GPU machine.
        timeout_s: how long a collective may wait for the other processes.

    Returns:
        The context, or None when this is a plain single-process run.

    Raises:
        ConfigError: torchrun's variables are incomplete or malformed.
    """
    if not launched_by_torchrun() or not dist.is_available():
        return None
    if dist.is_initialized():
        return current_context()
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(
            "the distributed launch is incomplete",
            expected="RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (set by torchrun)",
            found=f"missing {', '.join(missing)}",
            hint="launch with torchrun instead of setting RANK/WORLD_SIZE by hand",
        )
    rank, world_size = _int_variable("RANK"), _int_variable("WORLD_SIZE")
    local_rank = _int_variable("LOCAL_RANK")
    use_cuda = device.split(":")[0] != "cpu" and torch.cuda.is_available()
    if use_cuda:
        # One GPU per process: "cuda" then means this process's GPU everywhere else.
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return current_context()


def current_context() -> DistributedContext | None:
    """The context of an already initialised process group, or None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size()))),
        backend=backend,
        device=device,
    )


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistributedContext | None]:
    """Be part of torchrun's process group for the duration of a block.

    A plain run yields None. A group that already existed (the caller made it) is left open;
    one made here is torn down on exit, after every rank has arrived, so no rank leaves while
    another still writes the last files.
    """
    existed = dist.is_available() and dist.is_initialized()
    context = init_distributed(device)
    try:
        yield context
        if context is not None:
            context.barrier()
    finally:
        if context is not None and not existed:
            dist.destroy_process_group()


def threads_per_process(requested: int, cores: int, context: DistributedContext | None) -> int:
    """CPU threads for one process: the request, else the cores shared among local processes."""
    if requested > 0:
        return requested
    local = context.local_world_size if context is not None else 1
    return max(1, cores // max(1, local))


class ShardedSampler(Sampler[int]):
    """One process's share of another sampler's epoch: every `world_size`-th index from `rank`.

    With `pad`, the epoch is extended by its own first indices to a multiple of the world size
    (as `DistributedSampler` does), so every process takes the same number of steps, which DDP
    needs. Wrapping the class-balanced `EpochSampler` gives a distributed weighted sampler:
    the draws are those a single process would make, dealt out round-robin. Without `pad` (for
    evaluation) every sample is seen exactly once.

    Args:
        base: the single-process sampler (a pure function of its epoch).
        rank: this process's rank.
        world_size: number of processes.
        pad: repeat indices so shards have equal length.
    """

    def __init__(self, base: Sampler[int], rank: int, world_size: int, *, pad: bool) -> None:
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Pick the epoch (forwarded to the base) and drop this shard's first `skip` indices."""
        set_epoch = getattr(self.base, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        self.skip = skip

    def _full_length(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        if self.pad and order:
            total = math.ceil(len(order) / self.world_size) * self.world_size
            order = (order * math.ceil(total / len(order)))[:total]
        return iter(order[self.rank :: self.world_size][self.skip :])

    def __len__(self) -> int:
        n = self._full_length()
        if self.pad:
            share = math.ceil(n / self.world_size)
        else:
            share = len(range(self.rank, n, self.world_size))
        return max(0, share - self.skip)


class _Sequential(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


def evaluation_sampler(n: int, context: DistributedContext | None) -> Sampler[int] | None:
    """This process's share of an evaluation pass over `n` samples (None: all, in order)."""
    if context is None:
        return None
    return ShardedSampler(_Sequential(n), context.rank, context.world_size, pad=False)


def training_sampler(base: Sampler[int], context: DistributedContext | None) -> Sampler[int]:
    """`base` sharded for this process (itself in a single-process run)."""
    if context is None:
        return base
    return ShardedSampler(base, context.rank, context.world_size, pad=True)
