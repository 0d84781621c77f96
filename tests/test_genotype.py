"""Genotype data model: files, validation, search space and action encoding."""
import random

import pytest
import yaml

from cellsearch import NASNET_OPS, Block, Cell, Genotype, GenotypeError, SearchSpace, load_genotype, save_genotype
from cellsearch.space.genotype import shipped_cells
from cellsearch.space.ops import OPS

PUBLISHED = ["nasnet_a", "pnasnet_5", "amoebanet_a", "darts_v2"]


def test_published_cells_are_shipped_with_sources():
    assert set(PUBLISHED) <= set(shipped_cells())
    for name in PUBLISHED:
        genotype = load_genotype(name)
        assert genotype.name == name
        assert "arXiv" in genotype.source
        assert genotype.ops_used() <= set(OPS)


def test_nasnet_a_matches_reference_transcription():
    g = load_genotype("nasnet_a")
    assert g.normal.blocks[0] == Block(inputs=(1, 0), ops=("sep_conv_5x5", "sep_conv_3x3"))
    assert g.normal.concat == (0, 2, 3, 4, 5, 6)
    assert g.reduce.blocks[3] == Block(inputs=(3, 2), ops=("identity", "avg_pool_3x3"))
    assert g.reduce.concat == (3, 4, 5, 6)
    assert len(load_genotype("darts_v2").normal.blocks) == 4


@pytest.mark.parametrize("name", PUBLISHED)
def test_yaml_round_trip_is_lossless(name, tmp_path):
    g = load_genotype(name)
    path = save_genotype(g, tmp_path / f"{name}.yaml")
    back = load_genotype(path)
    assert back == g and back.name == g.name and back.source == g.source
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_dict(yaml.safe_load(g.to_yaml())) == g


def test_load_by_path_and_passthrough(tmp_path):
    g = load_genotype("nasnet_a")
    assert load_genotype(g) is g
    path = save_genotype(g, tmp_path / "mine.yaml")
    assert load_genotype(str(path)) == g


def test_unknown_name_lists_shipped_cells():
    with pytest.raises(GenotypeError, match="nasnet_a"):
        load_genotype("no_such_cell")


def _nasnet_dict():
    return load_genotype("nasnet_a").to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["normal"]["blocks"][2].update(ops=["sep_conv_3x3", "conv_9x9"]),
         r"normal cell, block 2 field 'ops': 'conv_9x9' is an unknown op; valid ops are \[.*'sep_conv_3x3'"),
        (lambda d: d["reduce"]["blocks"][1].update(inputs=[3, 0]),
         r"reduce cell, block 1 field 'inputs': input 3 does not exist yet"),
        (lambda d: d["normal"]["blocks"][0].update(inputs=[-1, 0]), r"normal cell, block 0 field 'inputs'"),
        (lambda d: d["normal"]["blocks"][0].update(inputs=[1]), r"normal cell, block 0 field 'inputs'"),
        (lambda d: d["normal"]["blocks"][0].update(combine="mul"), r"normal cell, block 0 field 'combine'"),
        (lambda d: d["normal"]["blocks"][0].update(extra=1), r"normal cell, block 0: unknown field"),
        (lambda d: d["normal"].update(concat=[]), r"normal cell field 'concat'"),
        (lambda d: d["reduce"].update(concat=[2, 9]), r"reduce cell field 'concat': state 9 does not exist"),
        (lambda d: d["normal"].update(blocks=[]), r"normal cell field 'blocks'"),
        (lambda d: d.pop("reduce"), r"missing the reduce cell"),
    ],
)
def test_malformed_genotypes_raise_genotype_error(mutate, message):
    data = _nasnet_dict()
    mutate(data)
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(data)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("normal: {blocks: [\n")
    with pytest.raises(GenotypeError, match="broken.yaml: not valid YAML"):
        load_genotype(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(GenotypeError, match="broken.yaml"):
        load_genotype(path)
    assert issubclass(GenotypeError, ValueError)


def test_yaml_loading_never_executes_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(GenotypeError):
        load_genotype(path)


def test_search_space_size_matches_the_paper():
    space = SearchSpace()
    assert space.ops == NASNET_OPS and len(space.ops) == 13
    assert space.num_decisions == 50
    assert 2.2e18 < space.cell_size() < 2.4e18
    assert 5.0e36 < space.size() < 5.5e36


def test_decisions_enumerate_legal_choices():
    space = SearchSpace(num_blocks=4)
    decisions = space.decisions()
    assert [d.kind for d in decisions[:5]] == ["input", "input", "op", "op", "combine"]
    assert [d.num_choices for d in decisions if d.kind == "input"][:8] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert decisions[0].name == "normal.b0.input_a" and decisions[-1].name == "reduce.b3.combine"
    assert {d.cell for d in decisions[20:]} == {"reduce"}


def test_encode_decode_round_trip_for_random_genotypes():
    space = SearchSpace()
    rng = random.Random(0)
    for _ in range(200):
        g = space.sample(rng)
        actions = space.encode(g)
        assert space.decode(actions) == g
        assert all(0 <= a < d.num_choices for a, d in zip(actions, space.decisions()))


def test_decoded_cells_output_their_loose_ends():
    g = SearchSpace(num_blocks=3).decode([1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 3, 0, 0, 1] * 2)
    assert g.normal.concat == (4,)  # block 0 feeds blocks 1 and 2, block 1 feeds block 2
    assert g.normal.blocks[2].combine == "concat"


def test_decode_rejects_out_of_range_actions():
    space = SearchSpace(num_blocks=2)
    actions = [0] * space.num_decisions
    actions[0] = 2  # block 0 has only the two cell inputs
    with pytest.raises(GenotypeError, match="normal.b0.input_a"):
        space.decode(actions)
    with pytest.raises(GenotypeError, match="expected 20 actions"):
        space.decode([0, 0])


def test_encode_rejects_genotypes_outside_the_space():
    with pytest.raises(GenotypeError, match="has 4 blocks, this search space uses 5"):
        SearchSpace().encode(load_genotype("darts_v2"))
    with pytest.raises(GenotypeError, match="'sep_conv_5x5' is not in this search space, whose ops are"):
        SearchSpace(ops=("identity", "max_pool_3x3"), num_blocks=5).encode(load_genotype("nasnet_a"))


def test_search_space_rejects_bad_settings():
    with pytest.raises(GenotypeError, match="unknown op"):
        SearchSpace(ops=("identity", "warp_drive"))
    with pytest.raises(GenotypeError, match="num_blocks"):
        SearchSpace(num_blocks=0)
    with pytest.raises(GenotypeError, match="combines"):
        SearchSpace(combines=("multiply",))


def test_canonical_key_ignores_pair_order():
    a = Genotype(Cell.from_blocks([Block((0, 1), ("identity", "max_pool_3x3"))]),
                 Cell.from_blocks([Block((1, 0), ("conv_1x1", "identity"), "concat")]))
    b = Genotype(Cell.from_blocks([Block((1, 0), ("max_pool_3x3", "identity"))]),
                 Cell.from_blocks([Block((0, 1), ("identity", "conv_1x1"), "concat")]))
    assert a != b
    assert a.key() == b.key()
    c = Genotype(a.normal, Cell.from_blocks([Block((0, 1), ("identity", "conv_1x1"), "add")]))
    assert c.key() != a.key()
