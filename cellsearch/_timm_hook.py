"""Register the ``cellnet_*`` entry points with timm when timm is imported, not when cellsearch is.

``import cellsearch`` promises that ``timm.create_model('cellnet_cifar')`` works afterwards. Importing
:mod:`cellsearch.models` right away keeps that promise but loads torch, timm and torchvision (several
seconds), which the ``cellsearch`` command does not need to compose a config, print ``--help`` or
refuse a bad override. So the entry points are registered when timm is imported: at once if it is
already, otherwise as soon as timm's own import finishes (a one-shot import hook on the name ``timm``).
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Sequence

MODELS = "cellsearch.models"


class _RegisterAfterTimm(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``timm`` with the finders after it, and runs timm's own loader, then imports cellsearch.models."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != "timm":
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                self.timm_loader = spec.loader
                spec.loader = self
                return spec
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.timm_loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.timm_loader  # timm looks as if imported plainly
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self.timm_loader.exec_module(module)
        importlib.import_module(MODELS)


def register_when_timm_loads() -> None:
    """Import :mod:`cellsearch.models` now if timm is loaded, else right after timm is imported."""
    if "timm" in sys.modules:
        importlib.import_module(MODELS)
    elif not any(isinstance(finder, _RegisterAfterTimm) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTimm())
