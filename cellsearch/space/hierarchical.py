"""Hierarchical representations (Liu et al. 2018, "Hierarchical Representations for Efficient
Architecture Search", sec. 2) as plain data: the genotype, its validation, and the search space's flat
encoding and mutation.

Level 1 is a fixed set of primitives (``PRIMITIVES``). A level-l motif (l >= 2) is a directed acyclic
graph over a fixed number of nodes, written as an adjacency matrix: entry ``[i][j]`` (i < j) names the
level-(l-1) motif (a primitive at level 2) that reads node i's output and feeds node j, or ``none``.
Node 0 is the motif's input and the last node its output; a node with several inputs merges them by
depthwise concatenation. The top level holds a single motif, the cell. Entries above level 2 name the
level below's motifs as ``m0``, ``m1``, ...

The paper's settings (sec. 4.1): three levels with 6 primitives, 6 level-2 motifs of 4 nodes and one
level-3 motif of 5 nodes (``conf/space/hierarchical.yaml``); the flat representation is one motif of 11
nodes over the primitives (``conf/space/hierarchical_flat.yaml``).

Parsing lives here; ``hierarchical_network.py`` turns a genotype into modules.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Mapping, Sequence

from cellsearch.space.genotype import GenotypeError
from cellsearch.space.spaces import compact_json, genotype_header, header_yaml_lines

# Level-1 primitives (Liu et al. 2018, sec. 2.3); every conv is followed by batch norm and ReLU.
PRIMITIVES: tuple[str, ...] = ("conv_1x1", "dw_conv_3x3", "sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
                               "identity")
NONE = "none"  # no edge
SPACE = "hierarchical"
MOTIF_PREFIX = "m"  # entries above level 2 name the level below's motifs m0, m1, ...

Matrix = tuple[tuple[str, ...], ...]


def _error(where: str, message: str) -> GenotypeError:
    return GenotypeError(f"{SPACE} genotype, {where}: {message}")


def motif_name(index: int) -> str:
    """The matrix entry that names the level below's motif ``index``."""
    return f"{MOTIF_PREFIX}{index}"


def motif_index(entry: str) -> int | None:
    """The level-below motif an entry names (``'m3'`` -> 3), or None for a primitive or ``none``."""
    digits = entry[len(MOTIF_PREFIX):]
    if entry.startswith(MOTIF_PREFIX) and digits.isdigit() and str(int(digits)) == digits:
        return int(digits)
    return None


def edge_pairs(num_nodes: int) -> list[tuple[int, int]]:
    """The possible edges (i, j), i < j, of a motif of ``num_nodes`` nodes, row by row."""
    return [(i, j) for i in range(num_nodes) for j in range(i + 1, num_nodes)]


@dataclass(frozen=True)
class HierarchicalGenotype:
    """Motifs level by level: ``levels[0]`` holds the level-2 motifs (over primitives), ``levels[-1]``
    the single top motif. ``name`` and ``source`` are metadata, not architecture."""

    space: ClassVar[str] = SPACE

    levels: tuple[tuple[Matrix, ...], ...]
    name: str = field(default="", compare=False)
    source: str = field(default="", compare=False)

    @property
    def top(self) -> Matrix:
        """The cell: the one motif of the highest level."""
        return self.levels[-1][0]

    def edges(self, level: int, motif: int) -> list[tuple[int, int, str]]:
        """(i, j, entry) of every edge of motif ``motif`` at level ``level`` (2 = over primitives)."""
        matrix = self.levels[level - 2][motif]
        return [(i, j, matrix[i][j]) for i, j in edge_pairs(len(matrix)) if matrix[i][j] != NONE]

    def primitives_used(self) -> set[str]:
        return {entry for motifs in self.levels[:1] for m in motifs for row in m for entry in row if entry != NONE}

    # --- plain-data views -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        levels = [[[list(row) for row in matrix] for matrix in motifs] for motifs in self.levels]
        return {**genotype_header(SPACE, self.name, self.source), "levels": levels}

    def to_json(self) -> str:
        """Compact one-line text form, as the trial store keeps genotypes."""
        return compact_json(self.to_dict())

    def to_yaml(self) -> str:
        """Readable YAML: one flow-style line per matrix row, a comment per level and motif."""
        lines = [*header_yaml_lines(genotype_header(SPACE, self.name, self.source)), "levels:"]
        for level, motifs in enumerate(self.levels, start=2):
            below = "primitives" if level == 2 else f"level-{level - 1} motifs"
            count = f"{len(motifs)} motifs" if len(motifs) > 1 else "one motif"
            lines.append(f"  - # level {level}: {count} over {below}")
            for k, matrix in enumerate(motifs):
                lines.append(f"    - # {motif_name(k)}" if len(motifs) > 1 else "    - # the cell")
                lines.extend(f"      - [{', '.join(row)}]" for row in matrix)
        return "\n".join(lines) + "\n"

    def key(self) -> str:
        """Canonical text: equal for two genotypes that compute the same function (see canonical())."""
        return HierarchicalGenotype(self.canonical().levels).to_json()

    def canonical(self) -> "HierarchicalGenotype":
        """The same architecture with everything that cannot reach the output removed.

        An edge counts only on a path from the motif's input to its output through edges that compute
        something; a motif without such a path computes nothing (an edge carrying it is no edge); a
        motif that no counted edge of the level above uses is left empty.
        """
        pruned: list[tuple[Matrix, ...]] = []
        for level, motifs in enumerate(self.levels):
            empty_below = {k for k, m in enumerate(pruned[-1]) if _is_empty(m)} if pruned else set()
            pruned.append(tuple(_prune(m, empty_below) for m in motifs))
        used = {0}
        for level in range(len(pruned) - 1, -1, -1):
            pruned[level] = tuple(m if k in used else _empty(len(m)) for k, m in enumerate(pruned[level]))
            used = {motif_index(entry) for m in pruned[level] for row in m for entry in row} - {None}
        return HierarchicalGenotype(tuple(pruned), self.name, self.source)


def _empty(num_nodes: int) -> Matrix:
    return tuple((NONE,) * num_nodes for _ in range(num_nodes))


def _is_empty(matrix: Matrix) -> bool:
    return all(entry == NONE for row in matrix for entry in row)


def _prune(matrix: Matrix, empty_below: set[int]) -> Matrix:
    """``matrix`` keeping only the edges on a path from node 0 to the last node (edges that carry an
    empty motif do not count); all ``none`` if there is no such path."""
    n = len(matrix)
    live = {(i, j) for i, j in edge_pairs(n) if matrix[i][j] != NONE and motif_index(matrix[i][j]) not in empty_below}
    reached = {0}
    for j in range(1, n):
        if any((i, j) in live for i in reached):
            reached.add(j)
    reaching = {n - 1}
    for i in range(n - 2, -1, -1):
        if any((i, j) in live for j in reaching):
            reaching.add(i)
    if n - 1 not in reached:
        return _empty(n)
    return tuple(tuple(matrix[i][j] if (i, j) in live and i in reached and j in reaching else NONE
                       for j in range(n)) for i in range(n))


# --- parsing and validation -----------------------------------------------------------------------

def _parse_matrix(data: Any, where: str, level: int, num_below: int) -> Matrix:
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        raise _error(where, f"expected a square adjacency matrix (a list of at least 2 rows), got {data!r}")
    n = len(data)
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, (list, tuple)) or len(row) != n:
            raise _error(where, f"row {i} must list {n} entries (the matrix is {n} x {n}), got {row!r}")
        for j, entry in enumerate(row):
            if not isinstance(entry, str):
                raise _error(f"{where}, entry [{i}][{j}]", f"{entry!r} is not a name ({NONE}, "
                                                           f"{'a primitive' if level == 2 else 'm<k>'})")
            if entry != NONE and j <= i:
                raise _error(f"{where}, entry [{i}][{j}]",
                             f"{entry!r} lies on or below the diagonal: a motif is acyclic with its nodes in "
                             f"order, so only entries [i][j] with i < j may be edges (the matrix must be "
                             f"strictly upper-triangular)")
            if entry == NONE:
                continue
            if level == 2 and entry not in PRIMITIVES:
                raise _error(f"{where}, entry [{i}][{j}]",
                             f"{entry!r} is not a primitive; level-2 entries are {NONE} or one of {list(PRIMITIVES)}")
            if level > 2:
                index = motif_index(entry)
                if index is None or index >= num_below:
                    raise _error(f"{where}, entry [{i}][{j}]",
                                 f"{entry!r} is out of range: level-{level} entries are {NONE} or a level-"
                                 f"{level - 1} motif m0..m{num_below - 1}")
        rows.append(tuple(row))
    return tuple(rows)


def parse_hierarchical(data: Any) -> HierarchicalGenotype:
    """A HierarchicalGenotype from plain data (``to_dict()``, a genotype file), or a one-line
    GenotypeError that names the level, the motif and the entry."""
    if not isinstance(data, Mapping):
        raise GenotypeError(f"{SPACE} genotype: expected a mapping with 'levels', got {type(data).__name__}")
    unknown = set(data) - {"space", "name", "source", "levels"}
    if unknown:
        raise GenotypeError(f"{SPACE} genotype: unknown field(s) {sorted(unknown)}; expected space, name, source, "
                            f"levels")
    if data.get("space") not in (None, SPACE):
        raise GenotypeError(f"{SPACE} genotype: field 'space' is {data.get('space')!r}")
    raw_levels = data.get("levels")
    if not isinstance(raw_levels, (list, tuple)) or not raw_levels:
        raise GenotypeError(f"{SPACE} genotype: 'levels' must be a non-empty list (level 2 first) of lists of "
                            f"motifs, got {raw_levels!r}")
    levels: list[tuple[Matrix, ...]] = []
    for level, motifs in enumerate(raw_levels, start=2):
        if not isinstance(motifs, (list, tuple)) or not motifs:
            raise _error(f"level {level}", f"expected a non-empty list of motifs, got {motifs!r}")
        num_below = len(levels[-1]) if levels else 0
        levels.append(tuple(_parse_matrix(m, f"level {level}, motif {k}", level, num_below)
                            for k, m in enumerate(motifs)))
    if len(levels[-1]) != 1:
        raise _error(f"level {len(levels) + 1}", f"the top level holds one motif (the cell), got {len(levels[-1])}")
    return HierarchicalGenotype(tuple(levels), name=str(data.get("name") or ""), source=str(data.get("source") or ""))


# --- the search space -------------------------------------------------------------------------------

@dataclass(frozen=True)
class EdgeDecision:
    """One edge of one motif: ``none`` (choice 0) or the level below's entry ``choice - 1``."""

    level: int  # 2 = a motif over primitives
    motif: int
    source: int  # the predecessor node i of entry [i][j]
    target: int  # the successor node j
    num_choices: int
    kind: ClassVar[str] = "edge"

    @property
    def name(self) -> str:
        return f"level{self.level}.{motif_name(self.motif)}.{self.source}->{self.target}"


@dataclass(frozen=True)
class MotifLayout:
    """Decisions of a hierarchical genotype: one per possible edge of every motif, level 2 first, each
    motif's edges row by row."""

    motifs_per_level: tuple[int, ...]
    nodes_per_motif: tuple[int, ...]
    num_primitives: int

    @cached_property
    def decisions(self) -> tuple[EdgeDecision, ...]:
        out = []
        for k, (num_motifs, num_nodes) in enumerate(zip(self.motifs_per_level, self.nodes_per_motif)):
            below = self.num_primitives if k == 0 else self.motifs_per_level[k - 1]
            for m in range(num_motifs):
                out += [EdgeDecision(k + 2, m, i, j, 1 + below) for i, j in edge_pairs(num_nodes)]
        return tuple(out)

    @cached_property
    def num_choices_list(self) -> list[int]:
        return [d.num_choices for d in self.decisions]

    @property
    def size(self) -> int:
        return len(self.decisions)

    def motif_positions(self, level: int, motif: int) -> range:
        """Indices in the flat sequence of the edges of ``motif`` at ``level``."""
        k = level - 2
        start = sum(m * len(edge_pairs(n)) for m, n in zip(self.motifs_per_level[:k], self.nodes_per_motif[:k]))
        per_motif = len(edge_pairs(self.nodes_per_motif[k]))
        return range(start + motif * per_motif, start + (motif + 1) * per_motif)


def _positive_ints(value: Any, key: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value):
        raise GenotypeError(f"space={SPACE}: {key} must be a non-empty list of integers >= {minimum}, got "
                            f"{value!r} (set {key}=[...])")
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class HierarchicalSpace:
    """The hierarchical space: ``levels`` levels counting the primitives; ``motifs_per_level`` and
    ``nodes_per_motif`` give, for levels 2..L, how many motifs a level holds and how many nodes each has
    (the top level holds one). Defaults: the paper's three-level representation."""

    name: ClassVar[str] = SPACE

    levels: int = 3
    motifs_per_level: tuple[int, ...] = (6, 1)
    nodes_per_motif: tuple[int, ...] = (4, 5)
    primitives: tuple[str, ...] = PRIMITIVES

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise GenotypeError(f"space={SPACE}: space.levels must be an integer >= 2 (primitives are level 1), "
                                f"got {self.levels!r}")
        object.__setattr__(self, "motifs_per_level", _positive_ints(self.motifs_per_level,
                                                                    "space.motifs_per_level", 1))
        object.__setattr__(self, "nodes_per_motif", _positive_ints(self.nodes_per_motif, "space.nodes_per_motif", 2))
        if isinstance(self.primitives, str):
            raise GenotypeError(f"space={SPACE}: space.primitives must be a list, got {self.primitives!r}")
        object.__setattr__(self, "primitives", tuple(self.primitives))
        for key in ("motifs_per_level", "nodes_per_motif"):
            if len(getattr(self, key)) != self.levels - 1:
                raise GenotypeError(f"space={SPACE}: space.{key} needs one entry per level 2..{self.levels} "
                                    f"({self.levels - 1}), got {list(getattr(self, key))}")
        if self.motifs_per_level[-1] != 1:
            raise GenotypeError(f"space={SPACE}: the top level holds one motif (the cell); space.motifs_per_level "
                                f"ends with {self.motifs_per_level[-1]}")
        unknown = [p for p in self.primitives if p not in PRIMITIVES]
        if not self.primitives or unknown or len(set(self.primitives)) != len(self.primitives):
            raise GenotypeError(f"space={SPACE}: space.primitives must be distinct names from {list(PRIMITIVES)}, "
                                f"got {list(self.primitives)}")

    @classmethod
    def from_settings(cls, fields: Mapping[str, Any]) -> "HierarchicalSpace":
        """The space of a ``space`` config node's fields."""
        unknown = set(fields) - {"levels", "motifs_per_level", "nodes_per_motif", "primitives"}
        if unknown:
            raise GenotypeError(f"unknown setting(s) {sorted(unknown)} of space={SPACE}; it takes levels, "
                                f"motifs_per_level, nodes_per_motif, primitives")
        return cls(**fields)

    @staticmethod
    def parse(data: Any) -> HierarchicalGenotype:
        """A genotype of this space's kind from plain data (any shape of levels)."""
        return parse_hierarchical(data)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "levels": self.levels, "motifs_per_level": list(self.motifs_per_level),
                "nodes_per_motif": list(self.nodes_per_motif), "primitives": list(self.primitives)}

    @cached_property
    def layout(self) -> MotifLayout:
        return MotifLayout(self.motifs_per_level, self.nodes_per_motif, len(self.primitives))

    def _entries(self, level: int) -> tuple[str, ...]:
        """What choice 0, 1, ... of an edge at ``level`` means."""
        below = self.primitives if level == 2 else tuple(motif_name(k) for k in range(self.motifs_per_level[level - 3]))
        return (NONE, *below)

    def validate(self, genotype: Any) -> None:
        """Raise GenotypeError (one line naming the space) if ``genotype`` lies outside this space."""
        if getattr(type(genotype), "space", None) != SPACE:
            raise GenotypeError(f"space={SPACE} cannot take a genotype of space={getattr(type(genotype), 'space', '?')}"
                                f"; give a genotype with 'space: {SPACE}'")
        if len(genotype.levels) != self.levels - 1:
            raise GenotypeError(f"space={SPACE}: the genotype has {len(genotype.levels) + 1} levels, this space "
                                f"{self.levels} (space.levels)")
        for level, (motifs, count, nodes) in enumerate(
                zip(genotype.levels, self.motifs_per_level, self.nodes_per_motif), start=2):
            if len(motifs) != count:
                raise GenotypeError(f"space={SPACE}: level {level} of the genotype has {len(motifs)} motifs, this "
                                    f"space {count} (space.motifs_per_level)")
            for k, matrix in enumerate(motifs):
                if len(matrix) != nodes:
                    raise GenotypeError(f"space={SPACE}: level {level}, motif {k} has {len(matrix)} nodes, this "
                                        f"space's level-{level} motifs have {nodes} (space.nodes_per_motif)")
        outside = sorted(genotype.primitives_used() - set(self.primitives))
        if outside:
            raise GenotypeError(f"space={SPACE}: primitive(s) {outside} are not in this space's "
                                f"{list(self.primitives)} (space.primitives)")

    def encode(self, genotype: HierarchicalGenotype) -> list[int]:
        """The flat action sequence of ``genotype`` (inverse of :meth:`decode`)."""
        self.validate(genotype)
        return [self._entries(d.level).index(genotype.levels[d.level - 2][d.motif][d.source][d.target])
                for d in self.layout.decisions]

    def decode(self, actions: Sequence[int]) -> HierarchicalGenotype:
        """The genotype of a flat action sequence (GenotypeError for a wrong length or value)."""
        decisions = self.layout.decisions
        if len(actions) != len(decisions):
            raise GenotypeError(f"space={SPACE}: expected {len(decisions)} actions, got {len(actions)}")
        matrices = [[[[NONE] * n for _ in range(n)] for _ in range(m)]
                    for m, n in zip(self.motifs_per_level, self.nodes_per_motif)]
        for d, a in zip(decisions, actions):
            if isinstance(a, bool) or not 0 <= int(a) < d.num_choices:
                raise GenotypeError(f"space={SPACE}: action for {d.name} is {a}; it must be in 0..{d.num_choices - 1}")
            matrices[d.level - 2][d.motif][d.source][d.target] = self._entries(d.level)[int(a)]
        return HierarchicalGenotype(tuple(tuple(tuple(tuple(row) for row in m) for m in motifs) for motifs in matrices))

    def sample(self, rng: random.Random) -> HierarchicalGenotype:
        """A genotype drawn uniformly over the action sequences."""
        return self.decode([rng.randrange(n) for n in self.layout.num_choices_list])

    def trivial(self) -> HierarchicalGenotype:
        """Every motif a chain of identities (node i feeds node i + 1): where Liu et al.'s search starts."""
        if "identity" not in self.primitives:
            raise GenotypeError(f"space={SPACE}: the trivial genotype chains identities, which space.primitives "
                                f"{list(self.primitives)} lacks")
        actions = [0] * self.layout.size
        identity = 1 + self.primitives.index("identity")
        for index, d in enumerate(self.layout.decisions):
            if d.target == d.source + 1:
                actions[index] = identity if d.level == 2 else 1  # above level 2: m0, itself a chain of identities
        return self.decode(actions)

    def mutate(self, actions: Sequence[int], rng: random.Random) -> list[int]:
        """A copy of ``actions`` with one edge changed (Liu et al., sec. 3.1): a level, a motif at that level,
        a successor node j, a predecessor node i < j, and a new entry for ``[i][j]`` (``none`` or a motif of
        the level below) different from the current one: an edge added, altered or removed."""
        child = [int(a) for a in actions]
        level = 2 + rng.randrange(self.levels - 1)
        motif = rng.randrange(self.motifs_per_level[level - 2])
        num_nodes = self.nodes_per_motif[level - 2]
        target = 1 + rng.randrange(num_nodes - 1)
        source = rng.randrange(target)
        index = self.layout.motif_positions(level, motif)[edge_pairs(num_nodes).index((source, target))]
        new_value = rng.randrange(self.layout.decisions[index].num_choices - 1)
        child[index] = new_value if new_value < child[index] else new_value + 1
        return child
