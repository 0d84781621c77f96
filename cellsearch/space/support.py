"""What the tools after a search offer each search space: the ones built for NASNet cells refuse another
space in one line, and every space draws and describes its genotypes through its own diagram module.

A space's diagram module is ``cellsearch.space.<space>_diagram``; it provides ``figure(genotype, title)``
(a matplotlib figure, which the caller saves and closes) and ``describe(genotype)`` (the genotype as a few
readable lines). NASNet's is :mod:`cellsearch.space.nasnet_diagram`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from cellsearch.validation import ConfigError

__all__ = ["diagram_module", "require_nasnet"]

NASNET = "nasnet"


def require_nasnet(space: str, tool: str, lacks: str, instead: str) -> None:
    """Refuse a tool that only knows NASNet cells for another ``space``, in one line.

    Args:
        space: the run's search space name.
        tool: what the tool does, e.g. ``"DARTS relaxes NASNet cells"``.
        lacks: what ``space`` does not have, e.g. ``"cells to relax"``.
        instead: what to do instead, e.g. ``"use space=nasnet, or search=random with evaluator=train"``.

    Raises:
        ConfigError: ``space`` is not ``nasnet``.
    """
    if space != NASNET:
        raise ConfigError(f"{tool}; space={space} has no {lacks}: {instead}")


def diagram_module(space: str) -> ModuleType:
    """The module that draws and describes genotypes of ``space`` (ConfigError if that space has none yet)."""
    name = f"cellsearch.space.{space}_diagram"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # the diagram module exists but something it imports does not
            raise
        raise ConfigError(f"space={space} has no diagram module yet ({name}): its genotypes cannot be drawn "
                          f"or described") from None
