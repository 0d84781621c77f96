"""The config groups' schemas: :class:`~cellsearch.data.DataConfig` and
:class:`~cellsearch.evaluators.child_config.ChildConfig` registered in Hydra's ConfigStore.

Each dataclass holds its group's fields, types and defaults once; the presets in conf/data/ and
conf/child/ start from ``schema`` and set only what differs, and a value of the wrong type fails when
Hydra composes the config, naming the key (``child.epochs``). Importing this module registers them
(without importing torch): :mod:`cellsearch.cli` does so before ``hydra.main``; a script using Hydra's
compose API imports it first.
"""
from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from cellsearch.data.config import DataConfig
from cellsearch.evaluators.child_config import ChildConfig

SCHEMA = "schema"  # the option name each preset lists first in its defaults
SCHEMAS: dict[str, type] = {"data": DataConfig, "child": ChildConfig}


def register_schemas() -> None:
    """Store each group's dataclass as ``<group>/schema`` (idempotent)."""
    store = ConfigStore.instance()
    for group, node in SCHEMAS.items():
        store.store(group=group, name=SCHEMA, node=node)


_KINDS: dict[Any, list[str]] = {bool: ["true", "false"], int: ["an integer"], float: ["a number"], str: ["a string"]}


def expected_value(schema: Any, key: str) -> str | None:
    """What field ``key`` of the dataclass ``schema`` takes, in words ("an integer or null", "true, false
    or null"), for the message of a value Hydra could not convert; None if it cannot say."""
    if not (is_dataclass(schema) and key in {f.name for f in fields(schema)}):
        return None
    hint = typing.get_type_hints(schema)[key]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [k for k in (typing.get_args(hint) if union else (hint,)) if k is not type(None)]
    if not all(k in _KINDS for k in kinds):
        return None
    words = ["a number"] if set(kinds) == {int, float} else [w for k in kinds for w in _KINDS[k]]
    words += ["null"] if union and type(None) in typing.get_args(hint) else []
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"

register_schemas()
