"""Early stopping end to end: ``python train.py`` with a scheduler over the table with learning curves (seconds,
no training) makes the decisions the benchmark's driver makes, and a real Lightning search with ASHA stops
children, keeps their curves and resumes to a larger budget without touching what it stored."""
from pathlib import Path

import pytest

from cellsearch.search.schedulers import ASHA
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy
from test_train import cli
from benchmark_modules import load_benchmark


def _rows(run_dir):
    with TrialStore(Path(run_dir) / "trials.db") as store:
        rows = sorted(store.rows(), key=lambda r: r.trial_id)
        curves = {row.trial_id: store.curve(row.trial_id) for row in rows}
    return rows, curves


@pytest.mark.slow  # 8 s: the same decisions as the driver (test_fidelity_loop covers the loop fast)
def test_a_table_search_with_asha_decides_as_the_benchmark_driver_does(tmp_path):
    seed, budget = 3, 30
    result = cli("experiment=testbed_curves", "search=random", f"search.budget={budget}", "scheduler=asha",
                 f"seed={seed}", f"run_dir={tmp_path / 'run'}", "live.tensorboard=false")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "stopped early" in result.stdout
    rows, curves = _rows(tmp_path / "run")

    bench = load_benchmark("bench_fidelity")  # one worker: propose, train rung by rung, tell what the scheduler says
    problem = bench.make_problem("table", seed)
    strategy = build_strategy("random", problem.space, seed=seed, **bench.preset("random"))
    scheduler = ASHA(min_epochs=1, max_epochs=9, reduction_factor=3)
    expected = []
    for _ in range(budget):
        proposal = strategy.ask()
        value, trained, _ = bench.train_child(problem.evaluator, proposal.genotype, proposal.trial_id, seed, scheduler)
        strategy.tell(proposal.trial_id, scheduler.reward(proposal.trial_id))
        expected.append((proposal.trial_id, proposal.genotype.key(), trained, round(value, 6)))

    assert [(r.trial_id, r.genotype.key(), r.epochs, round(r.val_accuracy, 6)) for r in rows] == expected
    assert {r.status for r in rows} == {"ok", "stopped"}
    assert all(r.epochs == 9 for r in rows if r.status == "ok") and all(r.epochs in (1, 3) for r in rows if r.stopped)
    for row in rows:  # every epoch it trained, once, ending at the value its row holds
        assert [p.epoch for p in curves[row.trial_id]] == list(range(1, row.epochs + 1))
        assert curves[row.trial_id][-1].val_accuracy == pytest.approx(row.val_accuracy)


def test_an_epoch_budget_is_never_passed_and_buys_more_children_with_a_scheduler(tmp_path):
    # Without a scheduler 90 child-epochs buy 10 children of 9 epochs; with one, more children in the same 90.
    result = cli("experiment=testbed_curves", "search=random", "search.budget=1000", "search.epoch_budget=90",
                 "scheduler=hyperband", f"run_dir={tmp_path / 'run'}", "live.tensorboard=false")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "search.epoch_budget reached" in result.stdout
    rows, _ = _rows(tmp_path / "run")
    assert sum(r.epochs for r in rows) <= 90 and len(rows) > 10


@pytest.mark.slow  # real Lightning training of tiny children on digits, twice (a minute on two loaded cores)
def test_a_real_search_with_asha_stops_children_and_resumes_to_a_larger_budget(tmp_path):
    run_dir = tmp_path / "run"
    common = ["experiment=quick_cpu", "search=random", "scheduler=asha", "child.epochs=3", f"run_dir={run_dir}",
              "live.tensorboard=false"]
    first = cli(*common, "search.budget=5")
    assert first.returncode == 0, first.stdout[-3000:]
    before, curves_before = _rows(run_dir)
    assert any(r.stopped for r in before) and any(r.status == "ok" and r.epochs == 3 for r in before)
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))  # every child ended: no checkpoint left

    second = cli(*common, "search.budget=8")
    assert second.returncode == 0, second.stdout[-3000:]
    after, curves_after = _rows(run_dir)
    assert len(after) == 8
    assert [(r.trial_id, r.status, r.epochs, r.val_accuracy, r.created_at) for r in after[:5]] == \
        [(r.trial_id, r.status, r.epochs, r.val_accuracy, r.created_at) for r in before]
    assert all(curves_after[t] == curves_before[t] for t in curves_before)
