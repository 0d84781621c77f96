"""Resume a search from its run directory alone: ``python train.py resume=<run dir>``.

A run directory keeps what its search was started with: ``search_settings.yaml`` (the settings that
define what a reward means, checked on every resume) and ``run_config.yaml`` (the whole configuration
of the latest start: budget, executor, data location too). Directories written before
``run_config.yaml`` existed have Hydra's copy, ``.hydra/config.yaml``. The resumed configuration is
the stored one with the command line's overrides on top, so ``search.budget=50`` or
``executor=pool`` may be given anew; an override of a setting in ``search_settings.yaml`` is a
change, which the search refuses as it always does.

Settings added to cellsearch after a run was started are missing from its files: they take the
values in :data:`cellsearch.search.settings.ADDED_SETTINGS`, the ones that reproduce what the code
did before they existed, and such a value does not count as a change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from cellsearch.search.atomic import atomic_write
from cellsearch.search.settings import ADDED_SETTINGS, SETTINGS_FILE, fill_added_settings, flatten
from cellsearch.validation import ConfigError

__all__ = ["RUN_CONFIG_FILE", "resumed_config", "write_run_config"]

RUN_CONFIG_FILE = "run_config.yaml"
HYDRA_CONFIG_FILE = ".hydra/config.yaml"
# Top-level keys that are not part of a stored configuration (where it is, how it was started).
_NOT_STORED = ("run_dir", "resume")

# Modules that moved since a run could have been started: old ``_target_`` prefix -> new one.
MOVED_TARGETS: dict[str, str] = {"cellsearch.executors.": "cellsearch.search.executors."}


def write_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """Keep the whole configuration of this start in ``run_dir`` (what ``resume=`` starts from)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for key in _NOT_STORED:
        plain.pop(key, None)
    atomic_write(run_dir / RUN_CONFIG_FILE, lambda tmp: tmp.write_text(yaml.safe_dump(plain, sort_keys=False)))


def _stored_config(run_dir: Path) -> dict[str, Any]:
    for name in (RUN_CONFIG_FILE, HYDRA_CONFIG_FILE):
        if (run_dir / name).is_file():
            stored = yaml.safe_load((run_dir / name).read_text()) or {}
            for key in _NOT_STORED:
                stored.pop(key, None)
            return _moved_targets(stored)
    return {}


def _moved_targets(tree: Any) -> Any:
    """``tree`` with every ``_target_`` in a moved module renamed (see :data:`MOVED_TARGETS`)."""
    if not isinstance(tree, dict):
        return tree
    moved = {k: _moved_targets(v) for k, v in tree.items()}
    target = moved.get("_target_")
    for old, new in MOVED_TARGETS.items():
        if isinstance(target, str) and target.startswith(old):
            moved["_target_"] = new + target[len(old):]
    return moved


def _override_keys(overrides: Iterable[str]) -> list[str]:
    """The config keys a list of Hydra overrides sets (``search.budget=5`` -> ``search.budget``,
    ``executor=pool`` -> ``executor``, ``+x=1``/``~x``/``++x=1`` -> ``x``)."""
    keys = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if key and key != "resume" and not key.startswith("hydra"):
            keys.append(key)
    return keys


def resumed_config(cfg: DictConfig, overrides: Iterable[str] = ()) -> DictConfig:
    """The configuration to resume ``cfg.resume``'s search with: its stored configuration, then the values
    ``cfg`` has for the keys named in ``overrides`` (the command line), then ``run_dir`` = that directory."""
    run_dir = Path(str(cfg.resume)).expanduser()
    if not (run_dir / SETTINGS_FILE).is_file():
        raise ConfigError(f"resume={cfg.resume}: no search to resume there (no {SETTINGS_FILE}); give the run "
                          f"directory of a search")
    stored = _stored_config(run_dir)
    settings = yaml.safe_load((run_dir / SETTINGS_FILE).read_text()) or {}
    base = OmegaConf.to_container(cfg, resolve=False)
    for key, value in stored.items():  # a whole group at a time: its keys depend on the option chosen
        base[key] = value
    for key, value in settings.items():  # authoritative for what a reward means
        # data and child settings leave out where the data is and which device trains: keep those
        mergeable = key in stored or key in ("data", "child")
        base[key] = {**base[key], **value} if mergeable and isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    for flat_key, value in ADDED_SETTINGS.items():  # a run from before a setting: the old behaviour
        group = flat_key.split(".")[0]
        if group not in stored and group not in settings:
            base[group] = _legacy_group(group)
    for flat_key, value in fill_added_settings(flatten(base)).items():  # settings added since, in kept groups
        group, _, key = flat_key.partition(".")
        if key and "." not in key and isinstance(base.get(group), dict) and key not in base[group]:
            base[group][key] = value
    resumed = OmegaConf.create(base)
    for key in _override_keys(overrides):
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        with open_dict(resumed):
            OmegaConf.update(resumed, key, value, merge=False, force_add=True)
    with open_dict(resumed):
        resumed.run_dir = str(run_dir)
        resumed.resume = str(run_dir)
    OmegaConf.set_struct(resumed, True)
    return resumed


def _legacy_group(group: str) -> Any:
    """The config node of ``group`` that reproduces the behaviour from before the group existed."""
    if ADDED_SETTINGS.get(group, "") is None:
        return None
    return {k.split(".", 1)[1]: v for k, v in ADDED_SETTINGS.items() if k.split(".")[0] == group}
