"""The structure landscape: features of a known cell, a reward that sees structure only, seeds, bad ops."""
from __future__ import annotations

import random
import statistics

import pytest

from cellsearch.evaluators.structure_landscape import OpShape, StructureLandscape, cell_features, op_shape
from cellsearch.space.genotype import Block, Cell, Genotype, SearchSpace

SPACE = SearchSpace(ops=("identity", "conv_3x3", "sep_conv_3x3", "max_pool_3x3", "conv_1x7_7x1"), num_blocks=2)


def test_op_shapes_from_names():
    assert op_shape("identity") == OpShape(0, 0.0, "skip")
    assert op_shape("conv_3x3") == OpShape(2, 9.0, "conv")
    assert op_shape("sep_conv_5x5").extent == 8  # two stacked 5x5 separable convs
    assert op_shape("dil_conv_3x3").extent == 4
    assert op_shape("conv_1x7_7x1") == OpShape(6, 14.0, "conv")
    assert op_shape("max_pool_7x7") == OpShape(6, 0.0, "pool")
    with pytest.raises(ValueError, match="no kernel size"):
        op_shape("squeeze_excite")


def test_features_of_a_known_cell():
    # Block 0: sep_conv_3x3 on h(i-2) + identity on h(i-1); block 1: conv_3x3 on block 0, max pool on
    # h(i-1), concatenated. Output: block 1 (the loose end).
    cell = Cell.from_blocks([Block((0, 1), ("sep_conv_3x3", "identity")),
                             Block((2, 1), ("conv_3x3", "max_pool_3x3"), "concat")])
    shapes = {op: op_shape(op) for op in SPACE.ops}
    receptive, depth, size, width, conv_share, pool_share = cell_features(cell, shapes)
    assert receptive == 4 + 2  # sep_conv_3x3 then conv_3x3
    assert depth == 2
    assert size == pytest.approx(op_shape("sep_conv_3x3").params + 9.0)
    assert width == 2  # a concat-combined block has 2F channels
    assert (conv_share, pool_share) == (0.5, 0.25)


def test_reward_sees_structure_only_and_is_seeded():
    landscape = StructureLandscape(SPACE, seed=3)
    genotype = SPACE.sample(random.Random(0))
    # Swapping a block's two (input, op) pairs changes no structural feature, so no reward.
    normal = genotype.normal
    first = normal.blocks[0]
    swapped = Block(first.inputs[::-1], first.ops[::-1], first.combine)
    other = Genotype(normal=Cell((swapped, *normal.blocks[1:]), normal.concat), reduce=genotype.reduce)
    assert landscape.z(other) == landscape.z(genotype)
    assert landscape(genotype, noise_seed=(0, 1)) == StructureLandscape(SPACE, seed=3)(genotype, noise_seed=(0, 1))
    assert landscape(genotype, noise_seed=(0, 1)) != landscape(genotype, noise_seed=(0, 2))
    assert StructureLandscape(SPACE, seed=4).z(genotype) != landscape.z(genotype)


def test_standardised_over_random_cells():
    landscape = StructureLandscape(SPACE, seed=0)
    rng = random.Random(1)
    rewards = [landscape(SPACE.sample(rng)) for _ in range(300)]
    assert all(0.0 < r < 1.0 for r in rewards)
    assert 0.2 < statistics.median(rewards) < 0.4  # sigmoid(z - 1) of a typical random cell: about 0.3


def test_wiring_family_ignores_size_and_op_mix():
    landscape = StructureLandscape(SPACE, "structure_wiring", seed=0)
    genotype = SPACE.sample(random.Random(2))
    # conv_3x3 -> max_pool_3x3 keeps every wiring feature (both add 2 pixels) but changes size and op mix.
    swap = {"conv_3x3": "max_pool_3x3", "max_pool_3x3": "conv_3x3"}
    cells = [Cell(tuple(Block(b.inputs, tuple(swap.get(op, op) for op in b.ops), b.combine) for b in c.blocks),
                  c.concat) for c in (genotype.normal, genotype.reduce)]
    other = Genotype(normal=cells[0], reduce=cells[1])
    full = StructureLandscape(SPACE, "structure", seed=0)
    assert full.z(other) != pytest.approx(full.z(genotype))  # the swap did change size and op mix
    assert landscape.z(other) == pytest.approx(landscape.z(genotype))
    with pytest.raises(ValueError, match="unknown structure family"):
        StructureLandscape(SPACE, "structure_ops")


def test_the_landscape_evaluator_serves_the_structure_families_with_curves():
    from cellsearch.evaluators.base import Fidelity
    from cellsearch.evaluators.landscape import LandscapeEvaluator

    genotype = SPACE.sample(random.Random(5))
    evaluator = LandscapeEvaluator(SPACE, "structure", seed=1, epochs=9)
    full = evaluator.evaluate(genotype, trial_id=4, seed=2)
    assert full.metrics["val_accuracy"] == pytest.approx(
        StructureLandscape(SPACE, "structure", seed=1).reward(genotype, noise_seed=(2, 4)))
    first = evaluator.evaluate(genotype, trial_id=4, seed=2, fidelity=Fidelity(3))
    assert [p.epoch for p in first.curve] == [1, 2, 3] and first.checkpoint is not None
    rest = evaluator.evaluate(genotype, trial_id=4, seed=2, fidelity=Fidelity(9, first.checkpoint))
    assert rest.metrics["val_accuracy"] == pytest.approx(full.metrics["val_accuracy"])
