"""NAS-RL's CNN search space (Zoph & Le 2017, sec. 3.1 and 3.3) as plain data: genotype, validation, codec.

A genotype is a chain of N convolutional layers. For each layer the controller chooses a filter height
and width, a stride height and width, and a number of filters; and, for each earlier layer j, whether j
feeds it (an "anchor" skip connection). The paper's rules for turning that into a network, which
``nasrl_network.py`` follows:

- a layer with no input takes the image (here: the stem's output);
- a layer's inputs are concatenated along channels, the smaller ones zero-padded to the largest size;
- the layers that no later layer consumes are concatenated (padded the same way) into the classifier's input.

Layers are numbered from 0; ``inputs`` lists the earlier layers that feed a layer (empty: the image).
The space's flat action layout is, per layer, its size decisions (those with more than one choice in
this space: strides fixed to 1 make none) followed by one binary anchor decision per earlier layer
(1: that layer feeds this one).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Mapping, Sequence

from cellsearch.space.genotype import GenotypeError
from cellsearch.space.spaces import compact_json, genotype_header, header_yaml_lines

SPACE = "nasrl"
# The size decisions of a layer, in emission order; each is a field of Layer and a choice list of the space.
SIZE_FIELDS: tuple[str, ...] = ("filter_height", "filter_width", "stride_height", "stride_width", "filters")
_CHOICES_OF = {"filter_height": "filter_heights", "filter_width": "filter_widths", "stride_height": "strides",
               "stride_width": "strides", "filters": "filters"}
LAYER_FIELDS: tuple[str, ...] = SIZE_FIELDS + ("inputs",)


def _fail(message: str) -> GenotypeError:
    return GenotypeError(f"space=nasrl: {message}")


@dataclass(frozen=True)
class Layer:
    """One convolutional layer: filter and stride sizes, number of filters, and the earlier layers it reads."""

    filter_height: int
    filter_width: int
    stride_height: int
    stride_width: int
    filters: int
    inputs: tuple[int, ...] = ()  # earlier layers concatenated as this layer's input; () = the image

    def to_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in SIZE_FIELDS}, "inputs": list(self.inputs)}


@dataclass(frozen=True)
class NasRLGenotype:
    """A NAS-RL network: its layers in order. ``name`` and ``source`` are metadata, not architecture."""

    space: ClassVar[str] = SPACE

    layers: tuple[Layer, ...]
    name: str = field(default="", compare=False)
    source: str = field(default="", compare=False)

    def loose_ends(self) -> tuple[int, ...]:
        """Layers no later layer reads: concatenated into the classifier's input (the last always is one)."""
        used = {j for layer in self.layers for j in layer.inputs}
        return tuple(i for i in range(len(self.layers)) if i not in used)

    # --- plain-data views -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        layers = [layer.to_dict() for layer in self.layers]
        return {**genotype_header(SPACE, self.name, self.source), "layers": layers}

    def to_json(self) -> str:
        """Compact one-line text form, as the trial store keeps it."""
        return compact_json(self.to_dict())

    def to_yaml(self) -> str:
        """Readable YAML: one flow-style line per layer."""
        lines = [*header_yaml_lines(genotype_header(SPACE, self.name, self.source)), "layers:"]
        for layer in self.layers:
            sizes = ", ".join(f"{name}: {getattr(layer, name)}" for name in SIZE_FIELDS)
            lines.append(f"  - {{{sizes}, inputs: [{', '.join(str(j) for j in layer.inputs)}]}}")
        return "\n".join(lines) + "\n"

    def key(self) -> str:
        """Canonical text: equal for two genotypes that compute the same function (see canonical())."""
        return NasRLGenotype(self.canonical().layers).to_json()  # without name/source: architecture only

    def canonical(self) -> "NasRLGenotype":
        """Same network with each layer's inputs sorted: concatenation order only permutes channels."""
        layers = tuple(Layer(*(getattr(layer, name) for name in SIZE_FIELDS), tuple(sorted(layer.inputs)))
                       for layer in self.layers)
        return NasRLGenotype(layers, self.name, self.source)


def layer_reductions(genotype: NasRLGenotype) -> list[tuple[int, int]]:
    """Per layer, how many times smaller than the stem's output its output is: (height, width).

    A layer's joined input is as large as its largest input (the others are padded up to it)."""
    reductions: list[tuple[int, int]] = []
    for layer in genotype.layers:
        rh = min([reductions[j][0] for j in layer.inputs], default=1)
        rw = min([reductions[j][1] for j in layer.inputs], default=1)
        reductions.append((rh * layer.stride_height, rw * layer.stride_width))
    return reductions



# --- parsing -------------------------------------------------------------------------------------

def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(f"{where} must be a positive integer, got {value!r}")
    return value


def _parse_layer(data: Any, index: int) -> Layer:
    where = f"layer {index}"
    if not isinstance(data, Mapping):
        raise _fail(f"{where} must be a mapping with {', '.join(LAYER_FIELDS)}; got {data!r}")
    unknown = set(data) - set(LAYER_FIELDS)
    if unknown:
        raise _fail(f"{where} has unknown field(s) {sorted(unknown)}; a layer has {', '.join(LAYER_FIELDS)}")
    missing = [name for name in ("filter_height", "filter_width", "filters") if name not in data]
    if missing:
        raise _fail(f"{where} is missing {', '.join(missing)}")
    # Strides may be left out: the paper's first space fixes them to 1.
    sizes = [_positive(data.get(name, 1), f"{where} field '{name}'") for name in SIZE_FIELDS]
    inputs = data.get("inputs", [])
    if inputs is None:
        inputs = []
    if not isinstance(inputs, (list, tuple)):
        raise _fail(f"{where} field 'inputs' must be a list of earlier layers, got {inputs!r}")
    for j in inputs:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < index:
            earlier = f"0..{index - 1}" if index else "none (layer 0 reads the image)"
            raise _fail(f"{where} field 'inputs': {j!r} is not an earlier layer; earlier layers are {earlier}")
    if len(set(inputs)) != len(inputs):
        raise _fail(f"{where} field 'inputs' repeats a layer: {list(inputs)}")
    return Layer(*sizes, inputs=tuple(inputs))


def parse_nasrl_genotype(data: Any) -> NasRLGenotype:
    """A NasRLGenotype from plain data (``to_dict()``, a genotype file), with one-line GenotypeErrors."""
    if not isinstance(data, Mapping):
        raise _fail(f"a genotype is a mapping with 'space: nasrl' and 'layers'; got {type(data).__name__}")
    if data.get("space") != SPACE:
        raise _fail(f"this is a genotype of space={data.get('space', 'nasnet')}, not of space=nasrl")
    unknown = set(data) - {"space", "name", "source", "layers"}
    if unknown:
        raise _fail(f"unknown genotype field(s) {sorted(unknown)}; expected space, name, source, layers")
    layers = data.get("layers")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise _fail(f"'layers' must be a non-empty list of layers, got {layers!r}")
    return NasRLGenotype(tuple(_parse_layer(layer, i) for i, layer in enumerate(layers)),
                         name=str(data.get("name") or ""), source=str(data.get("source") or ""))


# --- the space and its action layout -------------------------------------------------------------

@dataclass(frozen=True)
class NasRLDecision:
    """One controller decision: a size choice of layer ``layer`` or its anchor to earlier layer ``source``.

    ``anchor_point`` (anchors only) is the decision index at which the controller's hidden state stands
    for layer ``source`` (its anchor point: the step just after that layer's size decisions).
    """

    layer: int
    kind: str  # one of SIZE_FIELDS, or "anchor"
    num_choices: int
    source: int = -1
    anchor_point: int = -1

    @property
    def name(self) -> str:
        return f"layer{self.layer}.anchor{self.source}" if self.kind == "anchor" else f"layer{self.layer}.{self.kind}"


@dataclass(frozen=True)
class NasRLLayout:
    """Flat decisions of a NAS-RL genotype: per layer its searched size decisions, then its anchors."""

    num_layers: int
    size_choices: tuple[tuple[str, int], ...]  # the searched size fields and their choice counts

    @cached_property
    def decisions(self) -> tuple[NasRLDecision, ...]:
        out: list[NasRLDecision] = []
        points: list[int] = []  # anchor point of each layer so far
        for i in range(self.num_layers):
            out += [NasRLDecision(i, kind, n) for kind, n in self.size_choices]
            points.append(len(out))
            out += [NasRLDecision(i, "anchor", 2, j, points[j]) for j in range(i)]
        return tuple(out)

    @cached_property
    def num_choices_list(self) -> list[int]:
        return [d.num_choices for d in self.decisions]

    @property
    def size(self) -> int:
        return len(self.decisions)

    def positions(self, kind: str) -> list[int]:
        """Indices of every decision of ``kind``."""
        return [i for i, d in enumerate(self.decisions) if d.kind == kind]


def _choices(values: Any, key: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise _fail(f"{key} must be a non-empty list of positive integers, got {values!r} (set space.{key}=[...])")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(f"{key} must hold positive integers, got {v!r} (set space.{key}=[...])")
    if len(set(values)) != len(values):
        raise _fail(f"{key} repeats a value: {list(values)}")
    return tuple(values)


@dataclass(frozen=True)
class NasRLSpace:
    """NAS-RL's space: ``num_layers`` layers, each with a filter size, stride and width from these choices.

    The paper's first experiments (``conf/space/nasrl.yaml``): 15 layers, filter heights and widths in
    {1, 3, 5, 7}, filters in {24, 36, 48, 64}, strides fixed to 1 (its later variant searches {1, 2, 3}).
    """

    name: ClassVar[str] = SPACE

    num_layers: int = 15
    filter_heights: tuple[int, ...] = (1, 3, 5, 7)
    filter_widths: tuple[int, ...] = (1, 3, 5, 7)
    filters: tuple[int, ...] = (24, 36, 48, 64)
    strides: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise _fail(f"num_layers must be an integer of at least 1, got {self.num_layers!r} "
                        f"(set space.num_layers=...)")
        for key in ("filter_heights", "filter_widths", "filters", "strides"):
            object.__setattr__(self, key, _choices(getattr(self, key), key))  # Hydra hands lists
        even = [k for k in self.filter_heights + self.filter_widths if k % 2 == 0]
        if even:
            raise _fail(f"filter sizes must be odd (a 'same' padding needs it), got {even}")

    @classmethod
    def from_settings(cls, fields: Mapping[str, Any]) -> "NasRLSpace":
        """The space of a ``space`` config node's fields (``num_layers``, ``filter_heights``, ...)."""
        known = ("num_layers", "filter_heights", "filter_widths", "filters", "strides")
        unknown = set(fields) - set(known)
        if unknown:
            raise _fail(f"unknown setting(s) {sorted(unknown)}; space=nasrl takes {', '.join(known)}")
        return cls(**fields)

    @staticmethod
    def parse(data: Any) -> NasRLGenotype:
        """A genotype of this space from its plain data."""
        return parse_nasrl_genotype(data)

    def settings(self) -> dict[str, Any]:
        """Plain data that ``space_from_settings`` turns back into this space."""
        return {"name": self.name, "num_layers": self.num_layers, "filter_heights": list(self.filter_heights),
                "filter_widths": list(self.filter_widths), "filters": list(self.filters),
                "strides": list(self.strides)}

    def choices(self, size_field: str) -> tuple[int, ...]:
        """The values this space allows for one of a layer's SIZE_FIELDS."""
        return getattr(self, _CHOICES_OF[size_field])

    @cached_property
    def layout(self) -> NasRLLayout:
        """The flat decisions; a size with one choice is fixed, not decided."""
        searched = tuple((f, len(self.choices(f))) for f in SIZE_FIELDS if len(self.choices(f)) > 1)
        return NasRLLayout(self.num_layers, searched)

    def size(self) -> int:
        """Number of distinct action sequences."""
        return math.prod(self.layout.num_choices_list)

    def encode(self, genotype: NasRLGenotype) -> list[int]:
        """Flat action sequence for ``genotype`` (inverse of ``decode``)."""
        self.validate(genotype)
        actions = []
        for d in self.layout.decisions:
            layer = genotype.layers[d.layer]
            if d.kind == "anchor":
                actions.append(int(d.source in layer.inputs))
            else:
                actions.append(self.choices(d.kind).index(getattr(layer, d.kind)))
        return actions

    def decode(self, actions: Sequence[int]) -> NasRLGenotype:
        """Genotype for a flat action sequence."""
        decisions = self.layout.decisions
        if len(actions) != len(decisions):
            raise _fail(f"expected {len(decisions)} actions, got {len(actions)}")
        chosen: list[dict[str, Any]] = [{f: self.choices(f)[0] for f in SIZE_FIELDS} | {"inputs": []}
                                        for _ in range(self.num_layers)]
        for d, a in zip(decisions, actions):
            a = int(a)
            if not 0 <= a < d.num_choices:
                raise _fail(f"action for {d.name} is {a}; it must be in 0..{d.num_choices - 1}")
            if d.kind == "anchor":
                if a:
                    chosen[d.layer]["inputs"].append(d.source)
            else:
                chosen[d.layer][d.kind] = self.choices(d.kind)[a]
        return NasRLGenotype(tuple(Layer(**{**c, "inputs": tuple(c["inputs"])}) for c in chosen))

    def sample(self, rng: random.Random) -> NasRLGenotype:
        """A genotype drawn uniformly over the action sequences."""
        return self.decode([rng.randrange(n) for n in self.layout.num_choices_list])

    def validate(self, genotype: Any) -> None:
        """Raise GenotypeError if ``genotype`` lies outside this space."""
        if not isinstance(genotype, NasRLGenotype):
            other = getattr(type(genotype), "space", type(genotype).__name__)
            raise _fail(f"got a genotype of space={other}; this space takes NAS-RL layer genotypes")
        if len(genotype.layers) != self.num_layers:
            raise _fail(f"the genotype has {len(genotype.layers)} layers, this space has {self.num_layers} "
                        f"(space.num_layers)")
        for i, layer in enumerate(genotype.layers):
            for size_field in SIZE_FIELDS:
                value, allowed = getattr(layer, size_field), self.choices(size_field)
                if value not in allowed:
                    raise _fail(f"layer {i} {size_field} {value} is not a choice of this space "
                                f"({_CHOICES_OF[size_field]}: {list(allowed)})")
            bad = [j for j in layer.inputs if not 0 <= j < i]
            if bad:
                raise _fail(f"layer {i} input {bad[0]} is not an earlier layer")
