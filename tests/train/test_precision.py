"""The precision policy: what runs where, and why."""

from __future__ import annotations

import pytest
import torch

import lungcancer.train.precision as precision
from lungcancer.errors import ConfigError
from lungcancer.train.precision import physical_cores, resolve_policy


@pytest.mark.parametrize(
    ("native_bf16", "requested", "name", "channels_last", "reason"),
    [
        (True, "auto", "bf16", True, "native BF16"),
        (False, "auto", "fp32", True, "no native BF16"),
        (True, "bf16", "bf16", True, "requested"),
        (True, "fp32", "fp32", False, "fp32 was requested"),
    ],
)
def test_cpu_policy(
    monkeypatch: pytest.MonkeyPatch,
    native_bf16: bool,
    requested: str,
    name: str,
    channels_last: bool,
    reason: str,
) -> None:
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native_bf16)
    policy = resolve_policy(requested, "cpu", threads=1)
    assert (policy.name, policy.channels_last, policy.use_grad_scaler) == (
        name,
        channels_last,
        False,
    )
    assert reason in policy.describe()
    assert policy.autocast_dtype == (torch.bfloat16 if name == "bf16" else None)


@pytest.mark.parametrize(
    ("native_bf16", "requested", "device", "message"),
    [
        (False, "bf16", "cpu", "no native bf16"),
        (True, "fp16", "cpu", "fp16 needs a CUDA GPU"),
        (True, "fp8", "cpu", "unknown precision"),
        (True, "auto", "tpu", "unknown device"),
    ],
)
def test_requests_this_machine_cannot_serve_are_refused(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool, requested: str, device: str, message: str
) -> None:
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native_bf16)
    with pytest.raises(ConfigError, match=message):
        resolve_policy(requested, device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no GPU is visible"):
        resolve_policy("auto", "cuda")


def test_bf16_detection_falls_back_to_cpuinfo_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx512f", "amx_bf16"})
    assert precision.cpu_supports_bf16()
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx2"})
    assert not precision.cpu_supports_bf16()


def test_threads_default_to_physical_cores() -> None:
    assert resolve_policy("fp32", "cpu").threads == physical_cores() >= 1
    assert resolve_policy("fp32", "cpu", threads=3).threads == 3


@pytest.mark.parametrize("native_bf16", [True, False])
@pytest.mark.parametrize(("shape", "spatial_dims"), [((2, 1, 8, 8), 2), ((2, 1, 4, 8, 8), 3)])
def test_channels_last_layout_for_inputs_and_models(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], spatial_dims: int, native_bf16: bool
) -> None:
    # With or without BF16 the automatic policy trains in channels_last (fp32 kernels run
    # faster in it too); an explicit fp32 request stays contiguous (the reference layout).
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: native_bf16)
    plain = resolve_policy("fp32", "cpu")
    assert plain.memory_format(len(shape)) == torch.contiguous_format
    assert not plain.channels_last
    policy = resolve_policy("auto", "cpu")
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    assert policy.prepare_input(torch.zeros(shape)).is_contiguous(memory_format=fmt)
    conv = torch.nn.Conv2d(4, 4, 3) if spatial_dims == 2 else torch.nn.Conv3d(4, 4, 3)
    assert policy.prepare_model(conv, spatial_dims).weight.is_contiguous(memory_format=fmt)
