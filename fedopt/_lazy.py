"""Lazy package attributes (PEP 562): ``__getattr__ = lazy_attributes("pkg", {name: module})``
serves ``pkg.name`` by importing its module on first use, so that importing a package (or one
of its submodules) does not import everything the package re-exports."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that resolves the names of ``table`` (name →
    defining module) on first access and caches them in the package's namespace."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
