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

Hierarchical motifs (``space=hierarchical``), read from the canonical genotype (the edges that compute):

- ``depth``: the operations on the longest path from the cell's input to its output, with every motif
  expanded into its primitives (identity counts 0, any other primitive 1);
- ``edges``: the primitive operations of the expanded cell;
- ``motifs_used``: the distinct lower-level motifs (primitives, in a flat space) the cell's edges name;
- ``conv_share``: the fraction of the expanded cell's operations that are convolutions.

``structure`` counts all four; ``structure_wiring`` only ``depth`` and ``edges``.
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


HIERARCHICAL_FEATURES: tuple[str, ...] = ("depth", "edges", "motifs_used", "conv_share")
HIERARCHICAL_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "structure": (HIERARCHICAL_FEATURES, (0.03, 0.20)),
    "structure_wiring": (("depth", "edges"), (0.01, 0.05)),
}


def _motif_sizes(matrix: Any, below: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    """(depth, operations, convolutions) of one motif, given those of each entry it names (``below``)."""
    n = len(matrix)
    depth: list[int | None] = [0] + [None] * (n - 1)  # longest path to each node; None: not reached
    operations = convolutions = 0
    for i in range(n):
        for j in range(i + 1, n):
            if matrix[i][j] == "none":
                continue
            d, ops, convs = below[matrix[i][j]]
            operations, convolutions = operations + ops, convolutions + convs
            if depth[i] is not None:
                depth[j] = max(depth[j] or 0, depth[i] + d)
    return depth[-1] or 0, operations, convolutions


def hierarchical_structure(genotype: Any) -> tuple[float, ...]:
    """``HIERARCHICAL_FEATURES`` of a hierarchical genotype (its ``levels`` of adjacency matrices)."""
    from cellsearch.space.hierarchical import motif_name  # local import: the features module stays light

    canon = genotype.canonical()  # only the edges on an input-output path compute
    primitives = {name for motifs in canon.levels[:1] for m in motifs for row in m for name in row}
    sizes = {name: (int(name != "identity"), 1, int("conv" in name)) for name in primitives}
    for motifs in canon.levels:
        level = [_motif_sizes(m, sizes) for m in motifs]
        sizes = {motif_name(k): size for k, size in enumerate(level)}
    depth, operations, convolutions = level[0]
    used = {name for row in canon.top for name in row} - {"none"}
    return float(depth), float(operations), float(len(used)), convolutions / operations if operations else 0.0


def hierarchical_features(space: Any) -> StructureFeatures:
    """The structure features of ``space=hierarchical`` (any number of levels)."""
    return StructureFeatures(HIERARCHICAL_FEATURES, HIERARCHICAL_FAMILIES,
                             functools.partial(_checked, space, hierarchical_structure))


def nasrl_features(space: Any) -> StructureFeatures:
    """The structure features of ``space=nasrl`` (any of its sizes)."""
    return StructureFeatures(NASRL_FEATURES, NASRL_FAMILIES, functools.partial(_checked, space, nasrl_structure))


def _checked(space: Any, features: Callable[[Any], tuple[float, ...]], genotype: Any) -> tuple[float, ...]:
    space.validate(genotype)  # a genotype of another space or size: one GenotypeError line
    return features(genotype)
