"""A reward landscape driven by the global structure of a cell, not by its per-slot choices.

The families of :mod:`cellsearch.evaluators.landscapes` score mostly what each slot holds (op,
input, combine preferences and their pairwise interactions). Real accuracy also depends on what
no single slot decides: how far a cell sees (its receptive field), how deep it is, how big it is,
how wide its output is, and its mix of convolutions, pools and skips. Here every cell (Normal and
Reduction) is summarised by those features:

- ``receptive``: the largest growth of the receptive field along a path from a cell input to an
  output state, summed over the ops on the path (a 3x3 conv adds 2 pixels, a stacked 5x5 separable
  conv 8, a dilated 3x3 conv 4, a pool its kernel less one, identity 0);
- ``depth``: the longest chain of blocks;
- ``size``: the ops' parameters in units of a 1x1 conv, each weighted by its input's width;
- ``width``: the output's channels in units of F (a concat-combined block counts twice);
- ``conv_share`` and ``pool_share``: the fractions of the cell's ops that are convolutions and pools.

Family ``structure`` counts all six features; ``structure_wiring`` only the receptive field, depth
and width, which depend on how the blocks are wired more than on any op slot. The landscape's seed
draws, per cell and counted feature, a target (a quantile of that feature over random
cells, away from the median: for ``structure`` between 3% and 20% or between 80% and 97%, for
``structure_wiring`` between 1% and 5% or 95% and 99%) and a weight; the raw score
is minus the weighted squared distance to the targets, in units of each feature's spread over random
cells. So the best cells are rare, no op or input is good or bad on its own (whether one more conv
helps depends on how many the cell has), and the reward is smooth in the features. As in
:class:`~cellsearch.evaluators.landscapes.Landscape`, the score is standardised over random cells,
noise of ``noise`` standard deviations is added per evaluation, and ``reward = sigmoid(z - 1)``.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from cellsearch.evaluators.landscapes import LandscapeSpec
from cellsearch.space.genotype import Cell, Genotype, SearchSpace
from cellsearch.space.layout import NUM_CELL_INPUTS

FEATURES: tuple[str, ...] = ("receptive", "depth", "size", "width", "conv_share", "pool_share")
# Family -> the features its reward counts, and how rare its targets are (the range of the quantile,
# over random cells, of each target's distance from the nearer end). ``structure_wiring`` leaves out
# size and op mix, which a policy can steer op slot by op slot: what is left depends on how the blocks
# are wired. With half the features, targets at the 3-20% quantiles put the best cell (every target
# hit, reward 0.73 over seeds 0-9) barely above random search's best of 100 (0.68): no strategy could
# show a gain. At 1-5% the best cell scores 0.81.
STRUCTURE_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "structure": (FEATURES, (0.03, 0.20)),
    "structure_wiring": (("receptive", "depth", "width"), (0.01, 0.05)),
}
STANDARDISE_SAMPLES = 500


@dataclass(frozen=True)
class OpShape:
    """What an op does to a cell's global structure."""

    extent: int  # pixels it adds to the receptive field (kernel - 1, times 2 when stacked or dilated)
    params: float  # parameters per input-output channel pair, in units of a 1x1 conv
    kind: str  # "conv", "pool" or "skip"


def op_shape(name: str) -> OpShape:
    """The structural shape of op ``name``, read from its name (``sep_conv_5x5``, ``max_pool_3x3``, ...)."""
    if name in ("identity", "none"):
        return OpShape(0, 0.0, "skip")
    sizes = [int(k) for k in re.findall(r"(\d+)x\d+", name)]
    if not sizes:
        raise ValueError(f"op {name!r} has no kernel size in its name; the structure landscape knows identity, "
                         f"none, and ops named like conv_3x3, sep_conv_5x5, max_pool_3x3, conv_1x7_7x1")
    k = max(sizes)
    if "pool" in name:
        return OpShape(k - 1, 0.0, "pool")
    if name.startswith("dil_sep_conv"):  # one dilated separable conv
        return OpShape(2 * (k - 1), 1.0 + k * k / 64, "conv")
    if name.startswith("dil_conv"):  # one dilated full conv
        return OpShape(2 * (k - 1), float(k * k), "conv")
    if name.startswith("sep_conv"):  # two stacked separable convs (NASNet)
        return OpShape(2 * (k - 1), 2.0 + 2 * k * k / 64, "conv")
    if len(sizes) == 2:  # a 1xk conv then a kx1 conv
        return OpShape(k - 1, float(2 * k), "conv")
    return OpShape(k - 1, float(k * k), "conv")


def cell_features(cell: Cell, shapes: dict[str, OpShape]) -> tuple[float, ...]:
    """The cell's structural features, in the order of ``FEATURES``."""
    reach = [0] * NUM_CELL_INPUTS  # receptive-field growth up to each state
    depth = [0] * NUM_CELL_INPUTS
    channels = [1] * NUM_CELL_INPUTS  # in units of F
    size = 0.0
    kinds = {"conv": 0, "pool": 0, "skip": 0}
    for block in cell.blocks:
        reach.append(max(reach[i] + shapes[op].extent for i, op in block.pairs()))
        depth.append(1 + max(depth[i] for i in block.inputs))
        channels.append(2 if block.combine == "concat" else 1)
        for i, op in block.pairs():
            size += shapes[op].params * channels[i]
            kinds[shapes[op].kind] += 1
    num_ops = 2 * len(cell.blocks)
    return (float(max(reach[s] for s in cell.concat)), float(max(depth[NUM_CELL_INPUTS:])), size,
            float(sum(channels[s] for s in cell.concat)), kinds["conv"] / num_ops, kinds["pool"] / num_ops)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StructureLandscape:
    """A seeded synthetic reward over ``space`` that depends on each cell's global structure only.

    Called like :class:`~cellsearch.evaluators.landscapes.Landscape`: ``landscape(genotype, noise_seed)``.

    Args:
        space: the search space (its ops must be named so that :func:`op_shape` reads them).
        family: ``structure`` or ``structure_wiring`` (see ``STRUCTURE_FAMILIES``).
        seed: which landscape of the family (its targets and weights).
        noise: standard deviations of z added per evaluation.
    """

    def __init__(self, space: SearchSpace, family: str = "structure", seed: int = 0, noise: float = 0.2) -> None:
        if family not in STRUCTURE_FAMILIES:
            raise ValueError(f"unknown structure family {family!r}; choose one of {sorted(STRUCTURE_FAMILIES)}")
        if not noise >= 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.space, self.family, self.seed, self.noise = space, family, int(seed), float(noise)
        self.spec = LandscapeSpec(family, self.seed, self.noise)  # what learning curves are drawn from
        self.shapes = {op: op_shape(op) for op in space.ops}
        counted, (q_low, q_high) = STRUCTURE_FAMILIES[family]
        self.counted = [f in counted for f in FEATURES]
        rng = random.Random(f"landscape:{family}:{seed}")
        sample_rng = random.Random(f"landscape-standardise:{family}:{seed}")
        samples = [space.sample(sample_rng) for _ in range(STANDARDISE_SAMPLES)]
        per_cell = [[cell_features(g.normal, self.shapes) for g in samples],
                    [cell_features(g.reduce, self.shapes) for g in samples]]
        self.targets: list[list[float]] = []
        self.scales: list[list[float]] = []
        self.weights: list[list[float]] = []
        for rows in per_cell:
            targets, scales, weights = [], [], []
            for f, values in enumerate(zip(*rows)):
                q = rng.uniform(q_low, q_high)
                targets.append(_quantile(list(values), q if rng.random() < 0.5 else 1.0 - q))
                mean = sum(values) / len(values)
                scales.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0)
                weights.append(rng.uniform(0.5, 1.5) if self.counted[f] else 0.0)
            self.targets.append(targets)
            self.scales.append(scales)
            self.weights.append(weights)
        raw = [self.raw_score(g) for g in samples]
        self.mean = sum(raw) / len(raw)
        self.std = math.sqrt(sum((r - self.mean) ** 2 for r in raw) / len(raw)) or 1.0

    def raw_score(self, genotype: Genotype) -> float:
        """Minus the weighted squared distance of both cells' features to their targets."""
        score = 0.0
        for c, cell in enumerate((genotype.normal, genotype.reduce)):
            features = cell_features(cell, self.shapes)
            for value, target, scale, weight in zip(features, self.targets[c], self.scales[c], self.weights[c]):
                score -= weight * ((value - target) / scale) ** 2
        return score

    def z(self, genotype: Genotype) -> float:
        """Standardised noise-free score: 0 for a typical random genotype."""
        return (self.raw_score(genotype) - self.mean) / self.std

    def reward(self, genotype: Genotype, noise_seed: object = None) -> float:
        """Reward in (0, 1); ``noise_seed`` picks the noise draw (None = noise-free)."""
        z = self.z(genotype)
        if noise_seed is not None and self.noise:
            draw = random.Random(f"{self.family}:{self.seed}:{self.noise}:{noise_seed}:{genotype.key()}")
            z += self.noise * draw.gauss(0.0, 1.0)
        return 1.0 / (1.0 + math.exp(-(z - 1.0)))

    __call__ = reward
