"""Deployment: every cellnet_* entry point compiles with TorchScript, torch.fx and torch.export (what
timm's own model tests check), and every format of ``task=export`` matches the eager network
(NASNet-A and a discovered cell that concatenates)."""
import ast
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import cellsearch  # noqa: F401  (registers the entry points)
from cellsearch.validation import ConfigError
from cellsearch.deploy import FORMATS, ONNX_OPSET, TOLERANCE, check_formats, export_network, load_export, \
    load_network, require_onnx, run_export
from cellsearch.space.genotype import GenotypeError
from cellsearch.weights import export_weights

ENTRY_POINTS = timm.list_models("cellnet_*")
# A cell as a search finds it: concat-combined blocks (2F channels read by later ops), an op that
# adapts 2F to F, and a reduction cell whose output names one of its inputs.
CONCAT_CELL = """\
name: found_concat
normal:
  blocks:
    - {inputs: [0, 1], ops: [sep_conv_3x3, max_pool_3x3], combine: concat}
    - {inputs: [2, 1], ops: [conv_1x3_3x1, identity], combine: add}
    - {inputs: [3, 2], ops: [avg_pool_3x3, dil_conv_3x3], combine: concat}
  concat: [1, 3, 4]
reduce:
  blocks:
    - {inputs: [0, 1], ops: [max_pool_5x5, conv_7x1_1x7], combine: concat}
    - {inputs: [2, 0], ops: [identity, sep_conv_5x5], combine: add}
  concat: [0, 3]
"""


def _fast(params, fast):
    """``params`` with every one not in ``fast`` marked slow: the default suite checks the property on a
    representative few, CI on all (scripting and export take 10-40 s per network on 2 busy cores)."""
    return [p if p in fast else pytest.param(*(p if isinstance(p, tuple) else (p,)), marks=pytest.mark.slow)
            for p in params]


def _is_imagenet(name: str) -> bool:
    return get_pretrained_cfg(name).input_size[-1] > 32


def _tiny(name: str, **kwargs):
    tiny = dict(channels=8, cells_per_stage=1, **(dict(stem_channels=8) if _is_imagenet(name) else {}))
    torch.manual_seed(0)
    return timm.create_model(name, **tiny, **kwargs).eval()


def _input(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *((64, 64) if _is_imagenet(name) else (16, 16)))


@pytest.fixture
def concat_cell(tmp_path):
    path = tmp_path / "found_concat.yaml"
    path.write_text(CONCAT_CELL)
    return path


# --- TorchScript and torch.export of every entry point ---------------------------------------------

@pytest.mark.parametrize("name", _fast(ENTRY_POINTS, {"cellnet_cifar", "cellnet_darts_v2_imagenet"}))
def test_entry_point_scripts_with_torchscript_like_timm_models(name):
    with timm.set_scriptable(True):
        model = _tiny(name, auxiliary=True)
    scripted = torch.jit.script(model)
    x = _input(name)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x), rtol=0, atol=1e-5)


def test_scripted_network_keeps_training_behaviour_drop_path_included():
    model = _tiny("cellnet_cifar", drop_path_rate=0.5).train()
    scripted = torch.jit.script(model)
    x = _input("cellnet_cifar", batch=8)
    torch.manual_seed(1)
    eager = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(scripted(x), eager, rtol=1e-5, atol=1e-5)  # the same samples dropped


@pytest.mark.parametrize("name", _fast(ENTRY_POINTS, {"cellnet_nasnet_a_cifar"}))
def test_fx_graph_matches_eager_scripts_and_trains_every_parameter(name):
    """timm's FX path (its feature extraction by graph node): the traced graph gives eager's logits,
    scripts with TorchScript, and in training mode back-propagates to every parameter."""
    with timm.set_scriptable(True):
        model = _tiny(name, num_classes=7)
    x = _input(name)
    eval_nodes = get_graph_node_names(model)[1]
    graph = create_feature_extractor(model, [eval_nodes[-1]])
    scripted = torch.jit.script(graph)
    with torch.inference_mode():
        expected = model(x)
        torch.testing.assert_close(graph(x)[eval_nodes[-1]], expected, rtol=0, atol=0)
        torch.testing.assert_close(scripted(x)[eval_nodes[-1]], expected, rtol=0, atol=1e-5)

    train_nodes = get_graph_node_names(model.train())[0]
    logits = create_feature_extractor(model, [train_nodes[-1]]).train()(x)[train_nodes[-1]]
    assert logits.shape == (2, 7)
    logits.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.slow  # the parity tests of every format below run torch.export in the default suite
@pytest.mark.parametrize("name", ["cellnet_nasnet_a_mobile", "cellnet_darts_v2_imagenet", "cellnet_pnasnet_5_mobile"])
def test_torch_export_with_a_dynamic_batch_matches_eager(name):
    model = _tiny(name)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (_input(name, 2),), dynamic_shapes=({0: batch},))
    for size in (1, 5):
        x = _input(name, size)
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-5)


# --- every format, parity with eager -----------------------------------------------------------------

FORMAT_CASES = [(fmt, cell) for cell in ("nasnet_a", "concat") for fmt in FORMATS]


@pytest.mark.parametrize("fmt,cell", _fast(FORMAT_CASES, set(FORMAT_CASES) - {("torch_export", "nasnet_a"),
                                                                              ("torchscript", "nasnet_a")}))
def test_every_format_matches_eager(fmt, cell, concat_cell, tmp_path):
    genotype = "nasnet_a" if cell == "nasnet_a" else concat_cell
    torch.manual_seed(0)
    model = load_network(genotype, model_name="cellnet_cifar", model_args=dict(cells_per_stage=1, channels=4))
    [result] = export_network(model, fmt, tmp_path / "out", "net", input_size=(3, 16, 16))
    assert result.max_abs_diff <= TOLERANCE
    loadable = result.paths[0]
    assert loadable.name == {"torchscript": "net.torchscript.pt", "torch_export": "net.pt2", "onnx": "net.onnx",
                             "python": "net.py", "safetensors": "net.safetensors"}[fmt]  # the name says the format
    exported = load_export(loadable, fmt)
    x = torch.randn(7, 3, 16, 16)  # another batch size than at export time: the batch axis is dynamic
    with torch.inference_mode():
        torch.testing.assert_close(exported(x).float(), model(x), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", _fast(["cellnet_nasnet_a_mobile", "cellnet_darts_v2_imagenet",
                                       "cellnet_pnasnet_5_mobile"], {"cellnet_darts_v2_imagenet"}))
def test_python_module_rebuilds_every_stem_and_needs_only_torch(name, tmp_path):
    model = _tiny(name, auxiliary=True, num_classes=5)
    [result] = export_network(model, "python", tmp_path, name, input_size=(3, 64, 64))
    assert result.max_abs_diff <= TOLERANCE
    source = result.paths[0].read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"torch", "__future__", "typing", "pathlib", "dataclasses"}
    # A fresh interpreter that cannot import cellsearch or timm loads it by plain `import`.
    probe = (f"import sys; sys.modules['cellsearch'] = sys.modules['timm'] = None; sys.path.insert(0, {str(tmp_path)!r}); "
             f"import torch, {result.paths[0].stem} as m; net = m.load_model(); "
             f"print(tuple(net(torch.zeros(2, *m.INPUT_SIZE)).shape))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 5)"


def test_onnx_states_its_opset_and_a_dynamic_batch(tmp_path):
    onnx, _ = require_onnx()
    model = _tiny("cellnet_cifar")
    [result] = export_network(model, "onnx", tmp_path, "net", input_size=(3, 16, 16))
    graph = onnx.load(str(result.paths[0]))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [ONNX_OPSET]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_trained_weights_are_exported_not_fresh_ones(concat_cell, tmp_path):
    trained = _tiny("cellnet_cifar", genotype=str(concat_cell))
    with torch.no_grad():  # weights no fresh network has
        for p in trained.parameters():
            p.add_(0.1)
    export_weights(trained, tmp_path / "weights")
    model = load_network(concat_cell, weights=tmp_path / "weights" / "model.safetensors")
    x = _input("cellnet_cifar")
    with torch.inference_mode():
        torch.testing.assert_close(model(x), trained(x), rtol=0, atol=0)
    with pytest.raises(GenotypeError, match="belong to cell"):
        load_network("nasnet_a", weights=tmp_path / "weights")


# --- task=export ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_export_task_writes_each_format_for_a_search_run_and_a_retrain_run(concat_cell, tmp_path, compose):
    search_run = tmp_path / "search"
    search_run.mkdir()
    (search_run / "best_cell.yaml").write_text(concat_cell.read_text())
    cfg = compose("task=export", "export.format=[python,onnx]", f"export.run={search_run}",
                  f"export.out={tmp_path / 'a'}", "export.model_args={cells_per_stage: 1, channels: 4}",
                  "export.input_size=[3,16,16]")
    results = run_export(cfg)
    assert [r.format for r in results] == ["python", "onnx"]
    assert [p.name for r in results for p in r.paths] == ["found_concat.py", "found_concat.pth", "found_concat.onnx"]
    assert all(r.max_abs_diff <= TOLERANCE for r in results)

    retrain_run = tmp_path / "retrain"
    trained = _tiny("cellnet_cifar", genotype=str(concat_cell), num_classes=3)
    export_weights(trained, retrain_run / "weights")
    cfg = compose("task=export", "export.format=torchscript", f"export.run={retrain_run}",
                  f"export.out={tmp_path / 'b'}", "export.name=mine")
    [result] = run_export(cfg)
    scripted = torch.jit.load(str(result.paths[0]))
    x = torch.randn(2, 3, 32, 32)
    assert result.paths[0].name == "mine.torchscript.pt"
    torch.testing.assert_close(scripted(x), trained(x), rtol=0, atol=1e-5)


def test_export_without_a_format_still_writes_cells(tmp_path, compose):
    cfg = compose("task=export", "export.name=x", f"export.run={tmp_path}", f"export.dir={tmp_path}")
    assert cfg.export.format is None  # the default: the top-k cells of a search, as YAML


def test_bad_input_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown export format tflite; valid formats: torchscript, torch_export, "
                                          "onnx, python, safetensors"):
        check_formats("tflite")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONCAT_CELL.replace("inputs: [3, 2]", "inputs: [7, 2]"))
    with pytest.raises(GenotypeError, match="bad.yaml") as err:
        load_network(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="nothing to export"):
        load_network()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [deploy] extra were not installed
    with pytest.raises(ConfigError, match=r"cellsearch\[deploy\]"):
        export_network(_tiny("cellnet_cifar"), "onnx", tmp_path, "net")
    assert check_formats("onnx") == ["onnx"]  # still a known format: only its export needs the extra
