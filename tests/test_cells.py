"""Ops, cells and networks built from genotypes: shapes, gradients, channel tracking."""
import random

import pytest
import torch

from cellsearch import NASNET_OPS, Block, Cell, Genotype, SearchSpace
from cellsearch.space.cell import CellModule
from cellsearch.space.network import CellNetCifar, CellNetImageNet
from cellsearch.space.ops import OPS, build_op



@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("c_in", [4, 8])
def test_every_op_maps_channels_and_size(name, stride, c_in):
    op = build_op(name, c_in, 4, stride)
    x = torch.randn(2, c_in, 9, 9, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 4, 5 if stride == 2 else 9, 5 if stride == 2 else 9)
    if name != "none":
        y.sum().backward()
        assert x.grad is not None


def test_unknown_op_error_lists_registered_ops():
    with pytest.raises(ValueError, match="registered ops are"):
        build_op("conv_11x11", 4, 4, 1)


def test_nasnet_op_list_is_the_papers():
    assert len(NASNET_OPS) == 13 and set(NASNET_OPS) <= set(OPS)


def _one_op_genotype(op: str, combine: str) -> Genotype:
    """Every op on both cell inputs and on a block output, with the given combine."""
    blocks = [Block((0, 1), (op, op), combine), Block((2, 1), (op, "identity"), combine)]
    return Genotype(Cell.from_blocks(blocks), Cell.from_blocks(blocks))


@pytest.mark.parametrize("op", NASNET_OPS)
@pytest.mark.parametrize("combine", ["add", "concat"])
def test_network_with_each_op_and_combine_trains(op, combine):
    model = CellNetCifar(_one_op_genotype(op, combine), cells_per_stage=1, channels=4, num_classes=3)
    x = torch.randn(2, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_concat_blocks_double_the_channels():
    blocks = [Block((0, 1), ("conv_1x1", "identity"), "concat"), Block((2, 2), ("sep_conv_3x3", "identity"), "add")]
    cell = CellModule(Cell(tuple(blocks), concat=(2, 3)), 12, 12, 8, reduction=False, reduction_prev=False)
    assert cell.out_channels == 2 * 8 + 8
    out = cell(torch.randn(1, 12, 6, 6), torch.randn(1, 12, 6, 6))
    assert out.shape == (1, 24, 6, 6)


def test_reduction_cell_halves_size_and_reduces_output_inputs():
    blocks = [Block((0, 1), ("max_pool_3x3", "sep_conv_3x3"))]
    cell = CellModule(Cell(tuple(blocks), concat=(1, 2)), 6, 6, 4, reduction=True, reduction_prev=False)
    out = cell(torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8))
    assert out.shape == (2, 8, 4, 4)


def test_factorized_reduction_of_prev_prev_handles_odd_sizes():
    g = Cell.from_blocks([Block((0, 1), ("identity", "identity"))])
    cell = CellModule(g, 5, 7, 4, reduction=False, reduction_prev=True)
    assert cell(torch.randn(1, 5, 11, 11), torch.randn(1, 7, 6, 6)).shape == (1, 4, 6, 6)


def test_a_hundred_random_genotypes_build_and_train():
    space = SearchSpace()
    rng = random.Random(1234)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(100):
        genotype = space.sample(rng)
        model = CellNetCifar(genotype, cells_per_stage=1, channels=2, num_classes=4)
        logits = model(x)
        assert logits.shape == (2, 4)
        logits.sum().backward()


def test_random_genotypes_on_the_imagenet_skeleton():
    space = SearchSpace()
    rng = random.Random(7)
    for _ in range(20):
        model = CellNetImageNet(space.sample(rng), cells_per_stage=1, channels=8, num_classes=5)
        logits = model(torch.randn(2, 3, 33, 33))
        assert logits.shape == (2, 5)
        logits.sum().backward()


def test_auxiliary_head_and_drop_path():
    model = CellNetCifar("nasnet_a", cells_per_stage=1, channels=4, auxiliary=True, drop_path_rate=0.3)
    model.train()
    logits, aux = model.forward_with_aux(torch.randn(4, 3, 16, 16))
    assert logits.shape == aux.shape == (4, 10)
    assert model.cells[-1].drop_prob == pytest.approx(0.3)
    assert model.cells[0].drop_prob == pytest.approx(0.3 / len(model.cells))
    model.eval()
    assert model.forward_with_aux(torch.randn(1, 3, 16, 16))[1] is None
    with pytest.raises(ValueError, match="drop path rate"):
        model.set_drop_path_rate(1.5)


def test_drop_path_is_identity_in_eval_mode():
    model = CellNetCifar("darts_v2", cells_per_stage=1, channels=4, drop_path_rate=0.5).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=-4), "channels must be an integer >= 1"),
    (dict(cells_per_stage=0), "cells_per_stage"),
    (dict(num_classes=-1), "num_classes"),
    (dict(genotype="no_such_cell"), "no genotype named 'no_such_cell'"),
])
def test_bad_network_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CellNetCifar(**kwargs)



def _strided_reference(module: torch.nn.Module, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """``module`` (identity or conv_1x1 at stride 2) computed with plain stride-2 convolutions."""
    F = torch.nn.functional
    relu, bn = torch.relu(x), [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    if len(params) == 2:  # factorized reduction: two paths, the second shifted by a pixel
        shifted = F.pad(relu[:, :, 1:, 1:], (0, 1, 0, 1))
        out = torch.cat([F.conv2d(relu, params[0], stride=2), F.conv2d(shifted, params[1], stride=2)], 1)
    else:
        out = F.conv2d(relu, params[0], stride=2)
    return F.batch_norm(out, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


@pytest.mark.parametrize("op", ["identity", "conv_1x1"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_pointwise_ops_compute_a_strided_convolution(op, channels_last):
    """Strided 1x1 convs run as a slice + stride-1 conv (oneDNN's strided 1x1 kernel corrupts memory in
    channels_last on AVX2 CPUs): outputs and weight gradients must be those of a plain strided conv."""
    torch.manual_seed(0)
    module = build_op(op, 4, 4, 2)
    x = torch.randn(100, 4, 8, 8)
    weights = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    reference_weights = [w.detach().clone().requires_grad_() for w in weights]
    expected = _strided_reference(module, x, reference_weights)
    expected.square().sum().backward()
    if channels_last:
        module, x = module.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out = module(x)
    out.square().sum().backward()
    assert torch.allclose(out, expected, atol=1e-5)
    for got, want in zip(weights, reference_weights):  # within float32 summation-order noise of the largest entry
        assert (got.grad - want.grad).abs().max() <= 1e-4 * want.grad.abs().max()
