"""Checks on settings, each failing with one message shape that names the full key:

    child.lr must be a number > 0, got -0.1 (set child.lr=...)

Config dataclasses call these in ``__post_init__``; modules that take plain arguments (the networks,
the executors) call them with the argument's name.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot work (unknown dataset, missing files, impossible numbers).

    Raised before any child trains; a child that fails while training is recorded, not raised."""


def fail(key: str, requirement: str, value: Any) -> None:
    """Raise the one-line ConfigError: ``key must be <requirement>, got <value>``."""
    hint = f" (set {key}=...)" if "." in key else ""  # dotted keys are config keys the user can set
    raise ConfigError(f"{key} must be {requirement}, got {value!r}{hint}")


def _or_null(requirement: str, optional: bool) -> str:
    return requirement + " or null" if optional else requirement


def integer(value: Any, key: str, minimum: int | None = None, optional: bool = False) -> Any:
    """``value`` if it is an integer (not a bool) >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        fail(key, _or_null("an integer" + (f" >= {minimum}" if minimum is not None else ""), optional), value)
    return value


def positive_int(value: Any, key: str, optional: bool = False) -> Any:
    """``value`` if it is an integer >= 1 (or None when ``optional``)."""
    return integer(value, key, 1, optional)


def number_in(value: Any, key: str, low: float | None = None, high: float | None = None,
              low_open: bool = False, high_open: bool = False, optional: bool = False) -> Any:
    """``value`` if it is a real number within the bounds (``*_open``: the bound itself is excluded)."""
    if value is None and optional:
        return None
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    requirement = _or_null(" ".join(["a number", " and ".join(bounds)]).strip(), optional)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN fails too
        fail(key, requirement, value)
    if low is not None and (value < low or (low_open and value == low)):
        fail(key, requirement, value)
    if high is not None and (value > high or (high_open and value == high)):
        fail(key, requirement, value)
    return value


def one_of(value: Any, key: str, choices: Iterable[T], optional: bool = False) -> Any:
    """``value`` if it is one of ``choices`` (or None when ``optional``)."""
    choices = list(choices)
    if value is None and optional:
        return None
    if isinstance(value, bool) or value not in choices:
        fail(key, _or_null(f"one of {choices}", optional), value)
    return value


def boolean(value: Any, key: str) -> bool:
    """``value`` if it is true or false."""
    if not isinstance(value, bool):
        fail(key, "true or false", value)
    return value


def bool_or_none(value: Any, key: str) -> bool | None:
    """``value`` if it is true, false or None (automatic)."""
    if value is not None and not isinstance(value, bool):
        fail(key, "true, false or null (automatic)", value)
    return value


def dataclass_from_config(cls: type, config: Any, what: str) -> Any:
    """``config`` if it is a ``cls`` already, else ``cls(**config)`` (ignoring Hydra's ``_target_``)."""
    if isinstance(config, cls):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"{what} config must be a {cls.__name__} or a mapping of its fields, "
                          f"got {type(config).__name__}")
    values = {str(k): v for k, v in config.items() if k != "_target_"}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; valid settings are {sorted(known)}")
    return cls(**values)
