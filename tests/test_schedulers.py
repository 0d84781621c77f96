"""Early-stopping schedulers: rung arithmetic, hand-worked decisions, the fraction stopped per rung,
Hyperband's brackets, exact resume by state and by replay, the issue's example with a real strategy,
bad input in one line, and that ASHA keeps the best child of synthetic learning curves."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from cellsearch.search import ASHA, Hyperband
from cellsearch.search.schedulers import rung_epochs, scheduler_from_config
from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies import build_strategy
from cellsearch.validation import ConfigError


def test_rungs_are_min_times_powers_of_eta_below_max():
    assert rung_epochs(1, 8, 3) == [1, 3]
    assert rung_epochs(1, 9, 3) == [1, 3]  # a child at max_epochs is complete: max is never a rung
    assert rung_epochs(1, 10, 3) == [1, 3, 9]
    assert rung_epochs(2, 20, 2) == [2, 4, 8, 16]
    assert rung_epochs(5, 5, 2) == []
    assert ASHA(1, 8, 2).rungs() == [1, 2, 4]


def test_hand_worked_decisions_eta_2():
    scheduler = ASHA(min_epochs=1, max_epochs=4, reduction_factor=2)  # rungs at 1 and 2
    reports = [  # (trial, epoch, value), expected decision, why
        ((0, 1, 0.50), True),   # first at rung 1
        ((1, 1, 0.60), True),   # n=2, keep 1, none higher
        ((2, 1, 0.40), False),  # n=3, keep 1, two higher
        ((0, 2, 0.55), True),   # first at rung 2
        ((3, 1, 0.50), True),   # n=4, keep 2, one higher (0.60); the tie with 0.50 goes on
        ((1, 2, 0.50), False),  # n=2, keep 1, one higher (0.55)
        ((3, 2, 0.70), True),   # n=3, keep 1, none higher
        ((0, 3, 0.60), True),   # between rungs: recorded only
        ((0, 4, 0.62), True),   # max_epochs: complete
    ]
    assert [scheduler.report(*r) for r, _ in reports] == [d for _, d in reports]
    assert [scheduler.status(t) for t in range(4)] == ["completed", "stopped", "stopped", "running"]
    assert [scheduler.epochs_trained(t) for t in range(4)] == [4, 2, 1, 2]
    assert scheduler.curve(1) == [(1, 0.60), (2, 0.50)]
    assert [scheduler.reward(t) for t in range(3)] == [0.62, 0.50, 0.40]
    # rank: ladder 1, 2, 4 (K + 1 = 3 places); trial 2 was lowest of 3 at rung 1, trial 1 lowest of 2 at rung 2
    rank = ASHA(1, 4, 2, reward_rule="rank")
    rank.replay(r for r, _ in reports)
    assert [rank.reward(t) for t in range(3)] == pytest.approx([1.0, (1 + 1 / 2) / 3, (0 + 1 / 3) / 3])
    with pytest.raises(ValueError, match="^trial 3 is still running"):
        scheduler.reward(3)


def test_hand_worked_decisions_eta_3():
    scheduler = ASHA(min_epochs=1, max_epochs=9, reduction_factor=3)  # rungs at 1 and 3
    values = [0.50, 0.40, 0.60, 0.30, 0.70, 0.55, 0.65]
    # keep max(1, n // 3): n=1..5 keep 1 (the best so far), n=6,7 keep 2
    assert [scheduler.report(i, 1, v) for i, v in enumerate(values)] == [True, False, True, False, True, False, True]
    assert scheduler.report(2, 3, 0.6) and scheduler.report(0, 3, 0.5) is False  # n=2 at rung 3: keep 1
    assert scheduler.report(4, 2, 0.1) and scheduler.report(4, 3, 0.6)  # a tie with the best goes on


@pytest.mark.parametrize("eta", [2, 3])
def test_about_one_in_eta_goes_on_at_each_rung(eta):
    scheduler = ASHA(min_epochs=1, max_epochs=eta ** 3, reduction_factor=eta)
    rng = random.Random(eta)
    reached = {rung: 0 for rung in scheduler.rungs()}
    went_on = dict(reached)
    # values that arrive in random order at each rung; with curves that keep their order, a later rung sees
    # its best children last (they passed a higher bar below) and lets more than 1/eta go on
    for trial in range(1500):
        for rung in scheduler.rungs():
            reached[rung] += 1
            if not scheduler.report(trial, rung, rng.random()):
                break
            went_on[rung] += 1
    for rung in scheduler.rungs():
        assert reached[rung] > 50
        assert abs(went_on[rung] / reached[rung] - 1 / eta) < 0.06, (rung, went_on[rung], reached[rung])


def test_hyperband_brackets_and_their_min_rungs():
    scheduler = Hyperband(min_epochs=1, max_epochs=27, reduction_factor=3)
    assert scheduler.brackets == 4
    assert [scheduler.rungs(b) for b in range(4)] == [[1, 3, 9], [3, 9], [9], []]
    cycle = [scheduler.bracket(t) for t in range(200)]
    # Hyperband's numbers of children for an equal budget: ceil(4/(s+1) * 3**s) for s = 3, 2, 1, 0 rungs
    assert [cycle[:49].count(b) for b in range(4)] == [27, 12, 6, 4]
    assert cycle[49:98] == cycle[:49] and max(len(run) for run in "".join(map(str, cycle)).split("0")) <= 2
    # a child of bracket 3 is never stopped; one of bracket 1 is first judged at epoch 3
    trial_3 = cycle.index(3)
    assert all(scheduler.report(trial_3, e, 0.0) for e in range(1, 28)) and scheduler.status(trial_3) == "completed"
    first_1, second_1 = [t for t, b in enumerate(cycle) if b == 1][:2]
    assert scheduler.report(first_1, 1, 0.9) and scheduler.report(first_1, 3, 0.9)
    assert scheduler.report(second_1, 1, 0.1) and not scheduler.report(second_1, 3, 0.1)
    assert Hyperband(1, 27, 3, brackets=1).rungs(0) == ASHA(1, 27, 3).rungs()
    assert {Hyperband(1, 27, 3, brackets=2).bracket(t) for t in range(50)} == {0, 1}


def reports_of(seed: int, scheduler_factory, num_trials: int = 30, workers: int = 3) -> list[tuple]:
    """The reports of an asynchronous run: ``workers`` children train at once, one epoch per turn."""
    rng = random.Random(seed)
    scheduler, reports, active, next_trial = scheduler_factory(), [], [], 0
    while active or next_trial < num_trials:
        while len(active) < workers and next_trial < num_trials:
            active.append([next_trial, 0, rng.random()])
            next_trial += 1
        slot = active[rng.randrange(len(active))]  # children report out of step with each other
        slot[1] += 1
        report = (slot[0], slot[1], slot[2] * slot[1] + rng.gauss(0, 0.1))
        reports.append(report)
        if not scheduler.report(*report) or slot[1] == scheduler.max_epochs:
            active.remove(slot)
    return reports


@pytest.mark.parametrize("factory", [lambda: ASHA(1, 9, 2, reward_rule="rank"), lambda: Hyperband(1, 9, 2)])
def test_resume_mid_rung_and_replay_give_the_same_decisions(factory):
    reports = reports_of(0, factory)
    whole = factory()
    expected = whole.replay(reports)
    assert False in expected and True in expected
    for cut in (len(reports) // 3, len(reports) // 2 + 1):
        first = factory()
        first.replay(reports[:cut])
        resumed = factory()
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # plain JSON-able data
        assert resumed.replay(reports[cut:]) == expected[cut:]
        assert resumed.state_dict() == whole.state_dict()
    finished = [t for t in whole.trial_ids() if whole.status(t) != "running"]
    assert [resumed.reward(t) for t in finished] == [whole.reward(t) for t in finished]


def test_state_of_another_scheduler_is_refused():
    with pytest.raises(ValueError, match="saved with"):
        ASHA(1, 9, 3).load_state_dict(ASHA(1, 9, 2).state_dict())


def synthetic_training():
    """A ``train_one_epoch(genotype)`` for one child: accuracy rises towards a ceiling set by its ops."""
    epochs = 0

    def train_one_epoch(genotype) -> float:
        nonlocal epochs
        epochs += 1
        ops = [op for cell in (genotype.normal, genotype.reduce) for b in cell.blocks for op in b.ops]
        ceiling = 0.5 + 0.4 * sum(op == "conv_1x1" for op in ops) / len(ops)
        return ceiling * (1 - math.exp(-epochs / 2))

    return train_one_epoch


def test_the_issue_example_runs_with_a_real_strategy():
    strategy = build_strategy("evolution", SearchSpace(ops=("identity", "conv_1x1"), num_blocks=2),
                              seed=0, population_size=4, sample_size=2)
    scheduler = ASHA(min_epochs=1, max_epochs=8, reduction_factor=3)
    for _ in range(12):
        train_one_epoch = synthetic_training()
        proposal = strategy.ask()
        for epoch in range(1, 9):
            accuracy = train_one_epoch(proposal.genotype)
            if not scheduler.report(proposal.trial_id, epoch, accuracy):   # False: stop this child
                break
        strategy.tell(proposal.trial_id, scheduler.reward(proposal.trial_id))
    statuses = [scheduler.status(t) for t in range(12)]
    assert strategy.num_told == 12 and "stopped" in statuses and "completed" in statuses
    assert all(scheduler.epochs_trained(t) in (1, 3) for t in range(12) if statuses[t] == "stopped")
    assert strategy.best()[2] == max(scheduler.reward(t) for t in range(12))


@pytest.mark.parametrize("make, message", [
    (lambda: ASHA(1, 8, 1), r"^scheduler.reduction_factor must be an integer >= 2, got 1 \("),
    (lambda: ASHA(0, 8), r"^scheduler.min_epochs must be an integer >= 1, got 0 \("),
    (lambda: ASHA(9, 8), r"^scheduler.min_epochs must be <= scheduler.max_epochs \(8\), got 9 \("),
    (lambda: ASHA(1.5, 8), r"^scheduler.min_epochs must be an integer >= 1, got 1.5 \("),
    (lambda: ASHA(1, 8, 2.5), r"^scheduler.reduction_factor must be an integer >= 2, got 2.5 \("),
    (lambda: ASHA(1, 8, reward_rule="best"), r"^scheduler.reward_rule must be one of \['last', 'rank'\]"),
    (lambda: Hyperband(1, 8, 3, brackets=4), r"^scheduler.brackets must be an integer in 1..3 .*got 4 \("),
    (lambda: ASHA(1, 8).check_against(6), r"^scheduler.max_epochs must be equal to child.epochs \(6\), got 8"),
    (lambda: ASHA(2, 8).check_against(8, budget_epochs=1),
     r"^search.epoch_budget must be an integer >= one child's first segment \(scheduler.min_epochs=2 epochs\), got 1 \("),
    (lambda: scheduler_from_config({"name": "asha", "min_epochs": 9}, child_epochs=8),
     r"^scheduler.min_epochs must be <= the epochs of a whole child \(8: child.epochs, or the evaluator's max_epochs\), got 9"),
    (lambda: scheduler_from_config({"name": "asha", "min_epochs": 1, "eta": 3}, child_epochs=8),
     r"^unknown scheduler setting\(s\) \['eta'\] for asha"),
    (lambda: scheduler_from_config({"name": "sha", "min_epochs": 1}, child_epochs=8),
     r"^scheduler.name must be one of \['none', 'asha', 'hyperband'\], got 'sha'"),
])
def test_bad_settings_fail_in_one_line(make, message):
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_scheduler_from_config_builds_each_kind():
    assert scheduler_from_config(None, 8) is None and scheduler_from_config({"name": "none"}, 8) is None
    asha = scheduler_from_config({"name": "asha", "min_epochs": 1, "reduction_factor": 2}, child_epochs=8)
    assert type(asha) is ASHA and asha.rungs() == [1, 2, 4] and asha.max_epochs == 8
    hyperband = scheduler_from_config({"_target_": "x", "name": "hyperband", "min_epochs": 1, "brackets": 2}, 8)
    assert type(hyperband) is Hyperband and hyperband.brackets == 2


def test_bad_reports_fail_in_one_line():
    scheduler = ASHA(1, 9, 3)
    scheduler.report(0, 1, 0.9)
    scheduler.report(0, 2, 0.9)
    for args, message in [
        ((0, 2, 0.9), r"^trial 0: epoch must be in 3..9 .*got 2$"),
        ((0, 10, 0.9), r"^trial 0: epoch must be in 3..9 .*got 10$"),
        ((0, 3.0, 0.9), r"^trial 0: epoch must be an integer, got 3.0$"),
        ((0, 3, "0.9"), r"^trial 0: value must be a finite number, got '0.9' at epoch 3"),
        ((0, 4, 0.9), r"^trial 0: report epoch 3 \(a rung\) before epoch 4$"),
        ((0, 3, float("nan")), r"^trial 0: value must be a finite number, got nan at epoch 3"),
        (("a", 1, 0.5), r"^trial_id must be an integer, got 'a'$"),
    ]:
        with pytest.raises(ValueError, match=message):
            scheduler.report(*args)
    assert scheduler.report(np.int64(1), np.int64(1), np.float32(0.95))  # NumPy and torch numbers are fine
    assert not scheduler.report(2, 1, torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"^trial 2 already stopped after epoch 1"):
        scheduler.report(2, 2, 0.5)
    with pytest.raises(ValueError, match=r"^trial 7 has no reports yet$"):
        scheduler.status(7)
    assert scheduler.trial_ids() == [0, 1, 2]  # refused reports left nothing behind


def synthetic_curves(rng: random.Random, num: int, epochs: int, crossing: bool) -> list[list[float]]:
    """Noisy rising learning curves; with ``crossing``, learning speeds differ so much that curves cross."""
    curves = []
    for _ in range(num):
        final = rng.uniform(0.5, 0.95)
        speed = rng.uniform(0.5, 8.0) if crossing else 2.0  # epochs to cover 63% of the way up
        curves.append([final - (final - 0.1) * math.exp(-e / speed) + rng.gauss(0, 0.01) for e in range(1, epochs + 1)])
    return curves


def asha_on_synthetic_curves(crossing: bool, seeds: int = 40, num: int = 81) -> dict[str, float]:
    """ASHA(1, 27, 3) over ``num`` curves per seed, against training children fully on the same epochs.

    Returns:
        ``best_kept``: how often its completed children include the best of all it saw; ``near_best_kept``:
        include one within 0.01 of it (the epoch-1 noise); ``epochs``: its epochs over ``num`` full children;
        ``beats_full``: how often its best completed child beats the best of the first children trained fully
        on as many epochs in all (ties count half).
    """
    totals = dict.fromkeys(("best_kept", "near_best_kept", "epochs", "beats_full"), 0.0)
    for seed in range(seeds):
        curves = synthetic_curves(random.Random(seed), num, 27, crossing)
        scheduler = ASHA(1, 27, 3)
        for trial, curve in enumerate(curves):
            for epoch, value in enumerate(curve, 1):
                if not scheduler.report(trial, epoch, value):
                    break
        finals = [curve[-1] for curve in curves]
        kept = max(finals[t] for t in range(num) if scheduler.status(t) == "completed")
        epochs = sum(scheduler.epochs_trained(t) for t in range(num))
        full = max(finals[:max(1, epochs // 27)])
        totals["best_kept"] += kept == max(finals)
        totals["near_best_kept"] += kept >= max(finals) - 0.01
        totals["epochs"] += epochs / (num * 27)
        totals["beats_full"] += (kept > full) + 0.5 * (kept == full)
    return {key: total / seeds for key, total in totals.items()}


def test_asha_keeps_the_best_child_of_synthetic_curves():
    monotone = asha_on_synthetic_curves(crossing=False)
    crossing = asha_on_synthetic_curves(crossing=True)
    # about 1 in 9 children complete: a scheduler that stopped blindly would keep the best about that often
    assert monotone["epochs"] < 0.25 and crossing["epochs"] < 0.25
    # measured: monotone 0.85 / 0.925 / 0.86, crossing 0.45 / 0.6 / 0.84 (best kept / near best kept / beats full)
    assert monotone["best_kept"] >= 0.6 and monotone["near_best_kept"] >= 0.8
    assert crossing["best_kept"] >= 0.3 and crossing["near_best_kept"] >= 0.45
    assert monotone["beats_full"] >= 0.7 and crossing["beats_full"] >= 0.7
