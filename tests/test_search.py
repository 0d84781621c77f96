"""The search loop: budget, out-of-order results, failures, and exact resumption after a crash.

These tests drive :class:`SearchLoop` with the real strategies and an in-process executor whose
children are scored by a cheap deterministic function of the genotype, so a crash can be injected
at every step. The end-to-end tests with real child training and real executors are in test_train.py.
"""
import random
import sqlite3

import pytest
import yaml

from cellsearch.evaluators import EpochPoint, EvalResult
from cellsearch.space.genotype import SearchSpace, load_genotype
from cellsearch.progress import format_seconds
from cellsearch.search.loop import BEST_CELL_FILE, SearchLoop
from cellsearch.search.report import summary_table
from cellsearch.search.settings import SETTINGS_FILE, ResumeError, check_settings
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy

SPACE = SearchSpace(num_blocks=2)
STRATEGY_SETTINGS = {
    "random": {},
    "evolution": {"population_size": 4, "sample_size": 2},
    "ppo": {"update_every": 3, "hidden_size": 16},
    "reinforce": {"update_every": 3, "hidden_size": 8},
    "progressive": {"beam_size": 2, "num_initial": 4, "num_expansions": 8, "surrogate_steps": 5},
}


class Crash(BaseException):
    """Stands in for the process dying: nothing in the loop catches it."""


def score(trial_id: int, genotype) -> EvalResult:
    """A cheap child: reward = share of separable convolutions (+ a little genotype-dependent noise), reached
    over two epochs; every fifth trial fails."""
    if trial_id % 5 == 3:
        return EvalResult("failed", {}, 0.01, "ChildDiverged: loss became NaN")
    ops = [op for cell in (genotype.normal, genotype.reduce) for block in cell.blocks for op in block.ops]
    reward = sum(op.startswith("sep_conv") for op in ops) / len(ops) + random.Random(genotype.key()).random() / 100
    curve = [EpochPoint(1, reward / 2, 2.0, 0.005, 0.004), EpochPoint(2, reward, 1.0, 0.01, 0.008)]
    return EvalResult("ok", {"val_accuracy": reward, "params": 1000 + trial_id, "mult_adds": 50000}, 0.01,
                      curve=curve)


class InlineExecutor:
    """Trains children in the calling process; returns them last-submitted-first (out of order) and
    can crash after a number of results or submissions."""

    def __init__(self, capacity: int = 1, crash_after_results: int | None = None,
                 crash_after_submits: int | None = None):
        self.capacity = capacity
        self.queue: list = []
        self.trained: list[int] = []  # trial ids whose result was returned
        self.submitted: list[int] = []
        self.crash_after_results = crash_after_results
        self.crash_after_submits = crash_after_submits
        self.closed = False

    def submit(self, trial_id, genotype) -> None:
        if self.crash_after_submits is not None and len(self.submitted) == self.crash_after_submits:
            raise Crash()
        self.submitted.append(trial_id)
        self.queue.append((trial_id, genotype))

    def wait(self, timeout=None):
        if self.crash_after_results is not None and len(self.trained) == self.crash_after_results:
            raise Crash()
        trial_id, genotype = self.queue.pop()
        self.trained.append(trial_id)
        return [(trial_id, score(trial_id, genotype))]

    def num_running(self) -> int:
        return len(self.queue)

    def close(self) -> None:
        self.closed = True


class CrashAfterCommit(TrialStore):
    """Dies right after writing the n-th row, before the strategy is told: in the loop's transaction, so
    neither the row nor the tell is committed."""

    def __init__(self, path, crash_at: int):
        super().__init__(path)
        self.crash_at = crash_at

    def add(self, trial_id, genotype, result, reward, role="search"):
        row = super().add(trial_id, genotype, result, reward, role)
        if len(self) == self.crash_at:
            raise Crash()
        return row


def search(run_dir, strategy_name="random", budget=10, seed=0, store=None, **executor_kw):
    strategy = build_strategy(strategy_name, SPACE, seed=seed, **STRATEGY_SETTINGS[strategy_name])
    executor = InlineExecutor(**executor_kw)
    store = store if store is not None else TrialStore(run_dir / "trials.db")
    try:
        summary = SearchLoop(strategy, executor, store, run_dir, budget).run()
    finally:
        store.close()
    return summary, strategy, executor


def trials(run_dir):
    with TrialStore(run_dir / "trials.db") as store:
        return {r.trial_id: (r.genotype.key(), r.status, r.reward) for r in store.rows()}


@pytest.mark.parametrize("name", sorted(STRATEGY_SETTINGS))
def test_search_runs_to_the_budget_with_results_out_of_order(tmp_path, name):
    summary, strategy, executor = search(tmp_path, name, budget=12, capacity=3)
    rows = trials(tmp_path)
    assert sorted(rows) == list(range(12)) and summary.num_trials == 12
    assert sum(status == "failed" for _, status, _ in rows.values()) == 2  # trials 3 and 8
    assert executor.trained != sorted(executor.trained)  # results really came back out of order
    assert strategy.pending() == [] and sorted(executor.trained) == list(range(12))
    best = max((r for r in rows.items() if r[1][1] == "ok"), key=lambda r: r[1][2])
    assert summary.best.trial_id == best[0]
    assert load_genotype(tmp_path / BEST_CELL_FILE).key() == best[1][0]


@pytest.mark.parametrize("name", ["random", "ppo", "evolution", "progressive"])
@pytest.mark.parametrize("crash", [{"crash_after_results": 4}, {"crash_after_submits": 5},
                                   {"crash_at": 6}])
def test_a_crashed_search_resumes_exactly(tmp_path, name, crash):
    """Crash while children are in flight, between ask and submit, or between a row and its tell: the
    resumed search trains no finished child again, ends at the budget, and matches an uninterrupted run."""
    reference, _, _ = search(tmp_path / "reference", name, budget=10, capacity=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    crash = dict(crash)  # parametrize shares the dict between cases
    crash_at = crash.pop("crash_at", None)
    store = CrashAfterCommit(run_dir / "trials.db", crash_at) if crash_at else None
    with pytest.raises(Crash):
        search(run_dir, name, budget=10, capacity=2, store=store, **crash)
    finished_before = set(trials(run_dir))
    assert 0 < len(finished_before) < 10
    summary, strategy, executor = search(run_dir, name, budget=10, capacity=2)
    assert not finished_before & set(executor.trained), "a finished child was trained again"
    assert trials(run_dir) == trials(tmp_path / "reference")  # same cells, same rewards, same ids
    assert summary.num_trials == 10 and summary.num_trained == 10 - len(finished_before)
    assert strategy.pending() == []


def test_a_childs_curve_commits_in_the_transaction_of_its_row(tmp_path):
    """A crash inside the loop's transaction (after the row, before the tell) leaves neither row nor curve;
    the resumed search stores every child's curve as its evaluator returned it."""
    with pytest.raises(Crash):
        search(tmp_path, budget=6, store=CrashAfterCommit(tmp_path / "trials.db", crash_at=3))
    with TrialStore(tmp_path / "trials.db") as store:
        assert sorted(trials(tmp_path)) == [0, 1] and sorted(store.curves()) == [0, 1]
    search(tmp_path, budget=6)
    with TrialStore(tmp_path / "trials.db") as store:
        rows = store.rows()
        assert len(rows) == 6 and sorted(store.curves()) == [r.trial_id for r in rows if r.ok]  # trial 3 failed
        for row in rows:
            assert store.curve(row.trial_id) == score(row.trial_id, row.genotype).curve


def test_resume_with_a_larger_or_smaller_budget(tmp_path):
    search(tmp_path, budget=4)
    summary, _, executor = search(tmp_path, budget=3)  # already beyond: nothing to do
    assert executor.trained == [] and summary.num_trials == 4
    summary, _, executor = search(tmp_path, budget=7)
    assert sorted(executor.trained) == [4, 5, 6] and sorted(trials(tmp_path)) == list(range(7))


def test_resume_refuses_another_strategy_or_a_missing_state(tmp_path):
    search(tmp_path, "random", budget=3)
    with pytest.raises(ResumeError, match="saved by the 'random' strategy, not 'ppo'"):
        search(tmp_path, "ppo", budget=5)
    with sqlite3.connect(tmp_path / "trials.db") as db:  # the snapshot damaged: rebuild_state is the way out
        db.execute("UPDATE strategy_snapshots SET state = x'0074'")
    with pytest.raises(ResumeError, match=r"cannot read the strategy state in .*trials.db .*search.rebuild_state=true"):
        search(tmp_path, "random", budget=5)
    with sqlite3.connect(tmp_path / "trials.db") as db:
        db.execute("DELETE FROM strategy_snapshots")
    with pytest.raises(ResumeError, match=r"holds 3 children but no strategy state .*search.rebuild_state=true"):
        search(tmp_path, "random", budget=5)


def test_budget_must_be_positive(tmp_path):
    for budget in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="search.budget must be an integer >= 1"):
            search(tmp_path, budget=budget)


def test_settings_are_recorded_and_checked_on_resume(tmp_path):
    settings = {"seed": 0, "child": {"epochs": 2, "channels": 8}, "search": {"lr": 0.1}}
    check_settings(tmp_path, settings)
    assert yaml.safe_load((tmp_path / SETTINGS_FILE).read_text()) == settings
    check_settings(tmp_path, settings)  # same settings: fine
    changed = {"seed": 0, "child": {"epochs": 3, "channels": 8}, "search": {"lr": 0.1, "clip": 0.2}}
    with pytest.raises(ResumeError, match=r"child.epochs: 2 -> 3; search.clip: '<unset>' -> 0.2"):
        check_settings(tmp_path, changed)


def test_format_seconds():
    assert [format_seconds(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_summary_table_lists_the_best_cells(tmp_path):
    search(tmp_path, budget=6)
    with TrialStore(tmp_path / "trials.db") as store:
        table = summary_table(store.best(3)).splitlines()
        best = store.best(1)[0]
    assert table[0].split() == ["rank", "trial", "reward", "val_acc", "params", "mult-adds", "train", "s"]
    assert table[2].split()[:3] == ["1", str(best.trial_id), f"{best.reward:.4f}"]
    assert len(table) == 2 + 3
