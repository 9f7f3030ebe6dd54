"""Device and precision policy: the fastest numerics the hardware runs well, and why.

CPU: bf16 autocast + channels_last when the CPU has native BF16 (AVX512-BF16 or AMX), where it
trains about 2.4x faster than fp32 (benchmarks/bench_train.py). Otherwise fp32, because emulated
bf16 is slower (0.4-0.6x fp32 on an AVX-512 CPU without BF16), still in channels_last: oneDNN's
fp32 convolutions run faster in it too (there, 1.16-1.30x contiguous fp32 for the three 2D
classifiers, 1.01-1.09x in 3D: `bench_train.py --layouts`). An explicit "fp32" request keeps the
plain contiguous layout, the reference that speed-ups are measured against.
CUDA: autocast in bf16 where the GPU supports it, else fp16 with a GradScaler (fp16's narrow
range underflows small gradients without loss scaling).
Threads: one per physical core; hyper-threads share a core's matrix units and only add
contention.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lungcancer.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class PrecisionPolicy:
    """How tensors are placed and computed.

    Attributes:
        device: where the model runs.
        name: "fp32", "bf16" or "fp16".
        channels_last: whether models and inputs use the channels-last memory layout.
        use_grad_scaler: whether the loss is scaled (fp16 on CUDA only).
        threads: intra-op CPU threads.
        reason: one sentence for the run log saying why this policy was chosen.
    """

    device: torch.device
    name: str
    channels_last: bool
    use_grad_scaler: bool
    threads: int
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None when computing in fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The autocast context for forward passes (a no-op in fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def layout(self) -> str:
        """The memory layout in one word, for logs and benchmark labels."""
        return "channels_last" if self.channels_last else "contiguous"

    def memory_format(self, ndim: int) -> torch.memory_format:
        """The memory format for a tensor of `ndim` dims (4: 2D images, 5: 3D volumes)."""
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if ndim == 4 else torch.channels_last_3d

    def prepare_model(self, model: nn.Module, spatial_dims: int) -> nn.Module:
        """Move `model` to the device in the policy's memory format."""
        model = model.to(self.device)
        if self.channels_last:
            # nn.Module.to takes memory_format at runtime; its type stubs do not say so.
            fmt = self.memory_format(spatial_dims + 2)
            model = model.to(memory_format=fmt)  # type: ignore[call-overload]
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the policy's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim in (4, 5):
            x = x.contiguous(memory_format=self.memory_format(x.ndim))
        return x

    def apply_threads(self) -> None:
        """Set torch's intra-op thread count to the policy's (CPU only)."""
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)

    def describe(self) -> str:
        """One line for the run log."""
        threads = f", {self.threads} threads" if self.device.type == "cpu" else ""
        return f"precision {self.name} on {self.device} ({self.layout}{threads}): {self.reason}"


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    flags = _cpuinfo_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-thread siblings counted once)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical_id = value.strip()
        elif key == "core id":
            core_id = value.strip()
            cores.add((physical_id, core_id))
    counted = len(cores) or os.cpu_count() or 1
    return max(1, min(counted, allowed) if allowed else counted)


def resolve_policy(
    precision: str = "auto", device: str = "auto", *, threads: int = 0
) -> PrecisionPolicy:
    """Choose device and numerics from the request and the hardware.

    Args:
        precision: "auto" (the fastest supported), "fp32", "bf16" or "fp16".
        device: "auto" (CUDA when available), "cpu" or "cuda" (optionally "cuda:N").
        threads: CPU threads; 0 means one per physical core.

    Returns:
        The policy, with the reason it was chosen.

    Raises:
        ConfigError: the request cannot run on this machine (e.g. bf16 on a CPU without BF16,
            fp16 on a CPU, or CUDA without a GPU).
    """
    if precision not in PRECISIONS:
        raise ConfigError("unknown precision", expected=" | ".join(PRECISIONS), found=precision)
    dev = _resolve_device(device)
    if dev.type == "cuda":
        return _cuda_policy(precision, dev)
    return _cpu_policy(precision, dev, threads if threads > 0 else physical_cores())


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in DEVICES[1:]:
        raise ConfigError("unknown device", expected="auto | cpu | cuda[:N]", found=device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "CUDA was requested but no GPU is visible to torch",
            expected="a CUDA GPU and a CUDA build of torch",
            found=f"torch {torch.__version__}, torch.cuda.is_available() is False",
            hint="use --device cpu (or auto)",
        )
    return torch.device(device)


def _cpu_policy(precision: str, dev: torch.device, threads: int) -> PrecisionPolicy:
    native_bf16 = cpu_supports_bf16()
    if precision == "fp16":
        raise ConfigError(
            "fp16 needs a CUDA GPU; on a CPU it is slower than fp32",
            expected="auto, fp32 or bf16 on CPU",
            found="fp16",
            hint="use --precision auto",
        )
    if precision == "bf16" and not native_bf16:
        raise ConfigError(
            "this CPU has no native bf16 (no AVX512-BF16 or AMX); emulated bf16 is slower than "
            "fp32",
            expected="a CPU with avx512_bf16 or amx_bf16 flags",
            found="neither flag",
            hint="use --precision auto or fp32",
        )
    if precision == "fp32":
        return PrecisionPolicy(dev, "fp32", False, False, threads, "fp32 was requested")
    if native_bf16:
        why = "requested" if precision == "bf16" else "the CPU has native BF16 (AVX512-BF16/AMX)"
        return PrecisionPolicy(dev, "bf16", True, False, threads, f"bf16 autocast: {why}")
    return PrecisionPolicy(
        dev,
        "fp32",
        True,
        False,
        threads,
        "the CPU has no native BF16, so fp32 (in channels_last, which its kernels run faster)",
    )


def _cuda_policy(precision: str, dev: torch.device) -> PrecisionPolicy:
    bf16_ok = torch.cuda.is_bf16_supported()
    if precision == "fp32":
        return PrecisionPolicy(dev, "fp32", False, False, 0, "fp32 was requested")
    if precision == "bf16" and not bf16_ok:
        raise ConfigError(
            "this GPU does not support bf16",
            expected="an Ampere or newer GPU for bf16",
            found=torch.cuda.get_device_name(dev),
            hint="use --precision fp16 or auto",
        )
    if precision == "fp16" or not bf16_ok:
        why = "requested" if precision == "fp16" else "the GPU lacks bf16"
        return PrecisionPolicy(dev, "fp16", True, True, 0, f"fp16 AMP with gradient scaling: {why}")
    why = "requested" if precision == "bf16" else "the GPU supports bf16 (no loss scaling needed)"
    return PrecisionPolicy(dev, "bf16", True, False, 0, f"bf16 AMP: {why}")


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()
