"""Networks of the hierarchical space: shapes of both skeletons for the flat and the 3-level
representation, what a motif compiles to, refusals, and the timm checks specific to these entry points
(tests/test_timm.py runs timm's general model checks on them with every other entry point)."""
import json
import random

import pytest
import timm
import timm.optim
import timm.utils
import torch
from timm.models._manipulate import group_parameters
from test_timm import BATCH, _small_input, _tiny, _train_a_few_steps

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch import GenotypeError, load_genotype
from cellsearch.space.hierarchical import HierarchicalGenotype, HierarchicalSpace
from cellsearch.space.hierarchical_network import HierarchicalNetCifar, HierarchicalNetImageNet, MotifModule
from cellsearch.space.networks import TIMM_NAMES, build_network
from cellsearch.validation import ConfigError

ENTRY_POINTS = list(TIMM_NAMES["hierarchical"])
THREE_LEVEL = HierarchicalSpace()
FLAT = HierarchicalSpace(levels=2, motifs_per_level=(1,), nodes_per_motif=(11,))


def test_entry_points_are_registered():
    assert set(timm.list_models("hierarchical_*")) == set(ENTRY_POINTS)
    assert load_genotype("hierarchical_random") == _tiny("hierarchical_cifar").genotype  # the shipped default


@pytest.mark.parametrize("space", [THREE_LEVEL, FLAT], ids=["three_level", "flat"])
@pytest.mark.parametrize("imagenet", [False, True], ids=["cifar", "imagenet"])
def test_network_shapes_for_both_representations_and_skeletons(space, imagenet):
    genotype = space.sample(random.Random(2))
    kwargs = dict(cells_per_stage=2, channels=8, num_classes=5)
    model = build_network(genotype, imagenet=imagenet, **kwargs).eval()
    assert isinstance(model, HierarchicalNetImageNet if imagenet else HierarchicalNetCifar)
    size = 64 if imagenet else 16
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, size, size))
    widths = [8, 16, 32, 64] if imagenet else [8, 16, 32]
    final_size = size // 32 if imagenet else size // 4  # ImageNet: stem /4, then 3 reductions; CIFAR: 2
    assert features.shape == (2, widths[-1], final_size, final_size)
    assert len(model.cells()) == 2 * len(widths) and model(torch.randn(2, 3, size, size)).shape == (2, 5)
    assert [f["num_chs"] for f in model.feature_info] == [8] + widths


def test_a_motif_compiles_only_what_reaches_its_output():
    trivial = FLAT.trivial()
    rows = [list(r) for r in trivial.top]
    rows[4][5] = "none"  # cut the chain: the cell computes nothing
    cut = HierarchicalGenotype(((tuple(map(tuple, rows)),),))
    model = HierarchicalNetCifar(cut, cells_per_stage=1, channels=4)
    assert all(cell.empty for cell in model.cells())
    assert torch.count_nonzero(model.cells()[0](torch.randn(1, 4, 8, 8))) == 0
    rows[4][5], rows[9][10], rows[0][10] = "sep_conv_3x3", "none", "conv_1x1"  # nodes 1..9 now lead nowhere
    cell = MotifModule(HierarchicalGenotype(((tuple(map(tuple, rows)),),)).canonical(), 2, 0, 4)
    assert [len(node.edges) for node in cell.nodes] == [1]  # only the 1x1 conv into the output is built
    assert sum(p.numel() for p in cell.parameters()) == 4 * 4 + 2 * 4
    three = HierarchicalNetCifar(THREE_LEVEL.trivial(), cells_per_stage=1, channels=4)
    assert sum(p.numel() for p in three.cells()[0].parameters()) == 0  # identity chains all the way down


def test_what_cannot_be_honoured_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="auxiliary must be false .*no auxiliary head"):
        HierarchicalNetCifar(cells_per_stage=1, channels=4, auxiliary=True)
    with pytest.raises(GenotypeError, match="hierarchical networks build genotypes of space=hierarchical, got one "
                                            "of space=nasnet"):
        _tiny("hierarchical_cifar", genotype="nasnet_a")
    with pytest.raises(ConfigError, match="cells_per_stage must be an integer >= 1"):
        HierarchicalNetImageNet(cells_per_stage=0)


# --- timm's model checks beyond those tests/test_timm.py runs on every entry point ------------------------

@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_forward_backward_head_api_and_reset_classifier(name):
    model = _tiny(name, num_classes=7, drop_path_rate=0.2).train()
    x = _small_input(name)
    model(x).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre_logits)
        model.reset_classifier(0, "")
        assert model(x).shape == features.shape
        model.reset_classifier(5, "catavgmax")
        assert model.head_hidden_size == 2 * model.num_features and model(x).shape == (BATCH, 5)
    assert model.forward_with_aux(x)[1] is None


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_group_matcher_covers_every_parameter_in_depth_order(name):
    model = _tiny(name)
    fine = group_parameters(model, model.group_matcher(coarse=False))
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    names = {n for n, _ in model.named_parameters()}
    for groups in (fine, coarse):
        assert {n for group in groups.values() for n in group} == names
        assert groups[0][0].startswith("stem.") and all(n.startswith("classifier.") for n in groups[max(groups)])
    assert len(coarse) == len(model.stages) + 2 < len(fine)
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.8)
    assert max(group["lr_scale"] for group in optimizer.param_groups) == 1.0


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_features_only_prunes_the_stages_after_the_last_requested_map(name):
    extractor = _tiny(name, features_only=True, out_indices=(0, 1))
    assert len(extractor.model.stages) == 1 and extractor.model.num_classes == 0
    assert [f.shape[1] for f in extractor(_small_input(name))] == [8, 8]


def test_device_dtype_and_genotype_argument_forms(tmp_path):
    model = _tiny("hierarchical_cifar", dtype=torch.float64)
    assert model(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64
    assert next(_tiny("hierarchical_imagenet", device="meta").parameters()).is_meta
    genotype = FLAT.sample(random.Random(4))
    path = tmp_path / "flat.yaml"
    path.write_text(genotype.to_yaml())
    built = [_tiny("hierarchical_cifar", genotype=g) for g in (str(path), genotype, genotype.to_dict())]
    assert all(m.genotype == genotype for m in built)
    assert built[1].architecture_args()["genotype"] == genotype.to_dict() and built[0].genotype.name == "flat"


def test_trained_network_round_trips_through_timm_export(tmp_path):
    searched = THREE_LEVEL.sample(random.Random(3))
    model = _train_a_few_steps(_tiny("hierarchical_cifar", genotype=searched, num_classes=5))
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)  # timm's own export: plain data only
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "hierarchical_cifar" and config["model_args"]["genotype"] == searched.to_dict()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    assert reloaded.genotype == searched
    timm.utils.ModelEmaV3(reloaded).update(reloaded)  # timm's training helpers deep-copy the model


def test_description_and_figure_show_what_the_cell_computes(tmp_path):
    from cellsearch.space.hierarchical_diagram import describe, figure

    genotype = load_genotype("hierarchical_random")
    text = describe(genotype)
    assert text.startswith("hierarchical_random: a baseline") and "Level 3, the cell (5 nodes" in text
    assert "  node4 = m2(node0) ++ m0(node1) ++ m5(node2) ++ m0(node3)" in text
    assert "motifs the cell does not use: m4" in text and "Level 2, motif m4" not in text
    fig = figure(genotype, title="baseline")
    assert len(fig.axes) == 6 and fig._suptitle.get_text() == "baseline"  # the cell and 5 level-2 motifs it uses
    fig.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    empty = HierarchicalGenotype(((tuple(("none",) * 11 for _ in range(11)),),))
    assert "computes nothing" in describe(empty) and len(figure(empty).axes) == 1
