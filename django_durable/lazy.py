"""Names a package offers but loads on first use (PEP 562), so importing the package
does not import the modules that need Django's app registry."""

from collections.abc import Callable
from importlib import import_module
from typing import Any


def attributes(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `modules` comes from the
    module of the package it names."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(import_module(f".{modules[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
