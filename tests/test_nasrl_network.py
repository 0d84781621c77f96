"""Networks built from NAS-RL genotypes: the paper's wiring rules, shapes, width arguments, refusals, exports."""
import json
import random

import pytest
import timm
import torch
from timm.models._manipulate import group_parameters

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch.space.genotype import GenotypeError, SearchSpace, load_genotype
from cellsearch.space.nasrl import Layer, NasRLGenotype, NasRLSpace
from cellsearch.space.nasrl_network import NasRLNetCifar, NasRLNetImageNet, feature_maps, join
from cellsearch.space.networks import build_network
from cellsearch.validation import ConfigError


def _genotype(*layers):
    return NasRLGenotype(tuple(Layer(*layer) for layer in layers))


# Layers 0 and 1 read the image; layer 1 halves the size; layer 2 reads 0 and 1 (sizes differ: padding);
# layer 3 reads layer 1 and halves again; layers 2 and 3 are the loose ends.
MIXED = _genotype((3, 3, 1, 1, 24, ()), (5, 3, 2, 2, 36, ()), (1, 7, 1, 1, 48, (0, 1)), (3, 1, 2, 2, 64, (1,)))


def test_wiring_follows_the_papers_rules():
    model = NasRLNetCifar(MIXED, stem_channels=16).eval()
    convs = [layer.conv for layer in model.layers]
    assert [c.in_channels for c in convs] == [16, 16, 24 + 36, 36]  # no input: the stem; several: concatenated
    assert [c.out_channels for c in convs] == [24, 36, 48, 64]
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [
        ((3, 3), (1, 1), (1, 1)), ((5, 3), (2, 2), (2, 1)), ((1, 7), (1, 1), (0, 3)), ((3, 1), (2, 2), (1, 0))]
    assert MIXED.loose_ends() == (2, 3) and model.num_features == 48 + 64  # loose ends joined for the classifier
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
    # timm wants non-decreasing reductions: layer 2 and the classifier's input (padded back to 16x16) are no
    # feature maps, though forward_features returns the latter
    assert feature_maps(MIXED) == [(-1, 1), (0, 1), (1, 2), (3, 4)]
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 16, 16), (24, 16, 16), (36, 8, 8), (64, 4, 4)]
    assert [info["reduction"] for info in model.feature_info] == [1, 1, 2, 4]
    assert final.shape == (2, 48 + 64, 16, 16)
    # layer 3's 4x4 map is zero-padded evenly to 16x16 in the classifier's input
    torch.testing.assert_close(final[:, 48:, 6:10, 6:10], maps[3])
    assert final[:, 48:, :6].abs().sum() == 0 and final[:, 48:, 10:].abs().sum() == 0
    layer2 = model.layers[2](join([maps[1], maps[2]]))
    torch.testing.assert_close(final[:, :48], layer2)
    # with strides of 1 every layer and the classifier's input are feature maps
    assert feature_maps(load_genotype("nasrl_baseline")) == [(i, 1) for i in range(-1, 16)]
    assert model(x).shape == (2, 10)


def test_join_pads_each_input_to_the_largest_height_and_width():
    a, b = torch.ones(1, 2, 5, 3), torch.ones(1, 1, 3, 6)
    joined = join([a, b])
    assert joined.shape == (1, 3, 5, 6)
    assert joined[0, :2, :, 1:4].eq(1).all() and joined[0, :2, :, [0, 4, 5]].eq(0).all()
    assert joined[0, 2, 1:4].eq(1).all() and joined[0, 2, [0, 4]].eq(0).all()
    assert join([a]) is a


def test_imagenet_stem_reduces_eight_times_and_every_space_builds_through_the_registry():
    genotype = NasRLSpace(num_layers=4, strides=(1, 2)).sample(random.Random(2))
    model = build_network(genotype, imagenet=True, channels=8, num_classes=5)
    assert isinstance(model, NasRLNetImageNet) and model.feature_info[0]["reduction"] == 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
        assert model.stem(torch.randn(1, 3, 224, 224)).shape[-2:] == (28, 28)
    assert isinstance(build_network(genotype), NasRLNetCifar)


def test_channels_scale_the_widest_layer_and_cells_per_stage_changes_nothing():
    scaled = NasRLNetCifar(MIXED, channels=16, cells_per_stage=3)
    assert [layer.conv.out_channels for layer in scaled.layers] == [6, 9, 12, 16]  # 24:36:48:64 scaled to 16
    assert scaled.stem[0].out_channels == 16  # the stem follows the widest layer unless given
    as_written = NasRLNetCifar(MIXED)
    assert [layer.conv.out_channels for layer in as_written.layers] == [24, 36, 48, 64]
    args = scaled.architecture_args()
    assert args["channels"] == 16 and "cells_per_stage" not in args
    rebuilt = NasRLNetCifar(**args)
    assert rebuilt.genotype == MIXED and sum(p.numel() for p in rebuilt.parameters()) == \
        sum(p.numel() for p in scaled.parameters())


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(auxiliary=True), ConfigError, "auxiliary: a NAS-RL network has no auxiliary head"),
    (dict(channels=0), ConfigError, "channels must be an integer >= 1"),
    (dict(cells_per_stage=0), ConfigError, "cells_per_stage must be"),
    (dict(genotype="nasnet_a"), GenotypeError, "space=nasrl: the network builds NAS-RL layer genotypes, got a "
                                               "genotype of space=nasnet"),
    (dict(genotype={"space": "nasrl", "layers": [{"filter_height": 3}]}), GenotypeError, "is missing filter_width"),
])
def test_what_cannot_be_built_is_refused_in_one_line(kwargs, error, message):
    with pytest.raises(error, match=message) as err:
        NasRLNetCifar(**kwargs)
    assert "\n" not in str(err.value)


def test_genotype_argument_forms_build_the_same_network(tmp_path):
    genotype = load_genotype("nasrl_baseline")
    assert genotype.space == "nasrl" and len(genotype.layers) == 15
    path = tmp_path / "net.yaml"
    path.write_text(MIXED.to_yaml())
    for form in (MIXED, str(path), MIXED.to_dict()):
        assert timm.create_model("nasrl_cifar", genotype=form, channels=8).genotype == MIXED
    assert timm.create_model("nasrl_cifar", channels=8).genotype == genotype
    with pytest.raises(GenotypeError, match="space=nasnet"):
        timm.create_model("nasrl_cifar", genotype=SearchSpace().sample(random.Random(0)))


def test_drop_path_drops_input_branches_scaled_by_depth_and_checkpointing_keeps_gradients():
    model = NasRLNetCifar(MIXED, channels=8, drop_path_rate=0.3).train()
    assert [layer.drop_prob for layer in model.layers] == pytest.approx([0.075, 0.15, 0.225, 0.3])
    x = torch.randn(4, 3, 8, 8)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)
        model(x).logsumexp(1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)
    model.set_drop_path_rate(0.0)
    assert all(layer.drop_prob == 0 for layer in model.layers)
    with pytest.raises(ValueError, match="drop path rate"):
        model.set_drop_path_rate(1.0)


def test_group_matcher_covers_every_parameter_in_depth_order():
    model = NasRLNetCifar(MIXED, channels=8)
    groups = group_parameters(model, model.group_matcher())
    assert {n for group in groups.values() for n in group} == {n for n, _ in model.named_parameters()}
    assert len(groups) == len(model.layers) + 2 and groups[0][0].startswith("stem.")
    assert all(n.startswith("classifier.") for n in groups[max(groups)])


def test_features_only_prunes_the_layers_after_the_last_requested_map():
    extractor = timm.create_model("nasrl_cifar", genotype=MIXED, channels=16, features_only=True, out_indices=(0, 2))
    assert extractor.feature_info.channels() == [16, 9] and len(extractor.model.layers) == 2
    assert [f.shape for f in extractor(torch.randn(1, 3, 8, 8))] == [(1, 16, 8, 8), (1, 9, 4, 4)]
    assert len(timm.create_model("nasrl_cifar", genotype=MIXED, channels=16, features_only=True).feature_info) == 4


def test_torchscript_and_timm_export_reload_give_the_same_outputs(tmp_path):
    genotype = NasRLSpace(num_layers=5, strides=(1, 2)).sample(random.Random(4))
    model = timm.create_model("nasrl_cifar", genotype=genotype, channels=8, num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["architecture"] == "nasrl_cifar" and config["model_args"]["genotype"] == genotype.to_dict()
        reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
        torch.testing.assert_close(reloaded(x), expected, rtol=0, atol=0)
    assert reloaded.genotype == genotype


def test_describe_and_figure_show_every_layer_and_edge(tmp_path):
    from cellsearch.space.nasrl_diagram import describe, figure

    text = describe(MIXED)
    assert text.splitlines() == [
        "NAS-RL network: 4 layers of conv + BN + ReLU",
        "  layer0 = conv 3x3, 24 filters (image)",
        "  layer1 = conv 5x3, stride 2x2, 36 filters (image)",
        "  layer2 = conv 1x7, 48 filters (concat(layer0, layer1), smaller inputs zero-padded)",
        "  layer3 = conv 3x1, stride 2x2, 64 filters (layer1)",
        "  classifier reads concat(layer2, layer3), smaller inputs zero-padded",
    ]
    assert describe(load_genotype("nasrl_baseline")).splitlines()[-1] == "  classifier reads layer14"
    fig = figure(MIXED, title="mixed")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts if type(t).__name__ == "Text"]
    assert labels == ["image", "layer 0\n3x3\n24", "layer 1\n5x3\n36\n/2x2", "layer 2\n1x7\n48",
                      "layer 3\n3x1\n64\n/2x2", "classifier\nconcat"]
    # edges: image -> 0, image -> 1, 0 -> 2, 1 -> 2, 1 -> 3, 2 -> classifier, 3 -> classifier
    assert len([t for t in ax.texts if type(t).__name__ == "Annotation"]) == 7
    assert ax.get_title() == "mixed"
    fig.savefig(tmp_path / "net.png")
