"""Reward landscapes over every search space: each family scores any space's genotypes, seeded and
standardised; structure families see the space's structure; NASNet's landscapes keep their numbers."""
from __future__ import annotations

import random
import statistics
from dataclasses import replace

import pytest

from cellsearch.evaluators.base import Fidelity
from cellsearch.evaluators.landscape import LandscapeEvaluator, build_landscape, landscape_families
from cellsearch.evaluators.space_features import hierarchical_structure, nasrl_structure
from cellsearch.space.hierarchical import HierarchicalGenotype
from cellsearch.space.genotype import SearchSpace
from cellsearch.space.nasrl import Layer, NasRLGenotype
from cellsearch.space.spaces import space_from_settings
from cellsearch.validation import ConfigError

SMALL_SPACES = {  # each space at a size whose landscapes build in a fraction of a second
    "nasnet": {"name": "nasnet", "ops": ["identity", "conv_3x3", "max_pool_3x3", "sep_conv_3x3"], "num_blocks": 2},
    "nasrl": {"name": "nasrl", "num_layers": 5, "filter_heights": [1, 3, 5], "filters": [8, 16]},
    "hierarchical": {"name": "hierarchical", "levels": 3, "motifs_per_level": [3, 1], "nodes_per_motif": [3, 4],
                     "primitives": ["conv_1x1", "sep_conv_3x3", "max_pool_3x3", "identity"]},
}
FAMILIES = ("additive", "epistatic", "rugged", "deceptive", "structure", "structure_wiring")


@pytest.mark.parametrize("space_name", SMALL_SPACES)
def test_every_family_scores_random_genotypes_like_an_accuracy(space_name):
    space = space_from_settings(SMALL_SPACES[space_name])
    assert landscape_families(space) == list(FAMILIES)
    rng = random.Random(0)
    genotypes = [space.sample(rng) for _ in range(120)]
    for family in FAMILIES:
        landscape = build_landscape(space, family, seed=2)
        rewards = [landscape(g) for g in genotypes]
        assert all(0.0 < r < 1.0 for r in rewards), family
        assert 0.15 < statistics.median(rewards) < 0.45, family  # sigmoid(z - 1) of a typical genotype: about 0.3
        assert max(rewards) - min(rewards) > 0.3, family  # genotypes differ
        g = genotypes[0]
        assert build_landscape(space, family, seed=2)(g, noise_seed=(0, 1)) == landscape(g, noise_seed=(0, 1))
        assert landscape(g, noise_seed=(0, 1)) != landscape(g, noise_seed=(0, 2))
        assert [build_landscape(space, family, seed=3)(x) for x in genotypes[:5]] != rewards[:5]


def test_nasnet_landscapes_keep_their_numbers():
    # Recorded before the other spaces' landscapes were added: NASNet's must not move.
    space = space_from_settings(SMALL_SPACES["nasnet"])
    genotype = space.sample(random.Random(7))
    expected = {"additive": 0.25530627738338074, "epistatic": 0.16706898813368834, "rugged": 0.14487429001012275,
                "deceptive": 0.3598275719194118, "structure": 0.08585721070585743,
                "structure_wiring": 0.0762782022121205}
    got = {family: build_landscape(space, family, seed=1)(genotype, noise_seed=(0, 3)) for family in FAMILIES}
    assert got == expected


def test_scores_see_the_canonical_genotype():
    space = space_from_settings(SMALL_SPACES["nasrl"])
    genotype = space.sample(random.Random(4))
    last = genotype.layers[-1]
    reordered = replace(genotype, layers=genotype.layers[:-1] + (replace(last, inputs=(3, 0, 1)),))
    canonical = replace(genotype, layers=genotype.layers[:-1] + (replace(last, inputs=(0, 1, 3)),))
    hierarchical = space_from_settings(SMALL_SPACES["hierarchical"])
    cell = hierarchical.trivial()
    actions = hierarchical.encode(cell)
    actions[hierarchical.layout.motif_positions(2, 1)[0]] = 1  # a conv in m1, which the cell does not use
    dead_end = hierarchical.decode(actions)
    assert dead_end != cell and dead_end.key() == cell.key()
    for family in FAMILIES:
        landscape = build_landscape(space, family, seed=0)
        assert landscape(reordered) == landscape(canonical), family
        landscape = build_landscape(hierarchical, family, seed=0)
        assert landscape(dead_end) == landscape(cell), family


def test_nasrl_features_of_a_known_network():
    # 0: 3x3 on the image; 1: 5x1 on 0; 2: 1x1 on the image; 3: 3x3 on 0 and 2 (0 -> 3 skips two layers).
    layers = (Layer(3, 3, 1, 1, 8), Layer(5, 1, 1, 1, 16, (0,)), Layer(1, 1, 1, 1, 8), Layer(3, 3, 1, 1, 16, (0, 2)))
    depth, receptive, skips, width = nasrl_structure(NasRLGenotype(layers))
    assert depth == 2  # loose ends 1 and 3, each two layers from the image
    assert receptive == 1 + 2 + 2  # 3x3 then 3x3 (layer 1 adds (4 + 0) / 2 = 2 as well)
    assert skips == 1
    assert width == 12


def test_hierarchical_features_of_a_known_cell():
    none = ("none",) * 3
    m0 = (("none", "sep_conv_3x3", "identity"), ("none", "none", "conv_1x1"), none)  # 0 -> 1 -> 2 and 0 -> 2
    m1 = (("none", "none", "max_pool_3x3"), none, none)  # 0 -> 2
    dead = (("none", "conv_1x1", "none"), none, none)  # no path to the output: computes nothing
    cell = (("none", "m0", "none", "none"), ("none", "none", "m1", "m2"), ("none", "none", "none", "m0"),
            ("none",) * 4)  # 0 -m0-> 1 -m1-> 2 -m0-> 3, and 1 -m2-> 3 (m2 is dead: no edge)
    depth, edges, motifs_used, conv_share = hierarchical_structure(HierarchicalGenotype(((m0, m1, dead), (cell,))))
    assert depth == 2 + 1 + 2  # sep_conv then conv_1x1 in m0, the pool in m1, m0 again
    assert edges == 3 + 1 + 3
    assert motifs_used == 2  # m0 and m1; m2's edge computes nothing
    assert conv_share == 4 / 7


def test_evaluator_over_another_space_with_curves_and_refusals():
    settings = SMALL_SPACES["nasrl"]
    space = space_from_settings(settings)
    genotype = space.sample(random.Random(1))
    evaluator = LandscapeEvaluator(settings, family="structure", epochs=4)
    whole = evaluator.evaluate(genotype, trial_id=3, seed=1)
    assert whole.ok and len(whole.curve) == 4
    assert whole.metrics["val_accuracy"] == build_landscape(space, "structure")(genotype, noise_seed=(1, 3))
    early = evaluator.evaluate(genotype, trial_id=3, seed=1, fidelity=Fidelity(epochs=2))
    assert early.metrics["val_accuracy"] == whole.curve[1].val_accuracy
    other = SearchSpace(num_blocks=2).sample(random.Random(0))
    failed = evaluator.evaluate(other, trial_id=4)
    assert not failed.ok and "space=nasrl" in failed.error
    with pytest.raises(ConfigError, match="unknown landscape family 'smooth' for space=nasrl; choose one of"):
        LandscapeEvaluator(settings, family="smooth").check()
