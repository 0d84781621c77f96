"""Speed settings: automatic choices per device, and compiling a child's training forward."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cellsearch.evaluators.speed import COMPILE_MIN_STEPS, compile_training_forward, compiler_available, use_channels_last, \
    use_compile


def test_explicit_settings_win_over_the_automatic_choice():
    assert use_channels_last(False, "cpu") is False
    assert use_channels_last(True, "cuda") is True
    assert use_compile(False, "cpu", 10 * COMPILE_MIN_STEPS) is False
    assert use_compile(True, "cuda", 1) is True


def test_automatic_choices_follow_the_measurements():
    assert use_channels_last(None, "cpu") is True
    assert use_channels_last(None, torch.device("cuda", 0)) is False  # not measured on GPUs yet
    assert use_compile(None, "cpu", COMPILE_MIN_STEPS - 1) is False  # too short to repay the compile
    assert use_compile(None, "cpu", COMPILE_MIN_STEPS) is compiler_available("cpu")
    assert use_compile(None, "cuda", 10 * COMPILE_MIN_STEPS) is False


# Dynamo's caches are per process, and a pytest process that has already built hundreds of networks
# makes dynamo's guard building very slow: the compile tests run in a fresh interpreter, as a search
# worker that trains child after child would.
MANY_ARCHITECTURES = """
import torch
from torch import nn
from torch._dynamo.utils import counters
from cellsearch.evaluators.speed import compile_training_forward

class Chain(nn.Module):
    # A stand-in network with CellNet's training entry point and a depth that changes its graph.
    def __init__(self, depth):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(depth))

    def forward_with_aux(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x, None

limit = torch._dynamo.config.recompile_limit = 2  # below the default (8): fewer graphs to compile, the same check
for depth in range(1, limit + 4):
    model = Chain(depth)
    compile_training_forward(model, backend="eager")
    model.forward_with_aux(torch.randn(2, 4))
print(counters["stats"]["unique_graphs"], limit + 3)
"""


def test_compiling_many_architectures_in_one_process_keeps_compiling():
    """Dynamo stops compiling a function after 8 graphs unless its caches are reset per child."""
    result = subprocess.run([sys.executable, "-c", MANY_ARCHITECTURES], capture_output=True, text=True,
                            check=True, timeout=300)
    graphs, expected = result.stdout.split()
    assert graphs == expected


def test_compile_rejects_a_model_without_forward_with_aux():
    with pytest.raises(TypeError, match="forward_with_aux"):
        compile_training_forward(nn.Linear(2, 2))


GUARDED_CHILD = """
import json, logging
import torch
from torch import nn
from cellsearch.data import DataConfig
from cellsearch.evaluators.child import evaluate_child
from cellsearch.evaluators.compile_guard import guarded_compile
from cellsearch.evaluators.speed import compile_training_forward
from cellsearch.space.genotype import Block, Cell, Genotype
from cellsearch.space.network import CellNetCifar

cell = Cell.from_blocks((Block(inputs=(0, 1), ops=("sep_conv_3x3", "identity"), combine="add"),))
genotype = Genotype(cell, cell)  # one block per cell: a small graph, so compiling takes seconds, not minutes
data = DataConfig(name="synthetic", synthetic_train_size=64, synthetic_test_size=16, image_size=8, val_size=16)
child = dict(cells_per_stage=1, channels=4, epochs=1, batch_size=16, logger=None, channels_last=False)
eager = evaluate_child(genotype, dict(child, compile=False), data, seed=0)
guarded = evaluate_child(genotype, dict(child, compile=True), data, seed=0)

# The oracle, independent of the guard: does the raw compiled step match eager here?
x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
grads = []
for compiled in (False, True):
    torch.manual_seed(0)
    model = CellNetCifar(genotype, cells_per_stage=1, channels=4)
    if compiled:
        compile_training_forward(model)
    nn.functional.cross_entropy(model.forward_with_aux(x)[0], y).backward()
    grads.append([p.grad for p in model.parameters()])
try:
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    raw_ok = True
except AssertionError:
    raw_ok = False

# A backend that corrupts the gradients on purpose: the guard must refuse it.
def corrupt(gm, example_inputs):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    def wrong_backward(bw, _):
        return make_boxed_func(lambda *args: [g * 1.5 if isinstance(g, torch.Tensor) else g for g in bw(*args)])
    return aot_autograd(fw_compiler=lambda fw, _: make_boxed_func(fw), bw_compiler=wrong_backward)(gm, example_inputs)

records = []
logging.getLogger("cellsearch.evaluators.compile_guard").addHandler(logging.Handler())
logging.getLogger("cellsearch.evaluators.compile_guard").handlers[-1].emit = records.append
model = CellNetCifar(genotype, cells_per_stage=1, channels=4)
loss = lambda x, y: nn.functional.cross_entropy(model.forward_with_aux(x)[0], y)
verdict = guarded_compile(model, x, y, loss, genotype.key(), backend=corrupt)
print(json.dumps({"eager": eager.metrics, "guarded": guarded.metrics, "errors": [eager.error, guarded.error],
                  "raw_ok": raw_ok, "corrupt_ok": verdict.ok, "corrupt_name": verdict.worst_name,
                  "corrupt_still_compiled": "forward_with_aux" in vars(model),
                  "warnings": [r.getMessage() for r in records]}))
"""


def run_guarded_child(**env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", GUARDED_CHILD], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_guarded_child(out: dict) -> None:
    eager, guarded = out["eager"], out["guarded"]
    assert out["errors"] == ["", ""]
    # The user's path: the guarded child trains like the eager one, compiled or not.
    assert guarded["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
    assert guarded["val_accuracy"] == pytest.approx(eager["val_accuracy"], abs=1 / 16 + 1e-9)
    assert eager["compiled"] == 0 and "compile_fallback" not in eager
    # The guard agrees with the raw comparison: compiled where compiling is right, eager where it is not.
    assert guarded["compile_fallback"] == (0.0 if out["raw_ok"] else 1.0)
    assert guarded["compiled"] == 1 - guarded["compile_fallback"]
    assert guarded["compile_probe_s"] > 0
    # A backend that corrupts gradients is caught, with one warning naming the parameter and the backend.
    assert out["corrupt_ok"] is False and out["corrupt_name"] != "loss" and not out["corrupt_still_compiled"]
    assert len(out["warnings"]) == 1 and "backend corrupt" in out["warnings"][0] and out["corrupt_name"] in out[
        "warnings"][0]


@pytest.mark.slow
@pytest.mark.skipif(not compiler_available("cpu"), reason="no C++ compiler for torch.compile's CPU backend")
def test_guarded_compiled_child_trains_like_the_eager_one():
    """Compiled where the probe matches eager, eager where it does not; a corrupting backend is refused."""
    check_guarded_child(run_guarded_child())


@pytest.mark.slow
@pytest.mark.skipif(not compiler_available("cpu"), reason="no C++ compiler for torch.compile's CPU backend")
def test_guard_under_avx2_kernels():
    """ATEN_CPU_CAPABILITY=avx2 (reproducible kernels) is where inductor's CPU code was found wrong."""
    out = run_guarded_child(ATEN_CPU_CAPABILITY="avx2")
    check_guarded_child(out)
    print("avx2: raw compiled step matches eager:", out["raw_ok"], "guarded child compiled:", out["guarded"]["compiled"])
