"""Search strategies: ask/tell in any order, failures, validity, seeds, resume, de-duplication,
aging evolution, progressive growth, and that the RL controllers actually learn."""
from __future__ import annotations

import random
import statistics

import hydra.utils
import pytest
import torch

from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.strategies import STRATEGIES, build_strategy
from cellsearch.strategies.evolution import mutate

NAMES = sorted(STRATEGIES)
SPACE = SearchSpace(ops=("identity", "conv_1x1", "sep_conv_3x3", "max_pool_3x3"), num_blocks=2)
TINY = SearchSpace(ops=("identity", "conv_1x1"), num_blocks=1, combines=("add",))  # 100 distinct genotypes

# Small settings so that every strategy leaves its start-up phase within a few dozen trials.
FAST = {
    "random": {},
    "evolution": {"population_size": 6, "sample_size": 3},
    "ppo": {"update_every": 4, "hidden_size": 16, "ppo_epochs": 2},
    "reinforce": {"update_every": 4, "hidden_size": 16},
    "progressive": {"beam_size": 3, "num_initial": 5, "num_expansions": 20, "surrogate_steps": 5},
}


def make(name: str, space: SearchSpace = SPACE, seed: int = 0, **kw) -> object:
    return build_strategy(name, space, seed=seed, **{**FAST[name], **kw})


def op_reward(genotype: Genotype) -> float:
    """Deterministic toy reward: fraction of ops that are conv_1x1."""
    ops = [op for cell in (genotype.normal, genotype.reduce) for b in cell.blocks for op in b.ops]
    return sum(op == "conv_1x1" for op in ops) / len(ops)


def drive(strategy, events: range, trace: list) -> None:
    """A fixed asynchronous schedule: keep several trials in flight, tell them out of order, fail some."""
    in_flight = strategy.pending()
    for i in events:
        if len(in_flight) < 3 or i % 3 == 0:
            proposal = strategy.ask()
            in_flight.append(proposal)
            trace.append((proposal.trial_id, proposal.genotype.key()))
        else:
            proposal = in_flight.pop(i % len(in_flight))
            strategy.tell(proposal.trial_id, None if i % 7 == 0 else op_reward(proposal.genotype))


@pytest.mark.parametrize("name", NAMES)
def test_proposals_are_valid_genotypes_of_the_space(name):
    strategy = make(name)
    for _ in range(40):
        proposal = strategy.ask()
        num_blocks = len(proposal.genotype.normal.blocks)
        assert num_blocks == SPACE.num_blocks or (name == "progressive" and 1 <= num_blocks <= SPACE.num_blocks)
        strategy.space_with_blocks(num_blocks).validate(proposal.genotype)
        strategy.tell(proposal.trial_id, op_reward(proposal.genotype))
    # progressive search must have grown its cells to the full size by now
    assert len(strategy.ask().genotype.normal.blocks) == SPACE.num_blocks


@pytest.mark.parametrize("name", NAMES)
def test_ask_tell_out_of_order_with_failures(name):
    strategy = make(name)
    proposals = [strategy.ask() for _ in range(12)]
    assert [p.trial_id for p in proposals] == list(range(12))
    order = list(range(12))
    random.Random(1).shuffle(order)
    told = {}
    for k, i in enumerate(order):
        told[i] = None if k % 4 == 0 else op_reward(proposals[i].genotype) + i / 1000
        strategy.tell(i, told[i])
        assert i not in [p.trial_id for p in strategy.pending()]
    assert strategy.pending() == [] and strategy.num_told == 12
    assert strategy.learning_reward(order[0]) == strategy.failure_reward
    best_id = max((i for i in told if told[i] is not None), key=told.get)
    assert strategy.best()[0] == best_id and strategy.best()[2] == told[best_id]
    with pytest.raises(ValueError, match="already told"):
        strategy.tell(order[0], 0.5)
    with pytest.raises(KeyError, match="unknown trial_id"):
        strategy.tell(99, 0.5)
    trace: list = []
    drive(strategy, range(60), trace)  # keeps working after updates / stages / generations
    assert strategy.num_told > 12 + 20


def test_failed_child_gets_the_failure_reward():
    strategy = make("ppo", failure_reward=0.25, update_every=100)
    first, second = strategy.ask(), strategy.ask()
    strategy.tell(second.trial_id, float("nan"))  # NaN counts as a failure too
    assert strategy.learning_reward(second.trial_id) == 0.25 and strategy.baseline == 0.25
    strategy.tell(first.trial_id, None)
    assert strategy.best() is None and strategy.baseline == 0.25
    assert strategy.learning_reward(first.trial_id) == 0.25


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_from_seed(name):
    traces = []
    for seed in (3, 3, 4):
        trace: list = []
        drive(make(name, seed=seed), range(60), trace)
        traces.append(trace)
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues_exactly(name, tmp_path):
    uninterrupted: list = []
    drive(make(name, seed=7), range(90), uninterrupted)

    resumed: list = []
    first = make(name, seed=7)
    drive(first, range(50), resumed)
    assert first.pending(), "the schedule should leave trials in flight at save time"
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = make(name, seed=123)  # the seed comes from the saved state
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [p.trial_id for p in second.pending()] == [p.trial_id for p in first.pending()]
    drive(second, range(50, 90), resumed)
    assert resumed == uninterrupted


def test_load_state_dict_rejects_another_strategy_or_space():
    state = make("random").state_dict()
    with pytest.raises(ValueError, match="saved by the 'random' strategy"):
        make("evolution").load_state_dict(state)
    with pytest.raises(ValueError, match="search space|searches"):
        make("random", space=TINY).load_state_dict(state)


@pytest.mark.parametrize("name", NAMES)
def test_dedupe_never_repeats_a_canonical_genotype(name):
    kw = {"num_initial": 5, "beam_size": 3} if name == "progressive" else {}
    strategy = make(name, space=TINY, dedupe=True, **kw)
    keys = []
    for _ in range(50):
        proposal = strategy.ask()
        keys.append(proposal.genotype.key())
        strategy.tell(proposal.trial_id, op_reward(proposal.genotype))
    assert len(set(keys)) == len(keys)


def test_without_dedupe_repeats_happen_in_a_tiny_space():
    strategy = make("random", space=TINY)
    keys = [strategy.ask().genotype.key() for _ in range(50)]
    assert len(set(keys)) < len(keys)


def test_mutation_changes_exactly_one_decision():
    rng = random.Random(0)
    decisions = SPACE.decisions()
    parent = [rng.randrange(d.num_choices) for d in decisions]
    kinds = set()
    for _ in range(200):
        child = mutate(parent, SPACE, rng)
        changed = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert len(changed) == 1
        assert 0 <= child[changed[0]] < decisions[changed[0]].num_choices
        kinds.add(decisions[changed[0]].kind)
    assert kinds == {"input", "op", "combine"}
    assert mutate(parent, SPACE, rng, identity_prob=1.0) == parent


def test_evolution_population_ages_out_the_oldest():
    strategy = make("evolution", population_size=4, sample_size=2, identity_prob=0.0)
    first = [strategy.ask() for _ in range(4)]
    for i in (2, 0, 3):
        strategy.tell(first[i].trial_id, 0.9)
    assert strategy.population == [2, 0, 3]
    child = strategy.ask()  # past the first P proposals: a mutant of a told trial
    child_actions = SPACE.encode(child.genotype)
    distances = [sum(a != b for a, b in zip(child_actions, SPACE.encode(first[i].genotype)))
                 for i in strategy.population]
    assert min(distances) == 1
    strategy.tell(first[1].trial_id, 0.1)
    strategy.tell(child.trial_id, 0.5)
    assert strategy.population == [0, 3, 1, child.trial_id]  # trial 2, the oldest, died
    for _ in range(20):
        proposal = strategy.ask()
        strategy.tell(proposal.trial_id, op_reward(proposal.genotype))
        assert len(strategy.population) == 4
        assert strategy.population[-1] == proposal.trial_id


def test_evolution_rejects_bad_sizes():
    with pytest.raises(ValueError, match="sample_size"):
        build_strategy("evolution", SPACE, population_size=5, sample_size=6)


def test_progressive_grows_cells_block_by_block():
    space = SearchSpace(ops=SPACE.ops, num_blocks=3)
    strategy = build_strategy("progressive", space, seed=0, beam_size=4, num_initial=6, num_expansions=30,
                              surrogate_steps=5)
    sizes = []
    for stage_size in (6, 4, 4, 4):
        batch = [strategy.ask() for _ in range(stage_size)]
        extra = strategy.ask()  # asked before the stage's results are in: still the current stage
        sizes.append({len(p.genotype.normal.blocks) for p in batch + [extra]})
        for p in batch + [extra]:
            strategy.tell(p.trial_id, op_reward(p.genotype))
    assert sizes == [{1}, {2}, {3}, {3}]
    assert strategy.num_stages == 4


def test_progressive_surrogate_picks_better_expansions_than_random():
    space = SearchSpace(ops=("identity", "conv_1x1", "sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3"), num_blocks=2)
    strategy = build_strategy("progressive", space, seed=0, beam_size=8, num_initial=40, num_expansions=200)
    for _ in range(40):
        p = strategy.ask()
        strategy.tell(p.trial_id, op_reward(p.genotype))
    chosen = [strategy.ask().genotype for _ in range(8)]
    assert all(len(g.normal.blocks) == 2 for g in chosen)
    rng = random.Random(0)
    random_mean = statistics.fmean(op_reward(space.sample(rng)) for _ in range(200))
    assert statistics.fmean(op_reward(g) for g in chosen) > random_mean + 0.2


@pytest.mark.parametrize("name,lr", [("ppo", 0.003), ("reinforce", 0.01)])
def test_rl_controller_learns_an_easy_reward(name, lr):
    space = SearchSpace(ops=("identity", "conv_1x1", "sep_conv_3x3", "max_pool_3x3"), num_blocks=1)
    strategy = build_strategy(name, space, seed=0, lr=lr, update_every=10, hidden_size=32,
                              reward_shaping="accuracy")
    rewards = []
    for _ in range(300):
        p = strategy.ask()
        rewards.append(op_reward(p.genotype))
        strategy.tell(p.trial_id, rewards[-1])
    assert strategy.num_updates == 30
    # before the first update the policy is near uniform: 1/4 of ops are conv_1x1
    assert statistics.fmean(rewards[:10]) < 0.4
    assert statistics.fmean(rewards[-50:]) > 0.8


def test_controller_softmax_covers_exactly_the_legal_choices():
    strategy = build_strategy("ppo", SPACE, seed=0)
    actions = torch.tensor([strategy.controller.sample(strategy.generator)[0] for _ in range(64)])
    decisions = SPACE.decisions()
    for t, d in enumerate(decisions):
        assert int(actions[:, t].max()) < d.num_choices
    log_probs, entropy = strategy.controller.evaluate(actions)
    assert torch.isfinite(log_probs).all() and torch.isfinite(entropy).all()
    # at initialization the policy is near uniform over each decision's legal choices
    expected = torch.tensor([torch.log(torch.tensor(float(d.num_choices))) for d in decisions])
    assert torch.allclose(entropy.mean(0), expected, atol=0.05)
    # sampling log-probs match re-evaluated ones (PPO's ratio starts at 1)
    sampled, old = strategy.controller.sample(strategy.generator)
    new, _ = strategy.controller.evaluate(torch.tensor([sampled]))
    assert torch.allclose(new[0], old, atol=1e-5)


def test_build_strategy_errors_and_hydra_instantiate():
    with pytest.raises(ValueError, match="unknown search strategy"):
        build_strategy("bayesian", SPACE)
    with pytest.raises(ValueError, match="no hyperparameter"):
        build_strategy("random", SPACE, population_size=3)
    with pytest.raises(ValueError, match="reward_shaping"):
        build_strategy("ppo", SPACE, reward_shaping="squared")
    strategy = hydra.utils.instantiate({
        "_target_": "cellsearch.strategies.PPO", "seed": 1, "tanh_constant": 2.5, "temperature": 5.0,
        "space": {"ops": list(SPACE.ops), "num_blocks": 2},
    })
    assert strategy.space == SPACE and strategy.controller.tanh_constant == 2.5
    SPACE.validate(strategy.ask().genotype)


@pytest.mark.parametrize("name", NAMES)
def test_strategies_leave_global_rng_state_alone(name):
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    drive(make(name), range(60), [])
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_withdrawn_proposals_are_not_trials_and_resume_exactly(name):
    space = SearchSpace(num_blocks=2)
    strategy = build_strategy(name, space, seed=3, **FAST.get(name, {}))
    kept, dropped = strategy.ask(), strategy.ask()
    strategy.withdraw(dropped.trial_id)
    assert [p.trial_id for p in strategy.pending()] == [kept.trial_id]
    with pytest.raises(ValueError, match="withdrawn"):
        strategy.tell(dropped.trial_id, 0.5)
    strategy.tell(kept.trial_id, 0.5)
    assert strategy.num_told == 1
    clone = build_strategy(name, space, seed=3, **FAST.get(name, {}))
    clone.load_state_dict(strategy.state_dict())
    assert [clone.ask().genotype for _ in range(3)] == [strategy.ask().genotype for _ in range(3)]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_add_trial_registers_an_outside_evaluation(name):
    space = SearchSpace(num_blocks=2)
    strategy = build_strategy(name, space, seed=0, **FAST.get(name, {}))
    genotype = space.sample(random.Random(1))
    trial_id = strategy.add_trial(genotype, 0.75)
    assert strategy.best() == (trial_id, genotype, 0.75) and strategy.num_told == 1
    assert strategy.ask().trial_id == trial_id + 1  # goes on proposing, after the outside trial
