"""Fixtures for the io tests: a fixed PHI salt and no writes to the real home folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# io_builders lives beside this file; --import-mode=importlib does not put it on sys.path.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_phi_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
