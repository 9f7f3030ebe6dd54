"""Lazy package exports: `from lungcancer.data import measure_lesion` without importing torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `package.<where[name]>` on first use of `name`.

    Args:
        package: the package's `__name__`.
        where: exported name -> submodule that defines it.
    """

    def module_getattr(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return module_getattr
