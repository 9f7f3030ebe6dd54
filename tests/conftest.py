"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
