"""The config groups' schemas: :class:`~cellsearch.data.DataConfig` and
:class:`~cellsearch.evaluators.child_config.ChildConfig` registered in Hydra's ConfigStore.

Each dataclass holds its group's fields, types and defaults once; the presets in conf/data/ and
conf/child/ start from ``schema`` and set only what differs, and a value of the wrong type fails when
Hydra composes the config, naming the key (``child.epochs``). Importing this module registers them
(without importing torch): :mod:`cellsearch.cli` does so before ``hydra.main``; a script using Hydra's
compose API imports it first.
"""
from __future__ import annotations

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


register_schemas()
