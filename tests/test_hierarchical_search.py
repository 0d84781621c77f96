"""Evolution over the hierarchical space (Liu et al. 2018): initial population from the trivial genotype,
the space's mutation, tournament selection without removal, resumable state; refusals in one line."""
import random
import statistics

import pytest
import torch

from cellsearch.space.genotype import SearchSpace
from cellsearch.space.hierarchical import HierarchicalSpace
from cellsearch.strategies import build_strategy
from cellsearch.strategies.evolution import mutate
from cellsearch.validation import ConfigError

SPACE = HierarchicalSpace()
FLAT = HierarchicalSpace(levels=2, motifs_per_level=(1,), nodes_per_motif=(11,))


def sep_conv_share(genotype) -> float:
    """A toy reward: the share of the computing level-2 edges that are separable convs."""
    entries = [e for m in genotype.canonical().levels[0] for row in m for e in row if e != "none"]
    return sum(e == "sep_conv_3x3" for e in entries) / max(len(entries), 1)


def run(name: str, space, budget: int, seed: int, **settings) -> list[float]:
    """Rewards of a search for a hidden genotype: the share of decisions that agree with it."""
    rng = random.Random(99)
    target = [rng.randrange(n) for n in space.layout.num_choices_list]
    strategy = build_strategy(name, space, seed=seed, **settings)
    rewards = []
    for _ in range(budget):
        proposal = strategy.ask()
        actions = space.encode(proposal.genotype)
        rewards.append(sum(a == b for a, b in zip(actions, target)) / len(target))
        strategy.tell(proposal.trial_id, rewards[-1])
    return rewards


def test_defaults_are_the_papers_for_each_space():
    hierarchical = build_strategy("evolution", SPACE, population_size=4, sample_size=2)
    nasnet = build_strategy("evolution", SearchSpace(num_blocks=2), population_size=4, sample_size=2)
    assert (hierarchical.aging, hierarchical.init_mutations) == (False, 1000)
    assert (nasnet.aging, nasnet.init_mutations) == (True, 0)


def test_the_first_population_is_the_trivial_genotype_diversified_by_mutations():
    strategy = build_strategy("evolution", SPACE, seed=0, population_size=5, sample_size=2, init_mutations=3)
    trivial = SPACE.encode(SPACE.trivial())
    for _ in range(5):
        actions = SPACE.encode(strategy.ask().genotype)
        assert 1 <= sum(a != b for a, b in zip(actions, trivial)) <= 3  # three mutations, perhaps of one edge
    unmutated = build_strategy("evolution", SPACE, population_size=2, sample_size=1, init_mutations=0)
    assert unmutated.ask().genotype != SPACE.trivial()  # 0: drawn at random instead


def test_tournament_selection_keeps_every_genotype_and_mutates_one_edge():
    strategy = build_strategy("evolution", FLAT, seed=1, population_size=4, sample_size=2, identity_prob=0.0,
                              init_mutations=50)
    first = [strategy.ask() for _ in range(4)]
    for p in first:
        strategy.tell(p.trial_id, sep_conv_share(p.genotype))
    for step in range(20):
        child = strategy.ask()
        parents = [FLAT.encode(strategy._trials[i].genotype) for i in strategy.population]
        distances = [sum(a != b for a, b in zip(FLAT.encode(child.genotype), p)) for p in parents]
        assert min(distances) == 1
        strategy.tell(child.trial_id, sep_conv_share(child.genotype))
        assert len(strategy.population) == 5 + step  # no genotype is removed (Liu et al.)
    assert strategy.tournament_size() == 12  # half of the 24 members, as sample_size=2 was of population_size=4


def test_evolution_beats_random_search_on_a_toy_reward():
    settings = dict(population_size=20, sample_size=10, init_mutations=100)
    evolved = [max(run("evolution", SPACE, 200, seed, **settings)) for seed in range(3)]
    drawn = [max(run("random", SPACE, 200, seed)) for seed in range(3)]
    assert statistics.mean(evolved) > statistics.mean(drawn) + 0.1, (evolved, drawn)
    assert min(evolved) > max(drawn), (evolved, drawn)


def test_the_state_resumes_exactly():
    settings = dict(population_size=4, sample_size=2, init_mutations=20)
    strategy = build_strategy("evolution", SPACE, seed=2, **settings)
    run_steps = [strategy.ask() for _ in range(6)]
    for p in run_steps[:5]:
        strategy.tell(p.trial_id, sep_conv_share(p.genotype))
    state = strategy.state_dict()
    restored = build_strategy("evolution", SPACE, seed=2, **settings)
    restored.load_state_dict(torch.load(_saved(state), weights_only=True))
    assert [restored.ask().genotype for _ in range(5)] == [strategy.ask().genotype for _ in range(5)]


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_mutate_uses_the_space_hook_and_the_identity_mutation():
    actions = SPACE.encode(SPACE.trivial())
    assert mutate(actions, SPACE, random.Random(3)) == SPACE.mutate(actions, _after_identity_draw(3))
    assert mutate(actions, SPACE, random.Random(3), identity_prob=1.0) == actions


def _after_identity_draw(seed: int) -> random.Random:
    rng = random.Random(seed)
    rng.random()  # mutate() draws the identity mutation first
    return rng


@pytest.mark.parametrize("name, settings, message", [
    ("evolution", dict(init_mutations=5), r"search.init_mutations must be 0 \(or null\) for space=nasnet"),
    ("evolution", dict(aging="yes"), r"search.aging must be true or false"),
])
def test_settings_that_cannot_work_are_refused_in_one_line(name, settings, message):
    space = SearchSpace(num_blocks=2) if "init_mutations" in settings else SPACE
    with pytest.raises(ConfigError, match=message) as info:
        build_strategy(name, space, population_size=4, sample_size=2, **settings)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["ppo", "reinforce", "progressive"])
def test_strategies_that_do_not_search_the_space_refuse_it(name):
    with pytest.raises(ValueError, match=f"search={name} does not search space=hierarchical"):
        build_strategy(name, SPACE)


@pytest.mark.slow  # about 7 CPU seconds, as long as the same run over NASNet cells: two Lightning fits
def test_train_py_searches_the_hierarchical_space_with_evolution(tmp_path, compose):
    """``python train.py space=hierarchical search=evolution search.budget=2`` on tiny synthetic data."""
    from test_train import load_train_module, stored

    from cellsearch import load_genotype
    from cellsearch.search.loop import BEST_CELL_FILE

    run_dir = tmp_path / "run"
    summary = load_train_module().run(compose(
        "space=hierarchical", "search=evolution", "search.budget=2", "search.population_size=2",
        "search.sample_size=1", "data=synthetic", "data.synthetic_train_size=50", "data.synthetic_test_size=20",
        "child.accelerator=cpu", "child.cells_per_stage=1", "child.channels=4", "child.epochs=1",
        "child.batch_size=50", "space.motifs_per_level=[2,1]", "space.nodes_per_motif=[3,3]", f"run_dir={run_dir}"))
    rows = stored(run_dir)
    assert summary.num_trials == 2 and all(reward is not None for _, _, reward, _ in rows)
    best = load_genotype(run_dir / BEST_CELL_FILE)
    assert best == summary.best.genotype and type(best).space == "hierarchical"
    HierarchicalSpace(motifs_per_level=(2, 1), nodes_per_motif=(3, 3)).validate(best)
