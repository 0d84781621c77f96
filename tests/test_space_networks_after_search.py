"""What follows a search builds and ships any space's network: a child (and its Lightning checkpoint), the
zero-cost scores, the weights timm loads, every deployment format, retraining's recipe and ``cellsearch-describe``;
what only knows NASNet cells (the ``python`` format, a NASNet entry point) refuses another space in one line.

Each test runs for every space at a tiny size; a space whose network has not landed is skipped, naming the
module."""
import pytest
import timm
import torch

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch.data import DataConfig, describe_dataset
from cellsearch.deploy import TOLERANCE, export_network, load_network
from cellsearch.describe import main as describe_main
from cellsearch.evaluators.child import ChildConfig, ChildModule, evaluate_child
from cellsearch.evaluators.zero_cost import ZeroCostScorer
from cellsearch.retrain import retrain_child
from cellsearch.space.genotype import GenotypeError, save_genotype
from cellsearch.space.networks import NETWORK_CLASSES, TIMM_NAMES, build_network, has_auxiliary_head, network_class
from cellsearch.space.spaces import SPACE_CLASSES, space_from_settings
from cellsearch.validation import ConfigError
from cellsearch.weights import export_weights, model_from_checkpoint

# Each space small enough that its network trains and exports in about a second.
SMALL_SPACES = {
    "nasnet": {"name": "nasnet", "num_blocks": 2, "ops": ["identity", "conv_3x3", "max_pool_3x3", "conv_1x1"]},
    "nasrl": {"name": "nasrl", "num_layers": 4},
    "hierarchical": {"name": "hierarchical", "levels": 2, "motifs_per_level": [1], "nodes_per_motif": [4]},
}
SIZE = dict(cells_per_stage=1, channels=4)
TINY_DATA = DataConfig(name="synthetic", synthetic_train_size=64, synthetic_test_size=16, image_size=8, val_size=32)
TINY_CHILD = dict(**SIZE, epochs=1, batch_size=32, logger=None)
OTHER_SPACES = [name for name in SPACE_CLASSES if name != "nasnet"]


def _genotype(name: str, seed: int = 0):
    """A genotype drawn from the small space ``name`` (skipped while its genotype or network has not landed)."""
    pytest.importorskip(SPACE_CLASSES[name].split(":")[0], reason=f"space={name}'s genotype module has not landed")
    pytest.importorskip(NETWORK_CLASSES[name][0].split(":")[0], reason=f"space={name}'s network has not landed")
    import random

    return space_from_settings(SMALL_SPACES[name]).sample(random.Random(seed))


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_a_child_of_any_space_trains_and_its_checkpoint_rebuilds_it(name, tmp_path):
    genotype = _genotype(name)
    result = evaluate_child(genotype, ChildConfig(**TINY_CHILD), TINY_DATA, seed=0)
    assert result.ok, result.error
    assert result.metrics["params"] > 0 and 0.0 <= result.metrics["val_accuracy"] <= 1.0

    module = ChildModule(genotype.to_dict(), **SIZE, num_classes=3)
    assert module.hparams["genotype"] == genotype.to_dict()  # plain data: a checkpoint holds no objects
    assert type(module.model) is network_class(name)
    # What a Lightning checkpoint of a child holds: its hyperparameters and the weights under "model.".
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "c.ckpt")
    rebuilt = model_from_checkpoint(tmp_path / "c.ckpt").eval()
    x = torch.randn(2, 3, 8, 8)
    assert rebuilt.genotype == genotype and torch.equal(rebuilt(x), module.model.eval()(x))


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_zero_cost_scores_any_space(name):
    genotype = _genotype(name, seed=1)
    scorer = ZeroCostScorer("synflow", ChildConfig(**TINY_CHILD), TINY_DATA, seed=0, batch_size=8)
    scored = scorer(genotype)
    assert scored.value is not None and scored.value > 0, scored.error


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_weights_of_any_space_load_through_timm(name, tmp_path):
    genotype = _genotype(name, seed=2)
    model = build_network(genotype, **SIZE, num_classes=5).eval()
    out = export_weights(model, tmp_path / "weights")
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert type(loaded) is type(model) and loaded.genotype == genotype
    assert loaded.pretrained_cfg["architecture"] == TIMM_NAMES[name][0]
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_every_deployment_format_but_python_exports_any_space(name, tmp_path):
    genotype = _genotype(name, seed=3)
    path = save_genotype(genotype, tmp_path / "found.yaml")
    model = load_network(path, model_args=dict(**SIZE, num_classes=3))  # export.model: the space's CIFAR entry
    assert type(model) is network_class(name)
    # NASNet's TorchScript export is covered by test_deploy.py (scripting its cells takes seconds).
    formats = ["torch_export", "safetensors"] + (["torchscript"] if name != "nasnet" else [])
    for result in export_network(model, formats, tmp_path / "out", "found", input_size=(3, 8, 8)):
        assert result.max_abs_diff <= TOLERANCE, result


@pytest.mark.parametrize("name", OTHER_SPACES)
def test_nasnet_only_exports_refuse_another_space_in_one_line(name, tmp_path):
    genotype = _genotype(name, seed=4)
    path = save_genotype(genotype, tmp_path / "found.yaml")
    model = load_network(path, model_args=SIZE)
    for build in (lambda: export_network(model, ["torchscript", "python"], tmp_path / "out", "found"),
                  lambda: load_network(path, model_name="cellnet_cifar")):
        with pytest.raises(ConfigError) as caught:
            build()
        assert "\n" not in str(caught.value) and f"space={name}" in str(caught.value)
    assert not (tmp_path / "out").exists()  # refused before any format was written


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_retraining_keeps_the_auxiliary_head_where_the_network_has_one(name):
    genotype = _genotype(name, seed=5)
    child = retrain_child(genotype, ChildConfig(**SIZE, auxiliary_weight=0.4))
    assert child.auxiliary_weight == (0.4 if has_auxiliary_head(genotype) else 0.0)
    assert has_auxiliary_head(genotype) == (name == "nasnet")  # only NASNet's skeleton has the head
    ChildModule.from_config(genotype, child, describe_dataset(TINY_DATA))  # builds without a refusal


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_describe_any_space(name, tmp_path, capsys):
    genotype = _genotype(name, seed=6)
    pytest.importorskip(f"cellsearch.space.{name}_diagram", reason=f"space={name}'s diagram module has not landed")
    path = save_genotype(genotype, tmp_path / "found.yaml")
    assert describe_main([str(path), "-N", "1", "-F", "4"]) == 0
    out = capsys.readouterr().out
    assert "Network: cifar skeleton, N=1, F=4" in out and "parameters:" in out
    if name != "nasnet":
        assert describe_main([str(path), "--reduction-in-stage"]) == 2
        assert "--reduction-in-stage is not an option of space=" in capsys.readouterr().err


@pytest.mark.parametrize("name", OTHER_SPACES)
def test_a_nasnet_network_refuses_another_spaces_genotype_in_one_line(name, tmp_path):
    path = save_genotype(_genotype(name, seed=5), tmp_path / "found.yaml")
    for imagenet in (False, True):
        with pytest.raises(GenotypeError, match=rf"^space=nasnet: .* space={name}; build it with its own space's "
                                                rf"network \({name}_cifar or {name}_imagenet\)$"):
            network_class("nasnet", imagenet)(path)
