"""NAS-RL's space (Zoph & Le 2017): genotypes as plain data, their refusals, and the flat action codec."""
import random

import pytest
import yaml

from cellsearch.space.genotype import GenotypeError, SearchSpace, load_genotype, save_genotype
from cellsearch.space.nasrl import Layer, NasRLGenotype, NasRLSpace, parse_nasrl_genotype
from cellsearch.space.spaces import genotype_from_dict, genotype_from_json, space_from_settings


def _layer(fh=3, fw=3, filters=24, inputs=(), sh=1, sw=1):
    return {"filter_height": fh, "filter_width": fw, "stride_height": sh, "stride_width": sw, "filters": filters,
            "inputs": list(inputs)}


def _genotype_data(*layers):
    return {"space": "nasrl", "layers": list(layers)}


def test_the_paper_settings_compose_as_space_nasrl(compose):
    space = space_from_settings(compose("space=nasrl", "run_dir=unused").space)
    assert space == NasRLSpace()
    assert (space.num_layers, space.filter_heights, space.filter_widths, space.filters, space.strides) == (
        15, (1, 3, 5, 7), (1, 3, 5, 7), (24, 36, 48, 64), (1,))
    # 15 layers x (height, width, filters) + one anchor per earlier layer: 45 + 105 decisions
    assert space.layout.size == 150 and space.layout.num_choices_list.count(2) == 105
    assert space_from_settings(space.settings()) == space


def test_genotype_round_trips_through_dict_json_yaml_and_files(tmp_path):
    space = NasRLSpace(num_layers=6, strides=(1, 2))
    genotype = space.sample(random.Random(1))
    assert genotype_from_dict(genotype.to_dict()) == genotype
    assert genotype_from_json(genotype.to_json()) == genotype
    assert parse_nasrl_genotype(yaml.safe_load(genotype.to_yaml())) == genotype
    path = save_genotype(genotype, tmp_path / "net.yaml")
    loaded = load_genotype(path)
    assert loaded == genotype and loaded.name == "net" and loaded.space == "nasrl"
    assert genotype.to_dict()["space"] == "nasrl"


def test_key_ignores_metadata_and_input_order():
    a = parse_nasrl_genotype(_genotype_data(_layer(), _layer(), _layer(inputs=(0, 1))) | {"name": "a"})
    b = parse_nasrl_genotype(_genotype_data(_layer(), _layer(), _layer(inputs=(1, 0))) | {"source": "b"})
    assert a != b and a.key() == b.key() and a.canonical() == b.canonical()
    c = parse_nasrl_genotype(_genotype_data(_layer(), _layer(), _layer(inputs=(1,))))
    assert c.key() != a.key()
    assert a.loose_ends() == (2,) and c.loose_ends() == (0, 2)


def test_strides_may_be_left_out_of_a_file():
    genotype = parse_nasrl_genotype({"space": "nasrl", "layers": [{"filter_height": 1, "filter_width": 7,
                                                                   "filters": 36}]})
    assert genotype.layers == (Layer(1, 7, 1, 1, 36, ()),)


@pytest.mark.parametrize("data, message", [
    ([1, 2], "a genotype is a mapping"),
    ({"layers": [_layer()]}, "genotype of space=nasnet, not of space=nasrl"),
    ({"space": "hierarchical", "layers": [_layer()]}, "space=hierarchical, not of space=nasrl"),
    (_genotype_data() | {"depth": 3}, "unknown genotype field"),
    (_genotype_data(), "non-empty list of layers"),
    (_genotype_data(_layer(), [3, 3]), "layer 1 must be a mapping"),
    (_genotype_data(_layer() | {"kernel": 3}), "unknown field"),
    (_genotype_data({"filter_height": 3, "filters": 24}), "layer 0 is missing filter_width"),
    (_genotype_data(_layer(fh=0)), "layer 0 field 'filter_height' must be a positive integer"),
    (_genotype_data(_layer(filters=2.5)), "field 'filters' must be a positive integer"),
    (_genotype_data(_layer(inputs=(0,))), "0 is not an earlier layer; earlier layers are none"),
    (_genotype_data(_layer(), _layer(inputs=(1,))), "layer 1 field 'inputs': 1 is not an earlier layer"),
    (_genotype_data(_layer(), _layer(), _layer(inputs=(0, 0))), "repeats a layer"),
    (_genotype_data(_layer() | {"inputs": 0}), "must be a list of earlier layers"),
])
def test_bad_genotype_data_is_one_line_naming_the_space(data, message):
    with pytest.raises(GenotypeError, match=message) as err:
        parse_nasrl_genotype(data)
    assert str(err.value).startswith("space=nasrl: ") and "\n" not in str(err.value)


def test_a_file_of_another_space_and_a_bad_file_name_the_file_and_the_space(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("space: nasrl\nlayers:\n  - {filter_height: 3, filter_width: 3, filters: 24, inputs: [4]}\n")
    with pytest.raises(GenotypeError, match=r"bad.yaml: space=nasrl: layer 0 field 'inputs'"):
        load_genotype(path)


def test_validate_refuses_what_lies_outside_the_space():
    space = NasRLSpace(num_layers=2)
    good = space.sample(random.Random(0))
    space.validate(good)
    cases = [
        (NasRLSpace(num_layers=3).sample(random.Random(0)), "has 3 layers, this space has 2"),
        (parse_nasrl_genotype(_genotype_data(_layer(fh=9), _layer())), "layer 0 filter_height 9 is not a choice"),
        (parse_nasrl_genotype(_genotype_data(_layer(), _layer(filters=100))), "layer 1 filters 100 is not a choice"),
        (parse_nasrl_genotype(_genotype_data(_layer(sw=2), _layer())),
         r"stride_width 2 is not a choice .*strides: \[1\]"),
        (SearchSpace().sample(random.Random(0)), "got a genotype of space=nasnet"),
        (NasRLGenotype((Layer(1, 1, 1, 1, 24), Layer(1, 1, 1, 1, 24, (1,)))), "layer 1 input 1 is not an earlier layer"),
    ]
    for genotype, message in cases:
        with pytest.raises(GenotypeError, match=message) as err:
            space.validate(genotype)
        assert str(err.value).startswith("space=nasrl: ")
        with pytest.raises(GenotypeError, match=message):
            space.encode(genotype)


@pytest.mark.parametrize("fields, message", [
    ({"num_layers": 0}, "num_layers must be an integer of at least 1"),
    ({"num_layers": True}, "num_layers must be an integer"),
    ({"filters": []}, "filters must be a non-empty list"),
    ({"filter_heights": [3, 0]}, "filter_heights must hold positive integers"),
    ({"strides": [1, 1]}, "strides repeats a value"),
    ({"filter_widths": [2, 3]}, "filter sizes must be odd"),
    ({"layers": 3}, r"unknown setting\(s\) \['layers'\]; space=nasrl takes num_layers"),
])
def test_bad_space_settings_are_one_line(fields, message):
    with pytest.raises(GenotypeError, match=message) as err:
        space_from_settings({"name": "nasrl", **fields})
    assert str(err.value).startswith("space=nasrl: ")


def test_layout_per_layer_sizes_then_one_anchor_per_earlier_layer():
    space = NasRLSpace(num_layers=3, strides=(1, 2))
    names = [d.name for d in space.layout.decisions]
    sizes = ["filter_height", "filter_width", "stride_height", "stride_width", "filters"]
    assert names == ([f"layer0.{s}" for s in sizes] + [f"layer1.{s}" for s in sizes] + ["layer1.anchor0"]
                     + [f"layer2.{s}" for s in sizes] + ["layer2.anchor0", "layer2.anchor1"])
    anchors = [d for d in space.layout.decisions if d.kind == "anchor"]
    # a layer's anchor point is the step after its size decisions: 5 for layer 0, 10 for layer 1
    assert [(d.layer, d.source, d.anchor_point, d.num_choices) for d in anchors] == [
        (1, 0, 5, 2), (2, 0, 5, 2), (2, 1, 10, 2)]
    assert space.layout.positions("anchor") == [10, 16, 17]
    # fixed strides are no decisions at all
    assert [d.kind for d in NasRLSpace(num_layers=1).layout.decisions] == ["filter_height", "filter_width", "filters"]


def test_encode_decode_are_inverse_and_sample_covers_the_choices():
    space = NasRLSpace(num_layers=5, strides=(1, 2, 3))
    rng = random.Random(0)
    genotypes = [space.sample(rng) for _ in range(200)]
    for genotype in genotypes[:20]:
        actions = space.encode(genotype)
        assert space.decode(actions) == genotype and space.encode(space.decode(actions)) == actions
    assert {l.stride_height for g in genotypes for l in g.layers} == {1, 2, 3}
    assert {l.filters for g in genotypes for l in g.layers} == {24, 36, 48, 64}
    assert any(not g.layers[4].inputs for g in genotypes) and any(len(g.layers[4].inputs) == 4 for g in genotypes)
    decoded = space.decode([0] * space.layout.size)
    assert all(layer == Layer(1, 1, 1, 1, 24, ()) for layer in decoded.layers)


def test_decode_refuses_wrong_lengths_and_values():
    space = NasRLSpace(num_layers=2)
    with pytest.raises(GenotypeError, match="space=nasrl: expected 7 actions, got 3"):
        space.decode([0, 0, 0])
    with pytest.raises(GenotypeError, match=r"action for layer1.anchor0 is 2; it must be in 0..1"):
        space.decode([0] * 6 + [2])


def test_genotype_is_plain_frozen_data():
    genotype = NasRLSpace(num_layers=2).sample(random.Random(0))
    assert isinstance(genotype, NasRLGenotype) and {genotype: 1}[genotype.canonical()] == 1
    with pytest.raises(AttributeError):
        genotype.layers = ()
