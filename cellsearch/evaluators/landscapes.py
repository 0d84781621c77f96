"""Reward landscapes: synthetic genotype -> reward functions for comparing search strategies in seconds.

A landscape scores a genotype from features a real network's accuracy depends on: which ops each
cell uses (and where), how blocks are wired (their inputs, the cell's depth and output width), how
blocks combine, and interactions among these: between the two (input, op) pairs of a block, between
an op and what it is applied to, between an op and the combine method, and between the Normal and
the Reduction cell. Every weight is drawn from the landscape's seed; families differ in how much
each kind of term counts:

- ``additive``: main effects dominate (op, input, combine and depth preferences), weak interactions.
- ``epistatic``: pairwise interactions dominate (within a block, op x input, op x combine, across cells).
- ``rugged``: an NK landscape: every decision's contribution depends on itself and ``K`` other
  decisions through a random table, so neighbouring genotypes have unrelated rewards; weak main effects.
- ``deceptive``: main effects plus, per block, a trap around a hidden target block: a partial
  match scores below no match, only the whole block pays (Deb and Goldberg's trap functions).

The raw score is standardised over random genotypes of the space (so z = 0 is a typical random
cell), noise is added (``noise`` standard deviations of z, drawn from the evaluation's seed), and
``reward = sigmoid(z - 1)`` maps it to (0, 1), about 0.3 for a random cell: an accuracy-like number.
Scores see the canonical genotype, so two encodings of one cell score the same.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from cellsearch.space.genotype import Cell, Genotype, GenotypeError, SearchSpace
from cellsearch.space.layout import NUM_CELL_INPUTS

# Weight of each kind of term per family: main effects, block interactions, cross-cell, NK, trap.
FAMILIES: dict[str, dict[str, float]] = {
    "additive": {"main": 1.0, "pair": 0.2, "cross": 0.2, "nk": 0.0, "trap": 0.0},
    "epistatic": {"main": 0.35, "pair": 1.0, "cross": 1.0, "nk": 0.0, "trap": 0.0},
    "rugged": {"main": 0.35, "pair": 0.2, "cross": 0.2, "nk": 1.0, "trap": 0.0},
    "deceptive": {"main": 1.0, "pair": 0.2, "cross": 0.2, "nk": 0.0, "trap": 1.0},
}
NK_NEIGHBOURS = 2  # K: other decisions each decision's NK contribution depends on
STANDARDISE_SAMPLES = 500


def gauss_table(rng: random.Random, *shape: int) -> list:
    """Nested lists of standard normal draws with the given shape."""
    if len(shape) == 1:
        return [rng.gauss(0.0, 1.0) for _ in range(shape[0])]
    return [gauss_table(rng, *shape[1:]) for _ in range(shape[0])]


def cell_depth(cell: Cell) -> int:
    """Longest chain of blocks from a cell input to any block output."""
    depth = [0] * NUM_CELL_INPUTS
    for block in cell.blocks:
        depth.append(1 + max(depth[i] for i in block.inputs))
    return max(depth[NUM_CELL_INPUTS:])


@dataclass(frozen=True)
class LandscapeSpec:
    """Which landscape: family, seed of its weights, noise in standard deviations of z."""

    family: str = "additive"
    seed: int = 0
    noise: float = 0.2


class Landscape:
    """A seeded synthetic reward over ``space``; call it with a genotype (and a noise seed)."""

    def __init__(self, space: SearchSpace, family: str = "additive", seed: int = 0, noise: float = 0.2) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown landscape family {family!r}; choose one of {sorted(FAMILIES)}")
        if not noise >= 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.space, self.spec = space, LandscapeSpec(family, int(seed), float(noise))
        self.weights = FAMILIES[family]
        self._spaces = {space.num_blocks: space}
        self.op_index = {op: k for k, op in enumerate(space.ops)}
        self.combine_index = {c: k for k, c in enumerate(space.combines)}
        rng = random.Random(f"landscape:{family}:{seed}")
        n_ops, n_comb, n_blocks = len(space.ops), len(space.combines), space.num_blocks
        n_states = NUM_CELL_INPUTS + n_blocks
        cells = space.layout.num_cells
        self.op_pref = gauss_table(rng, cells, n_ops)
        self.op_at_block = gauss_table(rng, cells, n_blocks, n_ops)
        self.input_pref = gauss_table(rng, cells, n_blocks, n_states)
        self.combine_pref = gauss_table(rng, cells, n_blocks, n_comb)
        self.depth_pref = rng.gauss(0.0, 1.0)
        self.width_pref = rng.gauss(0.0, 1.0)
        self.op_pair = gauss_table(rng, cells, n_ops, n_ops)  # op of slot a x op of slot b
        self.op_on_source = gauss_table(rng, cells, 2, n_ops)  # op applied to a cell input / to a block output
        self.op_combine = gauss_table(rng, cells, n_comb, n_ops)
        self.cross = gauss_table(rng, n_ops, n_ops)  # op share in the normal cell x op share in the reduction cell
        num_decisions = space.layout.size
        choices = space.layout.num_choices_list
        self.nk_neighbours = [rng.sample([j for j in range(num_decisions) if j != i], NK_NEIGHBOURS)
                              for i in range(num_decisions)]
        # Decision i's NK table: one uniform draw per joint value of i and its neighbours (mixed radix).
        self.nk_tables = [[rng.random() - 0.5 for _ in range(math.prod(choices[j] for j in [i, *nb]))]
                          for i, nb in enumerate(self.nk_neighbours)]
        self.nk_radix = [[math.prod(choices[j] for j in [i, *nb][k + 1:]) for k in range(NK_NEIGHBOURS + 1)]
                         for i, nb in enumerate(self.nk_neighbours)]
        self.target = space.sample(rng).canonical()
        self.trap_salt = rng.getrandbits(64)
        sample_rng = random.Random(f"landscape-standardise:{family}:{seed}")
        raw = [self.raw_score(space.sample(sample_rng)) for _ in range(STANDARDISE_SAMPLES)]
        self.mean = sum(raw) / len(raw)
        self.std = math.sqrt(sum((r - self.mean) ** 2 for r in raw) / len(raw)) or 1.0

    # --- the terms ------------------------------------------------------------------------------
    def _main(self, c: int, cell: Cell) -> float:
        total = 0.0
        for b, block in enumerate(cell.blocks):
            for i, op in block.pairs():
                k = self.op_index[op]
                total += self.op_pref[c][k] + 0.5 * self.op_at_block[c][b][k] + 0.5 * self.input_pref[c][b][i]
            total += 0.5 * self.combine_pref[c][b][self.combine_index[block.combine]]
        total += self.depth_pref * cell_depth(cell) + self.width_pref * len(cell.concat)
        return total

    def _pairs(self, c: int, cell: Cell) -> float:
        total = 0.0
        for block in cell.blocks:
            (ia, oa), (ib, ob) = block.pairs()
            ka, kb = self.op_index[oa], self.op_index[ob]
            m = self.combine_index[block.combine]
            total += self.op_pair[c][ka][kb]
            for i, k in ((ia, ka), (ib, kb)):
                total += self.op_on_source[c][int(i >= NUM_CELL_INPUTS)][k]
                total += self.op_combine[c][m][k]
        return total

    def _cross(self, genotype: Genotype) -> float:
        index = self.op_index
        normal = [index[op] for b in genotype.normal.blocks for op in b.ops]
        reduce = [index[op] for b in genotype.reduce.blocks for op in b.ops]
        return sum(self.cross[i][j] for i in normal for j in reduce) / math.sqrt(len(normal) * len(reduce))

    def _nk(self, genotype: Genotype, num_blocks: int) -> float:
        # A cell with fewer blocks (progressive search) reads as the full layout with zeros for the
        # missing decisions, which contribute nothing themselves.
        layout = self.space.layout
        present = self._spaces[num_blocks].layout.split(self._spaces[num_blocks].encode(genotype))
        actions = layout.join([blocks + [(0,) * layout.per_block] * (self.space.num_blocks - num_blocks)
                               for blocks in present])
        total = 0.0
        for i, neighbours in enumerate(self.nk_neighbours):
            if layout.decisions[i].block >= num_blocks:
                continue
            radix = self.nk_radix[i]
            total += self.nk_tables[i][sum(actions[j] * r for j, r in zip([i, *neighbours], radix))]
        return 4.0 * total

    def _trap(self, genotype: Genotype) -> float:
        total = 0.0
        for cell, target in ((genotype.normal, self.target.normal), (genotype.reduce, self.target.reduce)):
            for block, goal in zip(cell.blocks, target.blocks):
                matches = sum(x == y for x, y in zip(block.inputs + block.ops, goal.inputs + goal.ops))
                matches += block.combine == goal.combine
                total += 8.0 if matches == 5 else -0.5 * matches  # 5 = every decision of the block
        return total

    # --- scoring --------------------------------------------------------------------------------
    def raw_score(self, genotype: Genotype) -> float:
        """The noise-free score before standardisation (of a cell with up to the space's blocks)."""
        num_blocks = len(genotype.normal.blocks)
        if num_blocks not in self._spaces:
            if not 1 <= num_blocks <= self.space.num_blocks:
                raise GenotypeError(f"a landscape over {self.space.num_blocks}-block cells cannot score cells "
                                    f"of {num_blocks} blocks")
            self._spaces[num_blocks] = SearchSpace(self.space.ops, num_blocks, self.space.combines)
        self._spaces[num_blocks].validate(genotype)
        canon = genotype.canonical()
        w = self.weights
        score = 0.0
        for c, cell in enumerate((canon.normal, canon.reduce)):
            score += w["main"] * self._main(c, cell) + w["pair"] * self._pairs(c, cell)
        score += w["cross"] * self._cross(canon)
        if w["nk"]:
            score += w["nk"] * self._nk(canon, num_blocks)
        if w["trap"]:
            score += w["trap"] * self._trap(canon)
        return score

    def z(self, genotype: Genotype) -> float:
        """Standardised noise-free score: 0 for a typical random genotype, 1 = one standard deviation better."""
        return (self.raw_score(genotype) - self.mean) / self.std

    def reward(self, genotype: Genotype, noise_seed: object = None) -> float:
        """Reward in (0, 1); ``noise_seed`` picks the noise draw (None = noise-free)."""
        z = self.z(genotype)
        if noise_seed is not None and self.spec.noise:
            z += self.spec.noise * random.Random(f"{self.spec}:{noise_seed}:{genotype.key()}").gauss(0.0, 1.0)
        return 1.0 / (1.0 + math.exp(-(z - 1.0)))

    __call__ = reward

