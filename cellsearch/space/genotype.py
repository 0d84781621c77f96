"""Genotypes: the NASNet search space as plain data.

A genotype is a Normal cell plus a Reduction cell. A cell is a list of blocks; each block takes two
hidden states, applies one op to each and combines the results by element-wise addition or by
channel concatenation. Hidden states are indexed as in DARTS: 0 = h_{i-2}, 1 = h_{i-1}, 2 + k =
output of block k. The cell's output concatenates the states listed in ``concat``.

Parsing lives here (YAML and dict <-> dataclasses, validation, the controller's flat action
encoding); turning a genotype into modules lives in ``cell.py`` and ``network.py``.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import yaml

from cellsearch.space.layout import BLOCK_DECISIONS, CELL_TYPES, NUM_CELL_INPUTS, ActionLayout, Decision

# The 13 ops of the NASNet search space (Zoph et al. 2018, sec. 3).
NASNET_OPS: tuple[str, ...] = (
    "identity",
    "conv_1x3_3x1",
    "conv_1x7_7x1",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "max_pool_3x3",
    "max_pool_5x5",
    "max_pool_7x7",
    "conv_1x1",
    "conv_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
)
COMBINES: tuple[str, ...] = ("add", "concat")


# Far above any genotype file (the largest space's is about 2 kB): larger files are refused unread.
MAX_GENOTYPE_BYTES = 1_000_000


class GenotypeError(ValueError):
    """A genotype, genotype file or action sequence that does not describe a valid cell."""


@dataclass(frozen=True)
class Block:
    """Two (input, op) pairs and how their results are combined."""

    inputs: tuple[int, int]
    ops: tuple[str, str]
    combine: str = "add"

    def pairs(self) -> tuple[tuple[int, str], tuple[int, str]]:
        return (self.inputs[0], self.ops[0]), (self.inputs[1], self.ops[1])


@dataclass(frozen=True)
class Cell:
    """Blocks plus the list of hidden states concatenated into the cell's output."""

    blocks: tuple[Block, ...]
    concat: tuple[int, ...]

    @property
    def num_states(self) -> int:
        return NUM_CELL_INPUTS + len(self.blocks)

    @staticmethod
    def loose_ends(blocks: Sequence[Block]) -> tuple[int, ...]:
        """Block outputs that no later block consumes: NASNet's rule for a searched cell's output."""
        used = {i for block in blocks for i in block.inputs}
        return tuple(s for s in range(NUM_CELL_INPUTS, NUM_CELL_INPUTS + len(blocks)) if s not in used)

    @classmethod
    def from_blocks(cls, blocks: Iterable[Block]) -> "Cell":
        blocks = tuple(blocks)
        return cls(blocks=blocks, concat=cls.loose_ends(blocks))

    def ops_used(self) -> set[str]:
        return {op for block in self.blocks for op in block.ops}


@dataclass(frozen=True)
class Genotype:
    """A Normal cell and a Reduction cell. ``name`` and ``source`` are metadata, not architecture."""

    space: ClassVar[str] = "nasnet"  # the search space it belongs to (cellsearch.space.spaces)

    normal: Cell
    reduce: Cell
    name: str = field(default="", compare=False)
    source: str = field(default="", compare=False)

    def cells(self) -> dict[str, Cell]:
        return {"normal": self.normal, "reduce": self.reduce}

    def ops_used(self) -> set[str]:
        return self.normal.ops_used() | self.reduce.ops_used()

    # --- plain-data views -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        if self.source:
            data["source"] = self.source
        for cell_type, cell in self.cells().items():
            data[cell_type] = {
                "blocks": [
                    {"inputs": list(b.inputs), "ops": list(b.ops), "combine": b.combine} for b in cell.blocks
                ],
                "concat": list(cell.concat),
            }
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        """Parse and validate the structure produced by ``to_dict`` (and by genotype files)."""
        return parse_genotype(data)

    def to_json(self) -> str:
        """Compact one-line text form, used to store genotypes in the trial database."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype text is not valid JSON: {err}") from None
        return parse_genotype(data)

    def to_yaml(self) -> str:
        """Readable YAML: one flow-style line per block."""
        lines = []
        if self.name:
            lines.append(f"name: {json.dumps(self.name)}")
        if self.source:
            lines.append(f"source: {json.dumps(self.source)}")
        for cell_type, cell in self.cells().items():
            lines.append(f"{cell_type}:")
            lines.append("  blocks:")
            for b in cell.blocks:
                lines.append(
                    f"    - {{inputs: [{b.inputs[0]}, {b.inputs[1]}], ops: [{b.ops[0]}, {b.ops[1]}], combine: {b.combine}}}"
                )
            lines.append(f"  concat: [{', '.join(str(i) for i in cell.concat)}]")
        return "\n".join(lines) + "\n"

    def key(self) -> str:
        """Canonical text: equal for two genotypes that compute the same function (see canonical())."""
        canon = self.canonical()
        return Genotype(canon.normal, canon.reduce).to_json()  # without name/source: architecture only

    def canonical(self) -> "Genotype":
        """Same architecture with each block's two (input, op) pairs in sorted order.

        Both combine methods are symmetric up to a channel permutation, so (a, b) and (b, a) describe
        the same block; sorting the pairs makes two encodings of one cell compare equal.
        """
        def canon_cell(cell: Cell) -> Cell:
            blocks = []
            for b in cell.blocks:
                (ia, oa), (ib, ob) = sorted(b.pairs())
                blocks.append(Block(inputs=(ia, ib), ops=(oa, ob), combine=b.combine))
            return Cell(blocks=tuple(blocks), concat=tuple(sorted(cell.concat)))

        return Genotype(canon_cell(self.normal), canon_cell(self.reduce), self.name, self.source)


# --- parsing and validation -----------------------------------------------------------------------

def _fail(where: str, message: str) -> GenotypeError:
    return GenotypeError(f"{where}: {message}")


def _parse_block(data: Any, where: str, block_index: int) -> Block:
    if not isinstance(data, dict):
        raise _fail(where, f"expected a mapping with keys inputs, ops, combine; got {data!r}")
    unknown = set(data) - {"inputs", "ops", "combine"}
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(unknown)}; a block has inputs, ops and combine")
    for key in ("inputs", "ops"):
        value = data.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _fail(f"{where} field '{key}'", f"expected a list of two entries, got {value!r}")
    inputs = data["inputs"]
    num_available = NUM_CELL_INPUTS + block_index
    for i in inputs:
        if isinstance(i, bool) or not isinstance(i, int):
            raise _fail(f"{where} field 'inputs'", f"input {i!r} is not an integer state index")
        if not 0 <= i < num_available:
            raise _fail(
                f"{where} field 'inputs'",
                f"input {i} does not exist yet: block {block_index} may use states 0..{num_available - 1} "
                f"(0 = h_(i-2), 1 = h_(i-1), 2+k = block k)",
            )
    ops = data["ops"]
    for op in ops:
        if not isinstance(op, str):
            raise _fail(f"{where} field 'ops'", f"op {op!r} is not a name")
    combine = data.get("combine", "add")
    if combine not in COMBINES:
        raise _fail(f"{where} field 'combine'", f"unknown combine {combine!r}; choose one of {list(COMBINES)}")
    return Block(inputs=(int(inputs[0]), int(inputs[1])), ops=(ops[0], ops[1]), combine=combine)


def _parse_cell(data: Any, cell_type: str) -> Cell:
    where = f"{cell_type} cell"
    if not isinstance(data, dict):
        raise _fail(where, f"expected a mapping with 'blocks' (and optionally 'concat'); got {data!r}")
    unknown = set(data) - {"blocks", "concat"}
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(unknown)}; a cell has blocks and concat")
    raw_blocks = data.get("blocks")
    if not isinstance(raw_blocks, (list, tuple)) or not raw_blocks:
        raise _fail(f"{where} field 'blocks'", f"expected a non-empty list of blocks, got {raw_blocks!r}")
    blocks = tuple(_parse_block(b, f"{where}, block {k}", k) for k, b in enumerate(raw_blocks))
    if "concat" not in data:
        return Cell.from_blocks(blocks)
    concat = data["concat"]
    if not isinstance(concat, (list, tuple)) or not concat:
        raise _fail(f"{where} field 'concat'", f"expected a non-empty list of state indices, got {concat!r}")
    num_states = NUM_CELL_INPUTS + len(blocks)
    for s in concat:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < num_states:
            raise _fail(f"{where} field 'concat'", f"state {s!r} does not exist; states are 0..{num_states - 1}")
    if len(set(concat)) != len(concat):
        raise _fail(f"{where} field 'concat'", f"repeated state in {list(concat)}")
    return Cell(blocks=blocks, concat=tuple(int(s) for s in concat))


def parse_genotype(data: Any) -> Genotype:
    """Build a Genotype from plain data, raising GenotypeError that names the cell, block and field."""
    if not isinstance(data, dict):
        raise GenotypeError(f"a genotype is a mapping with 'normal' and 'reduce' cells; got {type(data).__name__}")
    unknown = set(data) - {"name", "source", "normal", "reduce"}
    if unknown:
        raise GenotypeError(f"unknown genotype field(s) {sorted(unknown)}; expected name, source, normal, reduce")
    missing = [c for c in CELL_TYPES if c not in data]
    if missing:
        raise GenotypeError(f"genotype is missing the {' and '.join(missing)} cell(s)")
    normal = _parse_cell(data["normal"], "normal")
    reduce = _parse_cell(data["reduce"], "reduce")
    genotype = Genotype(normal, reduce, name=str(data.get("name") or ""), source=str(data.get("source") or ""))
    check_ops_known(genotype)
    return genotype


def check_ops_known(genotype: Genotype, allowed: Sequence[str] | None = None) -> None:
    """Raise GenotypeError for an op that is not in ``allowed`` (default: every registered op)."""
    problem = "is not in this search space, whose ops"
    if allowed is None:
        from cellsearch.space.ops import OPS  # local import: the op table pulls in torch

        allowed, problem = sorted(OPS), "is an unknown op; valid ops"
    for cell_type, cell in genotype.cells().items():
        for k, block in enumerate(cell.blocks):
            for op in block.ops:
                if op not in allowed:
                    raise GenotypeError(
                        f"{cell_type} cell, block {k} field 'ops': {op!r} {problem} are {list(allowed)}"
                    )


# --- files -----------------------------------------------------------------------------------------

def cell_dirs() -> list[Path]:
    """Folders searched for a genotype given by name, first match wins: ``./cells`` (cells exported with
    ``export.dir=cells``), the copy installed inside the package, and the repository's ``cells/`` (source
    checkouts)."""
    package_dir = Path(__file__).resolve().parent.parent  # cellsearch/
    dirs = [Path.cwd() / "cells", package_dir / "cells", package_dir.parent / "cells"]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


def shipped_cells() -> list[str]:
    """Names of the genotype files that ``load_genotype`` finds by name."""
    return sorted({p.stem for d in cell_dirs() for p in d.glob("*.yaml")})


def load_genotype(name_or_path: "str | Path | Genotype") -> Genotype:
    """Load a genotype from a shipped name or a YAML file. Never executes code.

    Args:
        name_or_path: a YAML path, a name found in ``./cells`` or the shipped cells (``'nasnet_a'``),
            or a genotype (returned as it is).

    Returns:
        The genotype, of the search space its file names (``space:``; NASNet when it names none),
        named after the file when the file gives no name.

    Raises:
        GenotypeError: no such cell, or a file that is not a valid genotype (the message names the
            cell, block and field).
    """
    if isinstance(getattr(type(name_or_path), "space", None), str):  # a genotype of any search space
        return name_or_path
    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if not path.is_file():
        candidates = [d / f"{text_name}.yaml" for d in cell_dirs()]
        found = [c for c in candidates if c.is_file()]
        if found:
            path = found[0]
        else:
            raise GenotypeError(
                f"no genotype named {text_name!r}: not a file, and not a shipped cell "
                f"(shipped: {', '.join(shipped_cells())})"
            )
    size = path.stat().st_size
    if size > MAX_GENOTYPE_BYTES:  # refused before parsing: a huge file would parse for minutes
        raise GenotypeError(f"{path}: {size:,} bytes is far more than any genotype file (a few hundred bytes, at "
                            f"most {MAX_GENOTYPE_BYTES:,}); give the cell's YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise GenotypeError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start}); give the cell's "
                            f"YAML file") from None
    except yaml.YAMLError as err:
        raise GenotypeError(f"{path}: not valid YAML: {err}") from None
    from cellsearch.space.spaces import genotype_from_dict  # local import: spaces.py imports this module

    try:
        genotype = genotype_from_dict(data)
    except GenotypeError as err:
        raise GenotypeError(f"{path}: {err}") from None
    return genotype if genotype.name else replace(genotype, name=path.stem)


def save_genotype(genotype: Genotype, path: "str | Path") -> Path:
    """Write ``genotype`` as YAML; ``load_genotype(path)`` gives it back unchanged.

    Args:
        genotype: the cell pair to write.
        path: the YAML file to write (its folder is created).

    Returns:
        ``path``, as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(genotype.to_yaml())
    return path


# --- the search space and the controller's action encoding -----------------------------------------

@dataclass(frozen=True)
class SearchSpace:
    """Which ops, how many blocks per cell, and which combine methods the search may choose."""

    name: ClassVar[str] = "nasnet"  # ``space=nasnet`` (cellsearch.space.spaces)

    ops: tuple[str, ...] = NASNET_OPS
    num_blocks: int = 5
    combines: tuple[str, ...] = COMBINES

    def __post_init__(self) -> None:
        # Hydra hands lists; keep the dataclass hashable and immutable.
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "combines", tuple(self.combines))
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise GenotypeError(f"space.num_blocks must be an integer of at least 1, got {self.num_blocks!r}")
        if not self.ops:
            raise GenotypeError("the search space needs at least one op")
        if len(set(self.ops)) != len(self.ops):
            raise GenotypeError(f"repeated op in {list(self.ops)}")
        bad = [c for c in self.combines if c not in COMBINES]
        if bad or not self.combines:
            raise GenotypeError(f"combines must be a non-empty subset of {list(COMBINES)}, got {list(self.combines)}")
        from cellsearch.space.ops import OPS  # local import: the op table pulls in torch

        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise GenotypeError(f"unknown op(s) {unknown} in the search space; valid ops are {sorted(OPS)}")

    @classmethod
    def from_settings(cls, fields: Mapping[str, Any]) -> "SearchSpace":
        """The space of a ``space`` config node's fields (``ops``, ``num_blocks``, ``combines``)."""
        unknown = set(fields) - {"ops", "num_blocks", "combines"}
        if unknown:
            raise GenotypeError(f"unknown setting(s) {sorted(unknown)} of space=nasnet; it takes ops, num_blocks, "
                                f"combines")
        return cls(**fields)

    @staticmethod
    def parse(data: Any) -> Genotype:
        """A genotype of this space from its plain data (``Genotype.to_dict()``, a genotype file)."""
        return parse_genotype(data)

    def settings(self) -> dict[str, Any]:
        """Plain data that ``space_from_settings`` turns back into this space."""
        return {"name": self.name, "ops": list(self.ops), "num_blocks": self.num_blocks,
                "combines": list(self.combines)}

    @cached_property
    def layout(self) -> ActionLayout:
        """How a genotype of this space is laid out as a flat action sequence (see ``layout.py``)."""
        return ActionLayout(self.num_blocks, len(self.ops), len(self.combines))

    def decisions(self) -> list[Decision]:
        """The flat action space, in the order the controller emits it: per cell, per block,
        input A, input B, op A, op B, combine (NASNet, sec. 3)."""
        return list(self.layout.decisions)

    @property
    def num_decisions(self) -> int:
        return self.layout.size

    def cell_size(self) -> int:
        """Number of distinct action sequences for one cell: prod_b (2+b)^2 * |ops|^2 * |combines|."""
        return math.prod((NUM_CELL_INPUTS + b) ** 2 * len(self.ops) ** 2 * len(self.combines)
                         for b in range(self.num_blocks))

    def size(self) -> int:
        return self.cell_size() ** self.layout.num_cells

    def encode(self, genotype: Genotype) -> list[int]:
        """Flat action sequence for ``genotype`` (inverse of ``decode``)."""
        self.validate(genotype)
        choice = {
            "input": lambda b, slot: b.inputs[slot],
            "op": lambda b, slot: self.ops.index(b.ops[slot]),
            "combine": lambda b, slot: self.combines.index(b.combine),
        }
        return self.layout.join([[[choice[kind](b, slot) for kind, slot in BLOCK_DECISIONS] for b in cell.blocks]
                                 for cell in (genotype.normal, genotype.reduce)])

    def decode(self, actions: Sequence[int]) -> Genotype:
        """Genotype for a flat action sequence; the output list follows the loose-ends rule."""
        decisions = self.layout.decisions
        if len(actions) != len(decisions):
            raise GenotypeError(f"expected {len(decisions)} actions for this search space, got {len(actions)}")
        for d, a in zip(decisions, actions):
            if not 0 <= int(a) < d.num_choices:
                raise GenotypeError(f"action for {d.name} is {a}; it must be in 0..{d.num_choices - 1}")
        cells = []
        for blocks in self.layout.split(actions):
            parsed = []
            for values in blocks:
                chosen = {(kind, slot): v for (kind, slot), v in zip(BLOCK_DECISIONS, values)}
                parsed.append(Block(inputs=(chosen["input", 0], chosen["input", 1]),
                                    ops=(self.ops[chosen["op", 0]], self.ops[chosen["op", 1]]),
                                    combine=self.combines[chosen["combine", 0]]))
            cells.append(Cell.from_blocks(parsed))
        return Genotype(cells[0], cells[1])

    def sample(self, rng: random.Random) -> Genotype:
        """A genotype drawn uniformly from the space."""
        return self.decode([rng.randrange(n) for n in self.layout.num_choices_list])

    def validate(self, genotype: Genotype) -> None:
        """Raise GenotypeError if ``genotype`` lies outside this space."""
        for cell_type, cell in genotype.cells().items():
            if len(cell.blocks) != self.num_blocks:
                raise GenotypeError(
                    f"{cell_type} cell: has {len(cell.blocks)} blocks, this search space uses {self.num_blocks}"
                )
            for k, block in enumerate(cell.blocks):
                if block.combine not in self.combines:
                    raise GenotypeError(
                        f"{cell_type} cell, block {k} field 'combine': {block.combine!r} is not in {list(self.combines)}"
                    )
        check_ops_known(genotype, allowed=self.ops)
