"""The structural features the structure landscapes read of NAS-RL's and the hierarchical space's genotypes.

As NASNet's cells are summarised by their receptive field, depth, size, width and op mix
(:mod:`cellsearch.evaluators.structure_landscape`), each other space is summarised by what no single
decision sets but a network's accuracy depends on. :class:`~cellsearch.evaluators.structure_landscape.
StructureLandscape` puts a target on each feature (a rare quantile over random genotypes) and scores
the distance to the targets.

NAS-RL (``space=nasrl``, a chain of layers with anchor skip connections):

- ``depth``: the longest chain of layers from the image to a loose end (the classifier's input);
- ``receptive``: the receptive field on that input, in pixels: along each path the filter extents
  (``k - 1``, height and width averaged) times the product of the strides before them, the largest path;
- ``skips``: the anchor connections that skip at least one layer (``j -> i`` with ``j < i - 1``);
- ``width``: the mean number of filters per layer.

Family ``structure`` counts all four; ``structure_wiring`` only ``depth`` and ``skips``, which the anchors
decide and no filter choice touches.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from cellsearch.evaluators.structure_landscape import StructureFeatures

NASRL_FEATURES: tuple[str, ...] = ("depth", "receptive", "skips", "width")
# Family -> (counted features, quantile range of the targets), as STRUCTURE_FAMILIES for NASNet's cells.
NASRL_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "structure": (NASRL_FEATURES, (0.03, 0.20)),
    "structure_wiring": (("depth", "skips"), (0.01, 0.05)),
}


def nasrl_structure(genotype: Any) -> tuple[float, ...]:
    """``NASRL_FEATURES`` of a NAS-RL genotype (its ``layers``, each with sizes and ``inputs``)."""
    depth: list[int] = []
    reach: list[float] = []  # receptive-field growth up to each layer's output, in input pixels
    jump: list[float] = []  # input pixels between two neighbouring outputs of each layer
    skips = 0
    for i, layer in enumerate(genotype.layers):
        sources = [(depth[j], reach[j], jump[j]) for j in layer.inputs] or [(0, 0.0, 1.0)]  # none: the image
        extent = (layer.filter_height - 1 + layer.filter_width - 1) / 2
        stride = (layer.stride_height + layer.stride_width) / 2
        depth.append(1 + max(d for d, _, _ in sources))
        reach.append(max(r + extent * s for _, r, s in sources))
        jump.append(max(s for _, _, s in sources) * stride)
        skips += sum(j < i - 1 for j in layer.inputs)
    ends = genotype.loose_ends()
    width = sum(layer.filters for layer in genotype.layers) / len(genotype.layers)
    return (float(max(depth[i] for i in ends)), 1.0 + max(reach[i] for i in ends), float(skips), width)


def nasrl_features(space: Any) -> StructureFeatures:
    """The structure features of ``space=nasrl`` (any of its sizes)."""
    return StructureFeatures(NASRL_FEATURES, NASRL_FAMILIES, functools.partial(_checked, space, nasrl_structure))


def _checked(space: Any, features: Callable[[Any], tuple[float, ...]], genotype: Any) -> tuple[float, ...]:
    space.validate(genotype)  # a genotype of another space or size: one GenotypeError line
    return features(genotype)
