"""A reward landscape driven by the global structure of a genotype, not by its per-slot choices.

Each search space names the features its genotypes are summarised by (``SPACE_FEATURES``): NASNet's
cells below, NAS-RL's layers and hierarchical motifs in :mod:`cellsearch.evaluators.space_features`;
the landscape (targets, weights, standardisation) is the same for all.

For NASNet: the families of :mod:`cellsearch.evaluators.landscapes` score mostly what each slot holds
(op, input, combine preferences and their pairwise interactions). Real accuracy also depends on what
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

import importlib
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from cellsearch.evaluators.landscapes import LandscapeSpec
from cellsearch.space.genotype import Cell, Genotype, SearchSpace
from cellsearch.space.layout import CELL_TYPES, NUM_CELL_INPUTS

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


@dataclass(frozen=True)
class StructureFeatures:
    """What a structure landscape reads of one space's genotypes.

    Attributes:
        names: the features, in the order ``compute`` returns them.
        families: family -> (the names it counts, the quantile range of its targets; see STRUCTURE_FAMILIES).
        compute: genotype -> its features (GenotypeError if it lies outside the space).
    """

    names: tuple[str, ...]
    families: dict[str, tuple[tuple[str, ...], tuple[float, float]]]
    compute: Callable[[Any], tuple[float, ...]]


def nasnet_features(space: SearchSpace) -> StructureFeatures:
    """NASNet's cell pair: ``FEATURES`` of the Normal cell, then of the Reduction cell."""
    shapes = {op: op_shape(op) for op in space.ops}

    def compute(genotype: Genotype) -> tuple[float, ...]:
        return cell_features(genotype.normal, shapes) + cell_features(genotype.reduce, shapes)

    families = {family: (tuple(f"{cell}.{f}" for cell in CELL_TYPES for f in counted), quantiles)
                for family, (counted, quantiles) in STRUCTURE_FAMILIES.items()}
    return StructureFeatures(tuple(f"{cell}.{f}" for cell in CELL_TYPES for f in FEATURES), families, compute)


# Space name -> "module:function" giving that space's StructureFeatures (imported on first use).
SPACE_FEATURES: dict[str, str] = {
    "nasnet": "cellsearch.evaluators.structure_landscape:nasnet_features",
    "nasrl": "cellsearch.evaluators.space_features:nasrl_features",
    "hierarchical": "cellsearch.evaluators.space_features:hierarchical_features",
}


def structure_features(space: Any) -> StructureFeatures:
    """The structural features of ``space``'s genotypes (ValueError for a space without them)."""
    if space.name not in SPACE_FEATURES:
        raise ValueError(f"no structure landscape for space={space.name}; known: {sorted(SPACE_FEATURES)}")
    module_name, function = SPACE_FEATURES[space.name].split(":")
    return getattr(importlib.import_module(module_name), function)(space)


def structure_families(space: Any) -> list[str]:
    """The structure families ``space`` has (``structure``, ``structure_wiring``, ...)."""
    return sorted(structure_features(space).families) if space.name in SPACE_FEATURES else []


class StructureLandscape:
    """A seeded synthetic reward over ``space`` that depends on its genotypes' global structure only.

    Called like :class:`~cellsearch.evaluators.landscapes.Landscape`: ``landscape(genotype, noise_seed)``.
    Each space says which features it has (``SPACE_FEATURES``): NASNet's are each cell's
    ``FEATURES``; NAS-RL's and the hierarchical space's are in :mod:`cellsearch.evaluators.space_features`.

    Args:
        space: the search space (NASNet's ops must be named so that :func:`op_shape` reads them).
        family: ``structure`` or ``structure_wiring`` (the space's ``StructureFeatures.families``).
        seed: which landscape of the family (its targets and weights).
        noise: standard deviations of z added per evaluation.
    """

    def __init__(self, space: Any, family: str = "structure", seed: int = 0, noise: float = 0.2) -> None:
        features = structure_features(space)
        if family not in features.families:
            raise ValueError(f"unknown structure family {family!r} for space={space.name}; choose one of "
                             f"{sorted(features.families)}")
        if not noise >= 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.space, self.family, self.seed, self.noise = space, family, int(seed), float(noise)
        self.spec = LandscapeSpec(family, self.seed, self.noise)  # what learning curves are drawn from
        self.compute = features.compute
        counted, (q_low, q_high) = features.families[family]
        self.counted = [f in counted for f in features.names]
        rng = random.Random(f"landscape:{family}:{seed}")
        sample_rng = random.Random(f"landscape-standardise:{family}:{seed}")
        samples = [space.sample(sample_rng) for _ in range(STANDARDISE_SAMPLES)]
        rows = [self.compute(g) for g in samples]
        self.targets: list[float] = []
        self.scales: list[float] = []
        self.weights: list[float] = []
        for f, values in enumerate(zip(*rows)):
            q = rng.uniform(q_low, q_high)
            self.targets.append(_quantile(list(values), q if rng.random() < 0.5 else 1.0 - q))
            mean = sum(values) / len(values)
            self.scales.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0)
            self.weights.append(rng.uniform(0.5, 1.5) if self.counted[f] else 0.0)
        raw = [self.raw_score(g) for g in samples]
        self.mean = sum(raw) / len(raw)
        self.std = math.sqrt(sum((r - self.mean) ** 2 for r in raw) / len(raw)) or 1.0

    def raw_score(self, genotype: Any) -> float:
        """Minus the weighted squared distance of the genotype's features to their targets."""
        score = 0.0
        for value, target, scale, weight in zip(self.compute(genotype), self.targets, self.scales, self.weights):
            score -= weight * ((value - target) / scale) ** 2
        return score

    def z(self, genotype: Any) -> float:
        """Standardised noise-free score: 0 for a typical random genotype."""
        return (self.raw_score(genotype) - self.mean) / self.std

    def reward(self, genotype: Any, noise_seed: object = None) -> float:
        """Reward in (0, 1); ``noise_seed`` picks the noise draw (None = noise-free)."""
        z = self.z(genotype)
        if noise_seed is not None and self.noise:
            draw = random.Random(f"{self.family}:{self.seed}:{self.noise}:{noise_seed}:{genotype.key()}")
            z += self.noise * draw.gauss(0.0, 1.0)
        return 1.0 / (1.0 + math.exp(-(z - 1.0)))

    __call__ = reward
