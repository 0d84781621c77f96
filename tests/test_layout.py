"""The action layout: one object says how a genotype is laid out as decisions, so a space with other
block counts or another op list works everywhere (codec, every strategy, a real search, timm)."""
import random

import pytest
import timm
import torch

from cellsearch.space.genotype import SearchSpace, load_genotype
from cellsearch.strategies import STRATEGIES, build_strategy

from test_train import load_train_module

SIX_OPS = ("identity", "avg_pool_3x3", "max_pool_3x3", "conv_1x1", "conv_3x3", "dil_conv_3x3")
THREE_BLOCKS = SearchSpace(ops=SIX_OPS, num_blocks=3)
SMALL = {
    "evolution": {"population_size": 4, "sample_size": 2},
    "ppo": {"update_every": 3, "hidden_size": 8},
    "reinforce": {"update_every": 3, "hidden_size": 8},
    "progressive": {"beam_size": 2, "num_initial": 4, "num_expansions": 8, "surrogate_steps": 3},
}


def test_the_layout_follows_the_space():
    layout = THREE_BLOCKS.layout
    assert layout.size == len(THREE_BLOCKS.decisions()) == 2 * 3 * layout.per_block
    # inputs of block b choose among 2 + b states; ops among the space's ops; combines among its combines
    assert [d.num_choices for d in layout.decisions if d.kind == "input"] == [2, 2, 3, 3, 4, 4] * 2
    assert {d.num_choices for d in layout.decisions if d.kind == "op"} == {len(SIX_OPS)}
    genotype = THREE_BLOCKS.sample(random.Random(0))
    actions = THREE_BLOCKS.encode(genotype)
    assert THREE_BLOCKS.decode(actions) == genotype
    assert layout.blocks_of(actions) == 3 and layout.join(layout.split(actions)) == actions
    assert layout.with_blocks(1).size * 3 == layout.size


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_searches_a_three_block_six_op_space(name):
    strategy = build_strategy(name, THREE_BLOCKS, seed=0, **SMALL.get(name, {}))
    sizes = set()
    for i in range(30):
        proposal = strategy.ask()
        blocks = len(proposal.genotype.normal.blocks)
        strategy.space_with_blocks(blocks).validate(proposal.genotype)
        sizes.add(blocks)
        strategy.tell(proposal.trial_id, random.Random(i).random())
    assert max(sizes) == 3 and (sizes == {3} or name == "progressive")


@pytest.mark.slow
def test_a_three_block_six_op_search_exports_a_cell_that_timm_builds(tmp_path, monkeypatch, compose, tiny_search):
    monkeypatch.chdir(tmp_path)
    train = load_train_module()
    space = [f"space.num_blocks={THREE_BLOCKS.num_blocks}", f"space.ops=[{','.join(SIX_OPS)}]"]
    cfg = compose(*tiny_search, *space, "search=ppo", "search.budget=4", "search.update_every=2",
                  f"run_dir={tmp_path / 'run'}", "export.name=three_blocks")
    summary = train.run(cfg)
    assert summary.num_trials == 4
    exported = load_genotype(tmp_path / "run" / "three_blocks.yaml")  # into the search's run directory
    assert exported == summary.best.genotype and len(exported.normal.blocks) == 3
    assert exported.ops_used() <= set(SIX_OPS)
    model = timm.create_model("cellnet_cifar", genotype=str(tmp_path / "run" / "three_blocks.yaml"),
                              num_classes=10, in_chans=1, cells_per_stage=1, channels=4).eval()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
