"""Speed settings: automatic choices per device, and compiling a child's training forward."""
from __future__ import annotations

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

limit = torch._dynamo.config.recompile_limit
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


COMPILED_CHILD = """
import torch
from torch import nn
from cellsearch.space.genotype import Block, Cell, Genotype
from cellsearch.space.network import CellNetCifar
from cellsearch.evaluators.speed import compile_training_forward

cell = Cell.from_blocks((Block(inputs=(0, 1), ops=("sep_conv_3x3", "identity"), combine="add"),))
genotype = Genotype(cell, cell)  # one block per cell: a small graph, so compiling takes seconds, not minutes
torch.manual_seed(0)
eager = CellNetCifar(genotype, cells_per_stage=1, channels=4)
compiled = CellNetCifar(genotype, cells_per_stage=1, channels=4)
compiled.load_state_dict(eager.state_dict())
keys = list(compiled.state_dict())
compile_training_forward(compiled)
x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
losses = []
for model in (eager, compiled):
    loss = nn.functional.cross_entropy(model.forward_with_aux(x)[0], y)
    loss.backward()
    losses.append(loss.detach())
torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
for p_eager, p_compiled in zip(eager.parameters(), compiled.parameters()):
    torch.testing.assert_close(p_eager.grad, p_compiled.grad, rtol=1e-3, atol=1e-4)
assert list(compiled.state_dict()) == keys  # weights export unchanged
torch.testing.assert_close(compiled(x), eager(x))  # forward (evaluation) stays eager and equal
print("ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(not compiler_available("cpu"), reason="no C++ compiler for torch.compile's CPU backend")
def test_compiled_child_trains_like_the_eager_one():
    """Inductor-compiled forward and backward of a small child match eager; state_dict keys unchanged."""
    result = subprocess.run([sys.executable, "-c", COMPILED_CHILD], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.split()[-1] == "ok", result.stderr[-3000:]
