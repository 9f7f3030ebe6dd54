"""Fixtures for the progression tests (builders live in gan_builders.py beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# With --import-mode=importlib this folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))

from gan_builders import tiny_config, write_untrained_checkpoint

from lungcancer.config import GanConfig


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """Every progression test runs on one thread (`single_thread` in tests/conftest.py)."""


@pytest.fixture
def tiny_gan_cfg() -> GanConfig:
    """A GAN small enough to train a few steps in seconds on 2 cores."""
    return tiny_config()


@pytest.fixture
def untrained_checkpoint(tmp_path: Path, tiny_gan_cfg: GanConfig) -> Path:
    """Path of an untrained tiny GAN checkpoint (patch 32, stages I-IV)."""
    return write_untrained_checkpoint(tmp_path / "gan.pt", tiny_gan_cfg)
