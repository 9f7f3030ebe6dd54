"""Fixtures for the data tests: tiny datasets built in temporary folders, a fixed PHI salt."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# data_builders lives beside this file, io_builders (DICOM series) in tests/io; with
# --import-mode=importlib neither folder is on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "io"))


@pytest.fixture(autouse=True)
def _isolated_phi_salt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "test-salt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
