"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch

# What the `torchrun` fixture returns: launch(*args, env=None) -> the finished process.
Torchrun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One torch thread for the test, restored after it.

    Two OpenMP threads on a CPU shared with other jobs run many times slower than one (they
    spin while the other core is busy). Folders whose tests all train or run networks make it
    autouse in their own conftest.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def torchrun() -> Torchrun:
    """Launch `python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS...` and
    assert that every rank exited cleanly; returns the finished process.

    Each rank runs one OpenMP thread, and Python's fault handler is on: a rank killed by a
    signal (an intermittent SIGABRT, "terminate called without an active exception", was seen
    once in 34 launches) then prints every thread's Python stack into the failure message.
    """

    def launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        clean = {k: v for k, v in os.environ.items() if k not in launcher}
        clean |= {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"} | (env or {})
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", *args,
        ]  # fmt: skip
        done = subprocess.run(command, env=clean, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    return launch
