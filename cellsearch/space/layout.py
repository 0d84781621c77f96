"""The action layout: which decisions make up a genotype, in which order, with how many choices.

A search strategy sees a genotype as a flat list of integers, one per decision. The layout is the
single place that knows how that list is organised (NASNet, Zoph et al. 2018, sec. 3): one run of
decisions per cell type, one group per block, and within a block the decisions named in
``BLOCK_DECISIONS``. Everything else (the genotype codec, every strategy, the surrogate features)
asks the layout instead of counting positions itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
NUM_CELL_INPUTS = 2  # h_(i-2) and h_(i-1): states 0 and 1; block k's output is state 2 + k
# The decisions of one block in emission order: (kind, slot). Slot 0/1 = the block's first/second
# (input, op) pair; the combine method has slot 0.
BLOCK_DECISIONS: tuple[tuple[str, int], ...] = (("input", 0), ("input", 1), ("op", 0), ("op", 1), ("combine", 0))


@dataclass(frozen=True)
class Decision:
    """One choice the controller makes: which cell and block, what is chosen, and how many options."""

    cell: str
    block: int
    kind: str  # "input", "op" or "combine"
    slot: int  # 0 or 1 for the block's first or second (input, op) pair; 0 for combine
    num_choices: int

    @property
    def name(self) -> str:
        suffix = "" if self.kind == "combine" else f"_{'ab'[self.slot]}"
        return f"{self.cell}.b{self.block}.{self.kind}{suffix}"


@dataclass(frozen=True)
class ActionLayout:
    """Order and sizes of the flat decisions of a genotype with ``num_blocks`` blocks per cell."""

    num_blocks: int
    num_ops: int
    num_combines: int

    per_block = len(BLOCK_DECISIONS)
    num_cells = len(CELL_TYPES)

    @property
    def per_cell(self) -> int:
        """Decisions of one cell."""
        return self.per_block * self.num_blocks

    @property
    def size(self) -> int:
        """Length of a full action sequence."""
        return self.num_cells * self.per_cell

    @cached_property
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision in emission order: per cell, per block, the block's ``BLOCK_DECISIONS``."""
        out = []
        for cell in CELL_TYPES:
            for b in range(self.num_blocks):
                for kind, slot in BLOCK_DECISIONS:
                    out.append(Decision(cell, b, kind, slot, self.num_choices(kind, b)))
        return tuple(out)

    @cached_property
    def num_choices_list(self) -> list[int]:
        """Choices per decision, in emission order (the controller's softmax sizes)."""
        return [d.num_choices for d in self.decisions]

    def num_choices(self, kind: str, block: int) -> int:
        """Options of a decision of ``kind`` in block ``block``."""
        if kind == "input":
            return NUM_CELL_INPUTS + block
        return self.num_ops if kind == "op" else self.num_combines

    def position(self, cell: int, block: int, kind: str, slot: int = 0) -> int:
        """Index in the flat sequence of one decision (``cell`` is 0 for normal, 1 for reduce)."""
        return cell * self.per_cell + block * self.per_block + BLOCK_DECISIONS.index((kind, slot))

    def positions(self, kind: str) -> list[int]:
        """Indices of every decision of ``kind``."""
        return [i for i, d in enumerate(self.decisions) if d.kind == kind]

    def with_blocks(self, num_blocks: int) -> "ActionLayout":
        """The same layout for cells of ``num_blocks`` blocks (progressive search grows cells)."""
        return ActionLayout(num_blocks, self.num_ops, self.num_combines)

    def blocks_of(self, actions: Sequence[int]) -> int:
        """Blocks per cell of an action sequence of any block count, from its length."""
        per_block_pair = self.num_cells * self.per_block
        if not actions or len(actions) % per_block_pair:
            raise ValueError(f"an action sequence has a multiple of {per_block_pair} entries, got {len(actions)}")
        return len(actions) // per_block_pair

    def split(self, actions: Sequence[int]) -> list[list[tuple[int, ...]]]:
        """Per cell, per block: the block's decisions as a tuple in ``BLOCK_DECISIONS`` order."""
        num_blocks = self.blocks_of(actions)
        per_cell = self.per_block * num_blocks
        return [[tuple(int(a) for a in actions[c * per_cell + b * self.per_block:c * per_cell + (b + 1) * self.per_block])
                 for b in range(num_blocks)] for c in range(self.num_cells)]

    @staticmethod
    def join(cells: Sequence[Sequence[Sequence[int]]]) -> list[int]:
        """Inverse of :meth:`split`."""
        return [int(a) for blocks in cells for block in blocks for a in block]

    def grow(self, actions: Sequence[int], new_blocks: Sequence[Sequence[int]]) -> list[int]:
        """``actions`` with one block appended to each cell: ``new_blocks[c]`` to cell ``c``."""
        return self.join([blocks + [tuple(new)] for blocks, new in zip(self.split(actions), new_blocks)])
