"""The search spaces cellsearch knows, by name, and the one interface the search reaches them through.

Three ways to describe an architecture come from the project's references: NASNet's cell pair
(Zoph et al. 2018, ``space=nasnet``, the default), NAS-RL's layer-by-layer network with skip
connections (Zoph & Le 2017, ``space=nasrl``) and hierarchical motifs (Liu et al. 2018,
``space=hierarchical``). Each is a class that satisfies :class:`Space`: strategies see any of them
as a flat sequence of categorical decisions (``space.layout``), and everything after the strategy
(evaluators, the trial store, exports) works on the genotype objects the space decodes.

A genotype's plain-data form (``to_dict()``, genotype files, the trial store's JSON) names its space
under ``"space"``; NASNet genotypes leave it out, because their files and stored rows are older than
the other spaces, so data without ``"space"`` is a NASNet genotype.
"""
from __future__ import annotations

import importlib
import json
import random
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from cellsearch.space.genotype import GenotypeError

# name -> "module:class" of the space; imported on first use (a space module may pull in torch).
SPACE_CLASSES: dict[str, str] = {
    "nasnet": "cellsearch.space.genotype:SearchSpace",
    "nasrl": "cellsearch.space.nasrl:NasRLSpace",
    "hierarchical": "cellsearch.space.hierarchical:HierarchicalSpace",
}
DEFAULT_SPACE = "nasnet"


@runtime_checkable
class Space(Protocol):
    """What the search needs of a search space.

    ``layout.decisions`` lists the decisions in the order a controller emits them; each has ``name``
    (for logs), ``kind`` and ``num_choices``. ``layout.num_choices_list`` is their choice counts and
    ``layout.size`` their number.

    Optional hooks, which evolution uses where a space has them: ``mutate(actions, rng)`` (a copy of an
    action sequence with the space's own mutation; else NASNet's cell mutation) and ``trivial()`` (the
    genotype a search starts from before random mutations, ``search.init_mutations``).
    """

    name: ClassVar[str]

    @property
    def layout(self) -> Any: ...

    def encode(self, genotype: Any) -> list[int]:
        """The flat action sequence of ``genotype`` (GenotypeError if it lies outside the space)."""

    def decode(self, actions: Sequence[int]) -> Any:
        """The genotype of a flat action sequence (GenotypeError for a wrong length or value)."""

    def sample(self, rng: random.Random) -> Any:
        """A genotype drawn uniformly over the action sequences."""

    def validate(self, genotype: Any) -> None:
        """Raise GenotypeError if ``genotype`` lies outside this space."""

    def settings(self) -> dict[str, Any]:
        """Plain data that :func:`space_from_settings` turns back into an equal space (``name`` included)."""


def _space_class(name: Any) -> type:
    if name not in SPACE_CLASSES:
        raise GenotypeError(f"unknown search space {name!r}; choose one of {', '.join(SPACE_CLASSES)} "
                            f"(space=<name>)")
    module_name, class_name = SPACE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def space_from_settings(settings: "Space | Mapping[str, Any]") -> Space:
    """The space that ``settings`` describes: a Space (returned as it is) or the mapping of a ``space``
    config node / :meth:`Space.settings` (``name`` picks the space, NASNet when absent; the other keys are
    that space's fields)."""
    if isinstance(settings, Space):
        return settings
    if not isinstance(settings, Mapping):
        raise TypeError(f"space must be a search space or a mapping of its settings, got {type(settings).__name__}")
    fields = {str(k): v for k, v in settings.items() if k not in ("name", "_target_")}
    return _space_class(settings.get("name", DEFAULT_SPACE)).from_settings(fields)


def space_name_of(data: Any) -> str:
    """The space a genotype's plain data belongs to (NASNet when it names none)."""
    name = data.get("space", DEFAULT_SPACE) if isinstance(data, Mapping) else DEFAULT_SPACE
    if name not in SPACE_CLASSES:
        raise GenotypeError(f"genotype field 'space': {name!r} is not a search space; known: "
                            f"{', '.join(SPACE_CLASSES)}")
    return name


def genotype_header(space: str, name: str, source: str) -> dict[str, Any]:
    """The first keys of a genotype of a space other than NASNet's: ``space``, then ``name`` and ``source``
    where set (NASNet's genotypes name no space, so that files from before other spaces read as NASNet)."""
    header: dict[str, Any] = {"space": space}
    if name:
        header["name"] = name
    if source:
        header["source"] = source
    return header


def header_yaml_lines(header: Mapping[str, Any]) -> list[str]:
    """:func:`genotype_header`'s keys as the first lines of a genotype's YAML (name and source quoted as JSON
    strings, which YAML reads back as they were)."""
    return [f"space: {header['space']}"] + [f"{key}: {json.dumps(header[key])}" for key in ("name", "source")
                                            if key in header]


def compact_json(data: Mapping[str, Any]) -> str:
    """A genotype's plain data as the one-line JSON the trial store keeps (sorted keys, no spaces)."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def genotype_from_dict(data: Any) -> Any:
    """A genotype of any space from its plain data (``to_dict()``, a genotype file's YAML)."""
    return _space_class(space_name_of(data)).parse(data)


def genotype_from_json(text: str) -> Any:
    """A genotype of any space from its one-line JSON (``to_json()``, as the trial store keeps it)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GenotypeError(f"genotype text is not valid JSON: {err}") from None
    return genotype_from_dict(data)
