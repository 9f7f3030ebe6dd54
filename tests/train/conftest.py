"""Training tests: put the builders beside this file on sys.path (importlib import mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _one_thread_and_isolated_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Two OpenMP threads on a CPU shared with other jobs run many times slower than one.
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
