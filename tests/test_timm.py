"""Every cellnet_* (and nasrl_*, hierarchical_*) entry point passes the checks timm applies to its own
models, the published sizes hold, and trained networks round-trip through timm's loaders (safetensors and local-dir)."""
import json
import math
import random
import subprocess
import sys

import pytest
import timm
import timm.optim
import timm.utils
import torch
from timm.models import FeatureInfo, get_pretrained_cfg
from timm.models._manipulate import group_parameters

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch.space.genotype import load_genotype
from cellsearch.space.network import CellNetCifar, CellNetImageNet
from cellsearch.space.profile import count_mult_adds, count_params
from cellsearch.weights import convert_checkpoint, export_weights, main

ENTRY_POINTS = timm.list_models(["cellnet_*", "nasrl_*", "hierarchical_*"])
BATCH = 2


def _is_imagenet(name: str) -> bool:
    return get_pretrained_cfg(name).input_size[-1] > 32


def _tiny(name: str, **kwargs):
    """The entry point at a tiny width and depth, so each check takes milliseconds; the same weights
    on every call (seeded), so a model and its feature extractor can be compared."""
    tiny = dict(channels=8, cells_per_stage=1, **(dict(stem_channels=8) if _is_imagenet(name) else {}))
    torch.manual_seed(0)
    return timm.create_model(name, **tiny, **kwargs)


def _small_input(name: str) -> torch.Tensor:
    return torch.randn(BATCH, 3, *((64, 64) if _is_imagenet(name) else (16, 16)))


def test_entry_points_are_registered_without_clashing_with_timm():
    published = {"cellnet_nasnet_a_mobile", "cellnet_nasnet_a_large", "cellnet_pnasnet_5_mobile",
                 "cellnet_pnasnet_5_large", "cellnet_amoebanet_a_mobile", "cellnet_darts_v2_imagenet",
                 "cellnet_nasnet_a_cifar", "cellnet_darts_v2_cifar", "cellnet_amoebanet_a_cifar"}
    assert published | {"cellnet_cifar", "cellnet_imagenet"} == set(timm.list_models("cellnet_*"))
    assert {"nasnetalarge", "pnasnet5large"} <= set(timm.list_models())  # timm's own names are untouched
    assert timm.models.model_entrypoint("nasnetalarge").__module__ == "timm.models.nasnet"


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_pretrained_cfg_is_complete_and_pool_size_is_right(name):
    model = _tiny(name).eval()
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "num_classes"):
        assert cfg.get(key) is not None, key
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert state[cfg["classifier"] + ".weight"].shape == (cfg["num_classes"], model.head_hidden_size)
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    assert timm.data.resolve_model_data_config(model)["input_size"] == cfg["input_size"]
    with torch.no_grad():  # at the configured input size, as timm checks
        features = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert features.shape == (1, model.num_features, *cfg["pool_size"])


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_forward_backward_with_another_num_classes(name):
    model = _tiny(name, num_classes=7).train()
    logits = model(_small_input(name))
    assert logits.shape == (BATCH, 7)
    logits.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_head_api_and_reset_classifier(name):
    model = _tiny(name).eval()
    x = _small_input(name)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (BATCH, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == (BATCH, model.num_features)
        torch.testing.assert_close(model(x), pre_logits)
        model.reset_classifier(0, "")
        assert model(x).shape == features.shape
        model.reset_classifier(5, "catavgmax")
        assert model.head_hidden_size == 2 * model.num_features and model(x).shape == (BATCH, 5)


def test_reset_classifier_resets_the_auxiliary_head_too():
    model = _tiny("cellnet_nasnet_a_cifar", auxiliary=True).train()
    model.reset_classifier(4)
    logits, aux_logits = model.forward_with_aux(torch.randn(BATCH, 3, 16, 16))
    assert logits.shape == aux_logits.shape == (BATCH, 4)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_features_only_and_forward_intermediates_match_feature_info(name):
    model = _tiny(name).eval()
    info = FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    x = _small_input(name)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(intermediates) == len(info)
        for feature, channels, reduction in zip(intermediates, info.channels(), info.reduction()):
            assert feature.shape[:2] == (BATCH, channels)
            assert abs(feature.shape[-1] - math.ceil(x.shape[-1] / reduction)) <= 1
        torch.testing.assert_close(intermediates[-1], final)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two, intermediates[-2:])
        early, (only,) = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(only, intermediates[1])
        torch.testing.assert_close(early, intermediates[1])

        extractor = _tiny(name, features_only=True).eval()
        assert extractor.feature_info.channels() == info.channels()
        assert extractor.feature_info.reduction() == info.reduction()
        for feature, expected in zip(extractor(x), intermediates):
            torch.testing.assert_close(feature, expected)
        # feature_info's module names are hookable: timm's hook-based extractor gives the same maps
        hooked = _tiny(name, features_only=True, feature_cls="hook", out_indices=(1, -1)).eval()
        for feature, expected in zip(hooked(x), [intermediates[1], intermediates[-1]]):
            torch.testing.assert_close(feature, expected)


def test_features_only_prunes_cells_after_the_last_requested_map():
    extractor = _tiny("cellnet_cifar", features_only=True, out_indices=(0, 1))
    assert extractor.feature_info.channels() == [24, 48] and extractor.feature_info.reduction() == [1, 1]
    assert len(extractor.model.cells) == 1 and extractor.model.num_classes == 0
    assert [f.shape for f in extractor(torch.randn(1, 3, 16, 16))] == [(1, 24, 16, 16), (1, 48, 16, 16)]


@pytest.mark.parametrize("name", ["cellnet_cifar", "cellnet_darts_v2_imagenet", "cellnet_pnasnet_5_large",
                                  "nasrl_cifar", "hierarchical_cifar"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model = _tiny(name, drop_path_rate=0.3).train()  # recomputation must redraw the same drop-path masks
    x = _small_input(name)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)
        model(x).logsumexp(1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.grad_checkpointing
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)


@pytest.mark.parametrize("name", ["cellnet_cifar", "cellnet_nasnet_a_large"])
def test_group_matcher_covers_every_parameter_in_depth_order(name):
    model = _tiny(name, auxiliary=True)
    fine = group_parameters(model, model.group_matcher(coarse=False))
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    names = {n for n, _ in model.named_parameters()}
    for groups in (fine, coarse):
        assert {n for group in groups.values() for n in group} == names
        assert groups[0][0].startswith("stem.")
        assert all(n.startswith(("classifier.", "aux_head.")) for n in groups[max(groups)])
    assert len(fine) == len(model.cells) + 2  # stem, each cell, head
    assert len(coarse) < len(fine)
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.8)  # layer decay uses it
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert scales == pytest.approx([0.8 ** k for k in reversed(range(len(fine)))])  # one step per group, head 1.0


@pytest.mark.parametrize("name, published, tolerance", [
    ("cellnet_nasnet_a_large", "nasnetalarge", 0.0),  # timm's hand-written models: 88,753,150
    ("cellnet_pnasnet_5_large", "pnasnet5large", 0.0),  # and 86,057,668
    ("cellnet_nasnet_a_mobile", 5_289_978, 0.0),
    ("cellnet_darts_v2_imagenet", 4_718_752, 0.0),
    ("cellnet_darts_v2_cifar", 3_349_342, 0.0),
    ("cellnet_pnasnet_5_mobile", 5.1e6, 0.01),
    ("cellnet_nasnet_a_cifar", 3.3e6, 0.01),
    ("cellnet_amoebanet_a_cifar", 3.2e6, 0.02),
    ("cellnet_amoebanet_a_mobile", 5.1e6, 0.03),
])
def test_published_parameter_counts(name, published, tolerance):
    expected = count_params(timm.create_model(published, device="meta")) if isinstance(published, str) else published
    params = count_params(timm.create_model(name, device="meta"))
    assert abs(params - expected) <= tolerance * expected, f"{params:,} vs {expected:,}"


@pytest.mark.parametrize("name, timm_name, published, tolerance", [
    ("cellnet_pnasnet_5_large", "pnasnet5large", 25.0e9, 0.01),
    ("cellnet_nasnet_a_large", "nasnetalarge", 23.8e9, 0.005),
])
def test_large_models_mult_adds_match_timm_and_paper(name, timm_name, published, tolerance):
    ours = count_mult_adds(timm.create_model(name, device="meta"), (3, 331, 331))
    theirs = count_mult_adds(timm.create_model(timm_name, device="meta"), (3, 331, 331))
    assert abs(ours - theirs) <= 0.005 * theirs, f"{ours:,} vs timm {theirs:,}"
    assert abs(ours - published) <= tolerance * published, f"{ours:,} vs published {published:,.0f}"


def test_device_and_dtype_arguments():
    model = _tiny("cellnet_cifar", dtype=torch.float64)
    assert model(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64
    assert next(_tiny("cellnet_imagenet", device="meta").parameters()).is_meta


def test_genotype_argument_forms_build_the_same_network(tmp_path):
    genotype = load_genotype("darts_v2")
    path = tmp_path / "cell.yaml"
    path.write_text(genotype.to_yaml())
    built = [_tiny("cellnet_cifar", genotype=g) for g in ("darts_v2", str(path), genotype, genotype.to_dict())]
    assert all(m.genotype == genotype for m in built)
    with pytest.raises(ValueError, match="stem_type"):
        CellNetImageNet(stem_type="resnet")
    with pytest.raises(ValueError, match="unknown op"):
        _tiny("cellnet_cifar", genotype={"normal": {"blocks": [{"inputs": [0, 1], "ops": ["conv_9x9", "identity"]}]},
                                         "reduce": {"blocks": [{"inputs": [0, 1], "ops": ["identity", "identity"]}]}})


# --- weights: export and reload ------------------------------------------------------------------

def _train_a_few_steps(model: torch.nn.Module, steps: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(8, 3, 16, 16), torch.randint(0, model.num_classes, (8,))
        logits, aux = model.forward_with_aux(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if aux is not None:
            loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_trained_child_round_trips_through_timm(tmp_path):
    searched = cellsearch.SearchSpace().sample(random.Random(3))  # a "discovered" cell
    child = _train_a_few_steps(CellNetCifar(searched, cells_per_stage=1, channels=8, num_classes=5, auxiliary=True))
    out = export_weights(child, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "cellnet_cifar" and config["num_classes"] == 5
    assert config["model_args"]["genotype"] == searched.to_dict()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = child(x)
        from_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        torch.testing.assert_close(from_dir(x), expected, rtol=0, atol=0)
        from_file = timm.create_model(
            "cellnet_cifar", pretrained=True, genotype=searched, cells_per_stage=1, channels=8, auxiliary=True,
            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"), num_classes=5)).eval()
        torch.testing.assert_close(from_file(x), expected, rtol=0, atol=0)
    assert from_dir.genotype == searched and from_dir.pretrained_cfg["num_classes"] == 5
    # fine-tuning start as timm's train.py does it: a new head of another size, every other weight loaded
    finetune = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=3, in_chans=3, drop_rate=0.0,
                                 drop_path_rate=0.1, drop_block_rate=None, global_pool=None, checkpoint_path="")
    assert finetune.num_classes == 3
    torch.testing.assert_close(finetune.stem[0].weight, child.stem[0].weight)
    timm.utils.ModelEmaV3(finetune).update(finetune)  # timm's training helpers deep-copy the model


def test_published_entry_point_export_keeps_its_name_and_preprocessing(tmp_path):
    model = _train_a_few_steps(_tiny("cellnet_darts_v2_imagenet", num_classes=4))
    out = export_weights(model, tmp_path)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "cellnet_darts_v2_imagenet"
    assert config["pretrained_cfg"]["mean"] == list(timm.data.IMAGENET_DEFAULT_MEAN)
    assert "file" not in config["pretrained_cfg"] and "source" not in config["pretrained_cfg"]
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not rebuild"):
        export_weights(model, tmp_path / "wrong", model_name="cellnet_cifar")
    with pytest.raises(ValueError, match="registered cellsearch entry point"):
        export_weights(model, tmp_path / "wrong", model_name="resnet18")


def test_timm_own_export_writes_a_plain_genotype(tmp_path):
    model = _tiny("cellnet_cifar", genotype=load_genotype("amoebanet_a"))  # a Genotype object argument
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_args"]["genotype"] == load_genotype("amoebanet_a").to_dict()
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model.eval()(x))


@pytest.mark.filterwarnings("ignore::lightning_fabric.utilities.warnings.PossibleUserWarning",
                            "ignore:.*LeafSpec")
def test_lightning_checkpoint_of_a_child_converts_with_one_command(tmp_path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from cellsearch.evaluators.child import ChildModule

    torch.manual_seed(0)
    module = ChildModule("darts_v2", cells_per_stage=1, channels=8, num_classes=4, auxiliary_weight=0.4)
    data = DataLoader(TensorDataset(torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))), batch_size=8)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, data)
    ckpt = tmp_path / "child.ckpt"
    trainer.save_checkpoint(ckpt)

    main(["convert", str(ckpt), str(tmp_path / "out")])
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    assert reloaded.genotype == load_genotype("darts_v2") and reloaded.aux_head is not None
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), module.model.eval()(x), rtol=0, atol=0)


def test_conversion_finds_the_network_arguments_at_any_depth_and_either_skeleton(tmp_path):
    genotype = load_genotype("pnasnet_5")
    model = _train_a_few_steps(CellNetImageNet(genotype, cells_per_stage=1, channels=8, stem_channels=8,
                                               num_classes=3, reduction_in_stage=True))
    hparams = {"lr": 0.1, "net": {"cells_per_stage": 1, "channels": 8, "stem_channels": 8,
                                  "reduction_in_stage": True, "genotype": genotype.to_json()}}
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": hparams}, ckpt)
    reloaded = timm.create_model(f"local-dir:{convert_checkpoint(ckpt, tmp_path / 'out')}", pretrained=True).eval()
    assert isinstance(reloaded, CellNetImageNet) and reloaded.num_classes == 3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
    torch.save({"state_dict": {"model.stem.0.weight": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, ckpt)
    with pytest.raises(ValueError, match="no 'genotype'"):
        convert_checkpoint(ckpt, tmp_path / "out2")


class _NotPlainData:
    pass


def test_conversion_never_unpickles_arbitrary_objects(tmp_path):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"genotype": _NotPlainData()}}, ckpt)
    with pytest.raises(ValueError, match="not unpickled"):
        convert_checkpoint(ckpt, tmp_path / "out")


@pytest.mark.slow  # a timm script in a subprocess (5 s)
def test_run_command_lets_a_timm_script_create_cellnet_models(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys, timm\n"
                      "m = timm.create_model(sys.argv[1], channels=4, cells_per_stage=1)\n"
                      "print('built', type(m).__name__)\n")
    result = subprocess.run([sys.executable, "-m", "cellsearch.weights", "run", str(script), "cellnet_darts_v2_cifar"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "built CellNetCifar" in result.stdout
