"""Observers of the search loop (cellsearch.search.events) and the strategies' own signals."""
import logging

import pytest

from cellsearch.search.events import Observers, SearchObserver
from cellsearch.search.loop import SearchLoop
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy
from test_search import SPACE, STRATEGY_SETTINGS, InlineExecutor


class Recorder(SearchObserver):
    """Keeps every event it is told."""

    def __init__(self):
        self.events = []

    def search_started(self, start):
        self.events.append(("started", start))

    def trial_finished(self, row, best, signals):
        self.events.append(("trial", row, best, signals))

    def search_finished(self, summary, rows):
        self.events.append(("finished", summary, rows))

    def close(self):
        self.events.append(("closed",))


class Broken(SearchObserver):
    """Fails on the second child (as a full disk would), then keeps failing."""

    def __init__(self):
        self.calls = 0
        self.closed = 0

    def trial_finished(self, row, best, signals):
        self.calls += 1
        if self.calls >= 2:
            raise OSError(28, "No space left on device")

    def close(self):
        self.closed += 1


def run(run_dir, budget, observers, name="ppo"):
    strategy = build_strategy(name, SPACE, seed=0, **STRATEGY_SETTINGS[name])
    with TrialStore(run_dir / "trials.db") as store:
        return SearchLoop(strategy, InlineExecutor(capacity=2), store, run_dir, budget, observers=observers).run()


def test_observers_see_the_start_every_child_and_the_end(tmp_path):
    recorder = Recorder()
    summary = run(tmp_path, 7, [recorder])
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["started"] + ["trial"] * 7 + ["finished", "closed"]
    start = recorder.events[0][1]
    assert (start.budget, start.strategy, start.objective, start.metric, start.rows) == (7, "ppo", "accuracy", None, ())
    trials = [e for e in recorder.events if e[0] == "trial"]
    assert sorted(row.trial_id for _, row, _, _ in trials) == list(range(7))
    best_so_far = None
    for _, row, best, _ in trials:  # best: the best successful child finished so far, this one included
        if row.ok:
            best_so_far = max(best_so_far or 0.0, row.reward)
        assert (best and best.reward) == best_so_far
    assert "baseline" in trials[0][3] and "loss" in trials[-1][3]  # update_every=3: updates by the 7th child
    assert recorder.events[-2][1] is summary and len(recorder.events[-2][2]) == 7
    # Resumed with a larger budget: the start lists the children already done.
    recorder = Recorder()
    run(tmp_path, 9, [recorder])
    assert [r.trial_id for r in recorder.events[0][1].rows] == [t[1].trial_id for t in trials]
    assert sum(e[0] == "trial" for e in recorder.events) == 2


def test_a_failing_observer_is_one_warning_and_the_search_goes_on(tmp_path, caplog):
    broken, recorder = Broken(), Recorder()
    with caplog.at_level(logging.WARNING, logger="cellsearch.search.events"):
        summary = run(tmp_path, 6, [broken, recorder])
    assert summary.num_trials == 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert "Broken failed in trial_finished" in warnings[0].getMessage()
    assert broken.calls == 2 and broken.closed == 1  # not called again; closed once
    assert sum(e[0] == "trial" for e in recorder.events) == 6  # the others still hear everything


def test_observers_are_closed_when_the_search_is_interrupted(tmp_path):
    class Interrupting(SearchObserver):
        def trial_finished(self, row, best, signals):
            raise KeyboardInterrupt  # not an observer's failure: it stops the search as Ctrl-C does

    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, 5, [Interrupting(), recorder])
    assert recorder.events[-1] == ("closed",)


def test_observers_notify_skips_nothing_when_all_work():
    first, second = Recorder(), Recorder()
    observers = Observers([first, second])
    observers.notify("search_finished", "summary", [])
    observers.close()
    assert first.events == second.events == [("finished", "summary", []), ("closed",)]
    assert observers.active == []


@pytest.mark.parametrize("name, keys", [
    ("random", set()),
    ("evolution", {"population", "population_mean_reward", "population_best_reward"}),
    ("ppo", {"updates", "baseline", "loss", "entropy"}),
    ("reinforce", {"updates", "baseline", "loss", "entropy"}),
    ("progressive", {"stage", "stage_blocks", "surrogate_error"}),
])
def test_strategies_report_their_signals(name, keys):
    strategy = build_strategy(name, SPACE, seed=0, **STRATEGY_SETTINGS[name])
    for _ in range(16):
        proposal = strategy.ask()
        strategy.tell(proposal.trial_id, (proposal.trial_id % 5) / 5)
    signals = strategy.signals()
    assert set(signals) == keys and all(isinstance(v, float) for v in signals.values())
    if name == "evolution":  # population_size=4: the 4 latest children, trials 12-15: 0.4, 0.6, 0.8, 0.0
        assert signals["population"] == 4 and signals["population_best_reward"] == pytest.approx(0.8)
        assert signals["population_mean_reward"] == pytest.approx(0.45)
