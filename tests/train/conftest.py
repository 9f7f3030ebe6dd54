"""Training tests: builders on sys.path (importlib import mode), one thread, isolated caches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# train_builders lives beside this file, io_builders (DICOM writers) in tests/io.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "io"))


@pytest.fixture(autouse=True)
def _one_thread_and_isolated_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Two OpenMP threads on a CPU shared with other jobs run many times slower than one.
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
