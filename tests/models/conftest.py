"""Shared by the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """Every model test runs on one thread (`single_thread` in tests/conftest.py)."""
