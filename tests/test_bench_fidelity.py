"""benchmarks/bench_fidelity.py's driver: a child trains rung by rung until the scheduler stops it, compute is
counted in child-epochs, the named cell is the best complete child, and a tiny run prints every table."""
import random

import pytest

from cellsearch.search.schedulers import ASHA
from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_fidelity")


@pytest.mark.parametrize("problem", ["table", "additive:crossing"])
def test_children_train_rung_by_rung_and_stop_where_the_scheduler_says(bench, problem):
    problem = bench.make_problem(problem, seed=0)
    scheduler = ASHA(1, 9, 3)
    rng_cells = [problem.space.sample(random.Random(i)) for i in range(12)]
    for trial_id, genotype in enumerate(rng_cells):
        value, trained, final = bench.train_child(problem.evaluator, genotype, trial_id, 0, scheduler)
        assert trained == scheduler.epochs_trained(trial_id) in (1, 3, 9)
        assert (final is not None) == (scheduler.status(trial_id) == "completed") and value == scheduler.curve(trial_id)[-1][1]
    assert {scheduler.status(t) for t in range(12)} == {"stopped", "completed"}


def test_a_search_spends_its_budget_in_child_epochs_and_names_its_best_complete_child(bench):
    problem = bench.make_problem("table", seed=0)
    full = bench.run_search(problem, "random", bench.preset("random"), "none", "last", 0, budget=90)
    early = bench.run_search(problem, "random", bench.preset("random"), "asha", "last", 0, budget=90)
    assert full.children == 10 and full.compute == list(range(9, 91, 9))
    assert early.compute[-1] >= 90 > early.compute[-2] and early.children > full.children
    assert {b - a for a, b in zip(early.compute, early.compute[1:])} <= {1, 3, 9}
    # random search proposes the same cells with the same seed: the full search's named cell is among
    # the early search's complete ones only if it survived, so the early one names no better cell than exists
    assert 0 < early.at(90) <= problem.best and 0 < full.at(90) <= problem.best
    assert early.reach(full.at(90)) is None or early.reach(full.at(90)) <= early.compute[-1]


def test_a_tiny_run_prints_the_quality_and_rule_tables(bench, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    bench.main(["--problems", "table", "additive:crossing", "--seeds", "1", "--budget", "18", "--rules",
                "additive:saturating", "--rule-seeds", "1", "--plot", str(plot)])
    out = capsys.readouterr().out
    for row in ("| ppo | none | ", "| ppo | asha | ", "| random | hyperband | ", "| random, 10x | none | "):
        assert out.count(row) == 2
    assert "| additive:saturating: asha, reward at 18 | last | rank | scaled | best rule |" in out
    assert all(f"| {s} | " in out for s in ("reinforce", "evolution", "progressive"))
    assert plot.stat().st_size > 0
