"""A package's names imported from their modules on first use (PEP 562's module `__getattr__`),
so importing the package costs nothing until a name is used: `fbmr --help` imports the client's
commands without paying for httpx, numpy or pandas."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` of `package`, giving each name of `homes` from `package.<its module>`."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
