"""The hierarchical space (Liu et al. 2018): genotype files, validation, the flat encoding and mutation."""
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cellsearch import GenotypeError, load_genotype, save_genotype
from cellsearch.space.genotype import Genotype
from cellsearch.space.hierarchical import NONE, PRIMITIVES, HierarchicalGenotype, HierarchicalSpace, edge_pairs
from cellsearch.space.spaces import genotype_from_dict, genotype_from_json, space_from_settings

CONF = Path(__file__).resolve().parents[1] / "conf" / "space"
THREE_LEVEL = HierarchicalSpace()
FLAT = HierarchicalSpace(levels=2, motifs_per_level=(1,), nodes_per_motif=(11,))


def conf_space(name: str) -> HierarchicalSpace:
    return space_from_settings(yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def test_conf_spaces_are_the_papers_representations():
    three, flat = conf_space("hierarchical"), conf_space("hierarchical_flat")
    assert three == THREE_LEVEL and flat == FLAT
    assert len(three.primitives) == 6 and three.motifs_per_level == (6, 1) and three.nodes_per_motif == (4, 5)
    # one decision per possible edge: 6 motifs x 6 edges + 10 edges of the 5-node cell; 55 edges of 11 nodes
    assert three.layout.size == 6 * 6 + 10 and flat.layout.size == 55
    assert set(three.layout.num_choices_list) == {7}  # none + 6 primitives, none + 6 level-2 motifs
    assert space_from_settings(three.settings()) == three and space_from_settings(flat.settings()) == flat


@pytest.mark.parametrize("space", [THREE_LEVEL, FLAT], ids=["three_level", "flat"])
def test_files_json_and_encoding_round_trip(space, tmp_path):
    rng = random.Random(0)
    for k in range(5):
        genotype = space.sample(rng)
        path = save_genotype(genotype, tmp_path / f"g{k}.yaml")
        loaded = load_genotype(path)
        assert loaded == genotype and loaded.name == f"g{k}"
        assert genotype_from_json(genotype.to_json()) == genotype == genotype_from_dict(genotype.to_dict())
        assert space.decode(space.encode(genotype)) == genotype
    named = HierarchicalGenotype(space.trivial().levels, name="chain", source="Liu et al. 2018, sec. 3.2")
    back = load_genotype(save_genotype(named, tmp_path / "chain.yaml"))
    assert (back.name, back.source) == ("chain", "Liu et al. 2018, sec. 3.2")


def test_the_trivial_genotype_chains_identities():
    trivial = THREE_LEVEL.trivial()
    for level, motifs in enumerate(trivial.levels, start=2):
        for motif in range(len(motifs)):
            expected = "identity" if level == 2 else "m0"
            assert trivial.edges(level, motif) == [(i, i + 1, expected) for i in range(len(motifs[motif]) - 1)]
    with pytest.raises(GenotypeError, match="lacks"):
        HierarchicalSpace(primitives=("conv_1x1",)).trivial()


def test_key_ignores_what_cannot_reach_the_output():
    base = FLAT.trivial()
    rows = [list(r) for r in base.top]
    rows[0][10] = "conv_1x1"  # a second path: changes the function
    changed = HierarchicalGenotype(((tuple(map(tuple, rows)),),))
    assert changed.key() != base.key()
    rows = [list(r) for r in base.top]
    rows[1][2] = NONE  # the chain is cut: nodes 2..10 hold nothing ...
    rows[2][5] = "sep_conv_3x3"  # ... so an edge from node 2 computes nothing either
    cut_a = HierarchicalGenotype(((tuple(map(tuple, rows)),),))
    rows[2][5] = NONE
    cut_b = HierarchicalGenotype(((tuple(map(tuple, rows)),),))
    assert cut_a != cut_b and cut_a.key() == cut_b.key()
    # an unused level-2 motif does not count; a used one does
    trivial = THREE_LEVEL.trivial()
    actions = THREE_LEVEL.encode(trivial)
    unused = list(actions)
    unused[THREE_LEVEL.layout.motif_positions(2, 3)[0]] = 3  # m3 is not in the cell
    used = list(actions)
    used[THREE_LEVEL.layout.motif_positions(2, 0)[2]] = 3  # m0 is
    assert THREE_LEVEL.decode(unused).key() == trivial.key() != THREE_LEVEL.decode(used).key()


def _with(data: dict, level: int, motif: int, i: int, j: int, entry) -> dict:
    data["levels"][level - 2][motif][i][j] = entry
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: _with(d, 2, 0, 2, 1, "identity"), r"level 2, motif 0, entry \[2\]\[1\]: .*below the diagonal.*upper"),
    (lambda d: _with(d, 3, 0, 3, 3, "m0"), r"level 3, motif 0, entry \[3\]\[3\]: .*acyclic"),
    (lambda d: _with(d, 3, 0, 0, 2, "m6"), r"level 3, motif 0, entry \[0\]\[2\]: 'm6' is out of range.*m0..m5"),
    (lambda d: _with(d, 2, 4, 0, 2, "conv_9x9"), r"level 2, motif 4, entry \[0\]\[2\]: 'conv_9x9' is not a primitive"),
    (lambda d: _with(d, 2, 1, 0, 2, 3), r"entry \[0\]\[2\]: 3 is not a name"),
    (lambda d: {**d, "levels": [d["levels"][0]]}, r"level 2: the top level holds one motif \(the cell\), got 6"),
    (lambda d: {**d, "extra": 1}, r"unknown field\(s\) \['extra'\]"),
    (lambda d: {**d, "levels": []}, r"'levels' must be a non-empty list"),
    (lambda d: d["levels"][0][0].pop() and d, r"level 2, motif 0: row 0 must list 3 entries"),
])
def test_bad_genotypes_are_refused_in_one_line_naming_the_space(edit, message):
    data = edit(THREE_LEVEL.trivial().to_dict())
    with pytest.raises(GenotypeError, match=message) as info:
        genotype_from_dict(data)
    assert "\n" not in str(info.value) and str(info.value).startswith("hierarchical genotype")


@pytest.mark.parametrize("genotype, message", [
    (FLAT.trivial(), r"has 2 levels, this space 3 \(space.levels\)"),
    (HierarchicalSpace(motifs_per_level=(5, 1)).trivial(), r"level 2 of the genotype has 5 motifs, this space 6"),
    (HierarchicalSpace(nodes_per_motif=(4, 6)).trivial(), r"level 3, motif 0 has 6 nodes.*have 5 \(space.nodes_per"),
    (load_genotype("nasnet_a"), r"cannot take a genotype of space=nasnet"),
])
def test_a_genotype_outside_the_space_is_refused(genotype, message):
    with pytest.raises(GenotypeError, match=message) as info:
        THREE_LEVEL.encode(genotype)
    assert "\n" not in str(info.value) and "space=hierarchical" in str(info.value)
    with pytest.raises(GenotypeError, match="primitive.*'identity'.*not in this space"):
        HierarchicalSpace(primitives=("conv_1x1", "max_pool_3x3")).validate(THREE_LEVEL.trivial())


@pytest.mark.parametrize("settings, message", [
    ({"levels": 3, "depth": 2}, r"unknown setting\(s\) \['depth'\] of space=hierarchical"),
    ({"motifs_per_level": [6, 2]}, r"top level holds one motif"),
    ({"levels": 4}, r"space.motifs_per_level needs one entry per level 2..4 \(3\)"),
    ({"levels": 1}, r"space.levels must be an integer >= 2"),
    ({"nodes_per_motif": [1, 5]}, r"space.nodes_per_motif must be a non-empty list of integers >= 2"),
    ({"primitives": ["conv_1x1", "conv_5x5"]}, r"space.primitives must be distinct names from"),
])
def test_bad_space_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(GenotypeError, match=message) as info:
        space_from_settings({"name": "hierarchical", **settings})
    assert "\n" not in str(info.value) and "hierarchical" in str(info.value)


def test_decode_refuses_a_wrong_length_or_value():
    with pytest.raises(GenotypeError, match="expected 46 actions, got 3"):
        THREE_LEVEL.decode([0, 0, 0])
    with pytest.raises(GenotypeError, match=r"level2.m0.0->1 is 7; it must be in 0..6"):
        THREE_LEVEL.decode([7] + [0] * 45)
    assert THREE_LEVEL.layout.decisions[-1].name == "level3.m0.3->4"


@pytest.mark.parametrize("space", [THREE_LEVEL, FLAT], ids=["three_level", "flat"])
def test_mutation_changes_one_edge_at_every_level_and_stays_in_the_space(space):
    rng = random.Random(1)
    actions = space.encode(space.trivial())
    levels, kinds = Counter(), Counter()
    for _ in range(400):
        child = space.mutate(actions, rng)
        (index,) = [i for i, (a, b) in enumerate(zip(actions, child)) if a != b]
        decision = space.layout.decisions[index]
        assert 0 <= child[index] < decision.num_choices
        space.validate(space.decode(child))
        levels[decision.level] += 1
        kinds["add" if actions[index] == 0 else "remove" if child[index] == 0 else "alter"] += 1
        actions = child
    assert set(levels) == set(range(2, space.levels + 1))  # every level gets mutated
    assert set(kinds) == {"add", "alter", "remove"}  # the paper's three kinds of change
    assert space.mutate(actions, random.Random(5)) == space.mutate(actions, random.Random(5))  # seeded


def test_edges_and_pairs_follow_the_matrix_layout():
    assert edge_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    positions = THREE_LEVEL.layout.motif_positions(3, 0)
    assert list(positions) == list(range(36, 46))
    assert all(THREE_LEVEL.layout.decisions[p].level == 3 for p in positions)
    assert PRIMITIVES == THREE_LEVEL.primitives and isinstance(load_genotype("nasnet_a"), Genotype)
