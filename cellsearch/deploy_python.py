"""Write a network as one self-contained Python module that needs only PyTorch.

A found cell should not depend on the toolkit that found it. The generated file holds the op
table and the cell module as cellsearch itself defines them (their source is copied from
``cellsearch.space.ops`` and ``cellsearch.space.cell`` at generation time, so the semantics cannot
drift), the genotype and the layout of the network as constants, and a small network class whose
state-dict keys are CellNet's, so the weights saved beside it load strictly::

    import my_cell                      # the generated my_cell.py, weights in my_cell.pth
    model = my_cell.load_model()        # eval mode; my_cell.INPUT_SIZE, MEAN, STD say how to feed it
"""
from __future__ import annotations

import ast
import inspect
import keyword
import pprint
import textwrap
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from cellsearch.space import cell as cell_module
from cellsearch.space import genotype as genotype_module
from cellsearch.space import ops as ops_module
from cellsearch.space.cell import CellModule
from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell
from cellsearch.space.network import CellNet
from cellsearch.space.skeleton import ConvStemCell
from cellsearch.space.ops import FactorizedReduce, ReLUConvBN

# timm pool types the generated head reproduces (SelectAdaptivePool2d with flatten).
_POOLS = {
    "avg": "F.adaptive_avg_pool2d(x, 1).flatten(1)",
    "max": "F.adaptive_max_pool2d(x, 1).flatten(1)",
    "avgmax": "0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)",
    "catavgmax": "torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1).flatten(1)",
}

# The network class of the generated module (written here, not copied: CellNet depends on timm).
_NETWORK = '''
class Network(nn.Module):
    """The stem, the cells of CELLS and the classifier; parameter names match cellsearch's CellNet."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(
            {stem}
        )
        self.cells = nn.ModuleList()
        for kind, args in CELLS:
            if kind == "conv_stem":
                self.cells.append(ConvStemCell(*args))
            else:
                self.cells.append(CellModule(GENOTYPE[kind], *args))
        self.final_act = nn.ReLU()
        self.head_drop = nn.Dropout(DROP_RATE)
        self.classifier = nn.Linear(NUM_FEATURES, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.final_act(s1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = {pool}
        return self.classifier(self.head_drop(x))


def build_model(num_classes: int = NUM_CLASSES) -> Network:
    """The network with freshly initialised weights."""
    return Network(num_classes)


def load_model(weights: "str | Path | None" = None) -> Network:
    """The network with its weights (default: the .pth file beside this module), in eval mode."""
    path = Path(weights) if weights is not None else Path(__file__).with_suffix(".pth")
    model = Network()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''


def _body_and_imports(module: ModuleType) -> tuple[list[str], str]:
    """A module's top-level imports (cellsearch's own left out) and its code after them."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    imports, first_code = [], None
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            root = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
            if root != "__future__" and root.split(".")[0] != "cellsearch":
                imports.append(ast.get_source_segment(source, node))
        elif first_code is None and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            first_code = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    lines = source.splitlines()[first_code - 1:] if first_code else []
    return imports, "\n".join(lines).strip() + "\n"


def _layer_source(layer: nn.Module) -> str:
    """Constructor call of a stem layer (the stems use only convs, batch norms and ReLUs)."""
    if isinstance(layer, nn.Conv2d):
        return (f"nn.Conv2d({layer.in_channels}, {layer.out_channels}, {layer.kernel_size}, stride={layer.stride}, "
                f"padding={layer.padding}, dilation={layer.dilation}, groups={layer.groups}, "
                f"bias={layer.bias is not None})")
    if isinstance(layer, nn.BatchNorm2d):
        return f"nn.BatchNorm2d({layer.num_features}, eps={layer.eps}, momentum={layer.momentum})"
    if isinstance(layer, nn.ReLU):
        return "nn.ReLU()"
    raise ValueError(f"the standalone module cannot write a stem layer of type {type(layer).__name__}")


def _cell_layout(model: CellNet) -> list[tuple[str, tuple]]:
    """Constructor arguments of every cell, read back from the built cells (CellNet's channel chain)."""
    stem_channels = model.feature_info[0]["num_chs"]
    c_prev_prev, c_prev, layout = stem_channels, stem_channels, []
    for cell in model.cells:
        if isinstance(cell, ConvStemCell):
            layout.append(("conv_stem", (c_prev, cell.out_channels)))
        elif isinstance(cell, CellModule):
            channels = cell.preprocess1[1].out_channels
            pre = cell.preprocess0
            reduction_prev = isinstance(pre, FactorizedReduce)
            # An identity preprocess on a width that differs from F means "read h_{i-2} as it is".
            preprocess_prev_prev = not (isinstance(pre, nn.Identity) and c_prev_prev != channels)
            always_preprocess = isinstance(pre, ReLUConvBN) and c_prev_prev == channels
            layout.append(("reduce" if cell.reduction else "normal",
                           (c_prev_prev, c_prev, channels, cell.reduction, reduction_prev,
                            preprocess_prev_prev, always_preprocess)))
        else:
            raise ValueError(f"the standalone module cannot write a cell of type {type(cell).__name__}")
        c_prev_prev, c_prev = c_prev, cell.out_channels
    return layout


def _cell_source(cell: Cell) -> str:
    blocks = "".join(f"\n        {block!r}," for block in cell.blocks)
    return f"Cell(\n    blocks=({blocks}\n    ),\n    concat={cell.concat!r},\n)"


def module_name(name: str) -> str:
    """``name`` made into an importable module name (letters, digits, underscores)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in name) or "cell"
    cleaned = cleaned if cleaned[0].isalpha() or cleaned[0] == "_" else f"cell_{cleaned}"
    return f"{cleaned}_" if keyword.iskeyword(cleaned) else cleaned


def write_standalone(model: CellNet, out_dir: "str | Path", name: str,
                     input_size: tuple[int, int, int], mean: tuple, std: tuple) -> list[Path]:
    """Write ``<name>.py`` (torch only) and its weights ``<name>.pth``; returns both paths."""
    if model.global_pool.pool_type not in _POOLS:
        raise ValueError(f"the standalone module supports global_pool {sorted(_POOLS)}, "
                         f"not {model.global_pool.pool_type!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    py_path, weights_path = out_dir / f"{module_name(name)}.py", out_dir / f"{module_name(name)}.pth"

    imports: list[str] = ["from pathlib import Path", "from dataclasses import dataclass"]
    parts = []
    for module in (ops_module, cell_module):
        module_imports, body = _body_and_imports(module)
        imports += module_imports
        parts.append(f"# --- from {module.__name__} ---\n\n{body}")
    genotype_imports, _ = _body_and_imports(genotype_module)
    imports += [line for line in genotype_imports if "typing" in line]
    genotype_classes = "\n\n".join(inspect.getsource(cls) for cls in (genotype_module.Block, Cell))
    stem = ",\n            ".join(_layer_source(layer) for layer in model.stem)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    constants = "\n".join([
        f"GENOTYPE = {{\n    \"normal\": {textwrap.indent(_cell_source(model.genotype.normal), '    ').lstrip()},\n"
        f"    \"reduce\": {textwrap.indent(_cell_source(model.genotype.reduce), '    ').lstrip()},\n}}",
        f"CELLS = {pprint.pformat(_cell_layout(model), width=110)}",
        f"NUM_CLASSES = {model.num_classes}",
        f"NUM_FEATURES = {model.num_features}",
        f"DROP_RATE = {model.head_drop.p}",
        f"INPUT_SIZE = {tuple(input_size)!r}  # (channels, height, width) the network was exported at",
        f"MEAN = {tuple(mean)!r}  # per-channel input normalisation: (x - MEAN) / STD on [0, 1] pixels",
        f"STD = {tuple(std)!r}",
        f"ARCHITECTURE = {cfg.get('architecture', type(model).__name__)!r}",
    ])
    header = (f'"""{model.genotype.name or name}: a {type(model).__name__} network generated by cellsearch; '
              f'needs only PyTorch.\n\n'
              f'    import {module_name(name)}\n'
              f'    model = {module_name(name)}.load_model()  # weights from {weights_path.name} beside this file\n'
              f'{"" if not model.genotype.source else chr(10) + "Genotype source: " + model.genotype.source + chr(10)}'
              f'"""\n')
    unique_imports = list(dict.fromkeys(imports))
    text = "\n".join([
        header + "from __future__ import annotations\n",
        "\n".join(sorted(unique_imports, key=lambda s: (not s.startswith("import"), s))) + "\n\n",
        parts[0],
        f"# --- genotype data (from {genotype_module.__name__}) ---\n\nNUM_CELL_INPUTS = {NUM_CELL_INPUTS}\n\n\n"
        f"{genotype_classes}",
        parts[1],
        f"# --- the network ---\n\n{constants}\n\n{inspect.getsource(ConvStemCell)}",
        _NETWORK.format(stem=stem, pool=_POOLS[model.global_pool.pool_type]),
    ])
    py_path.write_text(text.rstrip() + "\n")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("aux_head.")}
    torch.save(state, weights_path)
    return [py_path, weights_path]
