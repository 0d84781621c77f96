"""The supernet: every genotype of the space is a path, and a path computes its stand-alone network."""
from __future__ import annotations

import random

import pytest
import torch

from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace, load_genotype
from cellsearch.space.network import CellNetCifar
from cellsearch.space.supernet import SuperNet, parameter_free_ops

CONCAT_CELL = {
    "normal": {"blocks": [{"inputs": [0, 1], "ops": ["sep_conv_3x3", "identity"], "combine": "concat"},
                          {"inputs": [2, 1], "ops": ["identity", "max_pool_3x3"], "combine": "add"},
                          {"inputs": [2, 3], "ops": ["conv_1x7_7x1", "avg_pool_3x3"], "combine": "concat"}]},
    "reduce": {"blocks": [{"inputs": [0, 1], "ops": ["identity", "conv_3x3"], "combine": "concat"},
                          {"inputs": [2, 0], "ops": ["max_pool_5x5", "dil_conv_3x3"], "combine": "add"},
                          {"inputs": [3, 2], "ops": ["sep_conv_7x7", "identity"], "combine": "concat"}],
               "concat": [1, 3, 4]},
}


def _randomise_bn(net: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize("which", ["concat", "random0", "random1", "random2"])
def test_path_computes_the_standalone_network(which):
    torch.manual_seed(0)
    space = SearchSpace(num_blocks=3)
    genotype = Genotype.from_dict(CONCAT_CELL) if which == "concat" else space.sample(random.Random(which))
    supernet = SuperNet(space, cells_per_stage=1, channels=4, num_classes=5)
    net = CellNetCifar(genotype, cells_per_stage=1, channels=4, num_classes=5)
    _randomise_bn(net, 1)
    supernet.load_standalone(net)
    x = torch.randn(3, 3, 12, 12)
    for train in (False, True):
        net.train(train)
        supernet.train(train)
        torch.testing.assert_close(supernet(x, genotype), net(x), atol=1e-5, rtol=1e-4)


def test_full_space_supernet_runs_every_op_and_both_combines():
    space = SearchSpace()
    supernet = SuperNet(space, cells_per_stage=1, channels=4)
    rng = random.Random(0)
    for _ in range(3):
        genotype = space.sample(rng)
        supernet.check_path(genotype)
        assert supernet(torch.randn(2, 3, 8, 8), genotype).shape == (2, 10)


def test_genotype_outside_the_space_is_refused_in_one_line():
    supernet = SuperNet(SearchSpace(num_blocks=5), cells_per_stage=1, channels=4)
    with pytest.raises(GenotypeError, match="genotype outside the supernet's space: normal cell: has 3 blocks.*uses 5"):
        supernet.check_path(Genotype.from_dict(CONCAT_CELL))
    small = SuperNet(SearchSpace(ops=("identity", "conv_3x3"), num_blocks=3), cells_per_stage=1, channels=4)
    with pytest.raises(GenotypeError, match="'sep_conv_3x3' is not in this search space"):
        small.check_path(Genotype.from_dict(CONCAT_CELL))
    with pytest.raises(GenotypeError):
        small.check_path(load_genotype("nasnet_a"))


def test_parameter_free_ops_come_from_the_op_table():
    assert set(parameter_free_ops(SearchSpace().ops)) == {"identity", "avg_pool_3x3", "max_pool_3x3",
                                                          "max_pool_5x5", "max_pool_7x7"}
