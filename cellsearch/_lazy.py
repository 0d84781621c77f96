"""Public names of a package imported from its submodules when first used (PEP 562), so that importing one
light submodule (a config schema) does not import the heavy ones (torch, Lightning) beside it."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Sequence


def lazy_attributes(package: str, names: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any],
                                                                            Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose submodule ``names`` keys define the names listed.

    Args:
        package: the package's ``__name__``.
        names: submodule (relative to ``package``) -> the public names it defines.
    """
    where = {name: module for module, listed in names.items() for name in listed}
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value  # later lookups find it without this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
