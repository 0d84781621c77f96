"""Early stopping in the search loop: children trained rung to rung, stopped children, the epoch budget, and
exact resume after a crash at any point (cellsearch.search.fidelity).

The children are :class:`fidelity_helpers.CurveEvaluator`'s: learning curves computed from the genotype, with
checkpoints that say where a child stopped, so a whole search takes well under a second.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellsearch.evaluators.base import Fidelity
from cellsearch.evaluators.child_config import ChildConfig
from cellsearch.search.executors import PoolExecutor
from cellsearch.search.fidelity import CHECKPOINT_DIR
from cellsearch.search.objectives import ConstrainedObjective
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.report import Progress
from cellsearch.search.schedulers import ASHA
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies import build_strategy
from fidelity_helpers import ASHA_CONFIG, CurveEvaluator, accuracy, search

SPACE = SearchSpace(num_blocks=2)


class Crash(BaseException):
    """Stands in for the process dying (kill -9): nothing in the loop catches it."""


class CrashingEvaluator(CurveEvaluator):
    """Dies in the middle of its ``crash_at``-th evaluation (a segment that never returns)."""

    def __init__(self, crash_at: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crash_at = crash_at
        self.num_calls = 0

    def evaluate(self, genotype, trial_id=0, seed=0, fidelity=None):
        self.num_calls += 1
        if self.num_calls == self.crash_at:
            raise Crash
        return super().evaluate(genotype, trial_id, seed, fidelity)


def test_asha_trains_children_rung_to_rung_and_stops_the_bad_ones(tmp_path):
    evaluator = CurveEvaluator()
    rows = search(tmp_path, evaluator, budget=20, strategy="random")
    assert len(rows) == 20 and {status for _, status, *_ in rows} == {"ok", "stopped"}
    assert {epochs for _, status, epochs, *_ in rows if status == "stopped"} <= {1, 3}
    assert all(epochs == 9 for _, status, epochs, *_ in rows if status == "ok")
    # every epoch trained once: each segment went on from the checkpoint of the one before
    assert evaluator.epochs_trained == sum(epochs for _, _, epochs, *_ in rows) < 20 * 9
    for trial_id, _, epochs, reward, _ in rows:
        calls = [(target, start) for t, target, start in evaluator.calls if t == trial_id]
        assert calls == [(t, s) for t, s in [(1, 0), (3, 1), (9, 3)] if s < epochs]
    with TrialStore(tmp_path / "trials.db") as store:
        by_id = {r.trial_id: r for r in store.rows()}
        for trial_id, curve in store.curves().items():  # the whole curve, and the reward: its last accuracy
            assert [p.epoch for p in curve] == list(range(1, by_id[trial_id].epochs + 1))
            assert by_id[trial_id].reward == pytest.approx(accuracy(by_id[trial_id].genotype, by_id[trial_id].epochs))
        # the stored reports, replayed, give the decisions the search made
        replayed = ASHA(1, 9, 3)
        replayed.replay(store.scheduler_reports())
        assert {t: replayed.status(t) for t in by_id} == {t: {"ok": "completed"}.get(r.status, r.status)
                                                          for t, r in by_id.items()}
        best = store.best(1)[0]
        assert best.status == "ok" and best.reward == max(r.reward for r in by_id.values() if r.status == "ok")
    assert not list((tmp_path / CHECKPOINT_DIR).iterdir())  # every child ended: no checkpoint left


def test_without_a_scheduler_children_are_evaluated_without_fidelity_as_before(tmp_path):
    evaluator = CurveEvaluator()
    rows = search(tmp_path, evaluator, scheduler=None, budget=4, epoch_budget=30)
    assert [(status, epochs) for _, status, epochs, *_ in rows] == [("ok", 9)] * 3  # 3 x 9 epochs fit 30, 4 do not
    assert [target for _, target, _ in evaluator.calls] == [None] * 3
    with TrialStore(tmp_path / "trials.db") as store:
        assert store.scheduler_reports() == [] and len(store.curves()) == 3


@pytest.mark.parametrize("scheduler", [ASHA_CONFIG, {"name": "hyperband", "min_epochs": 1, "reduction_factor": 3}])
def test_the_epoch_budget_bounds_the_compute(tmp_path, scheduler):
    evaluator = CurveEvaluator()
    rows = search(tmp_path, evaluator, scheduler=scheduler, budget=100, epoch_budget=40)
    assert evaluator.epochs_trained == sum(epochs for _, _, epochs, *_ in rows)
    assert 40 - 9 < evaluator.epochs_trained <= 40  # it stopped only when the next segment did not fit
    assert len(rows) > 40 // 9  # more children than without a scheduler at the same compute


def test_a_failed_segment_records_a_failed_child_and_the_search_goes_on(tmp_path):
    evaluator = CurveEvaluator(fail_trials=tuple(range(12)))
    rows = search(tmp_path, evaluator, budget=12, strategy="random")
    continued = [r for r in rows if r[2] != 1 or r[1] == "failed"]
    assert all(status == "failed" and reward is None for _, status, _, reward, _ in continued if status != "stopped")
    assert {status for _, status, *_ in rows} <= {"failed", "stopped"} and any(r[1] == "failed" for r in rows)
    assert len(evaluator.calls) == sum(1 + (status == "failed") for _, status, *_ in rows)  # never retried


def test_the_rank_rule_passes_through_the_objective(tmp_path):
    objective = ConstrainedObjective(metric="params", target=50000)
    rows = search(tmp_path, CurveEvaluator(), scheduler={**ASHA_CONFIG, "reward_rule": "rank"}, budget=10,
                  objective=objective)
    with TrialStore(tmp_path / "trials.db") as store:
        for row in store.rows():
            factor = (row.params / 50000) ** -0.07
            assert row.reward / factor <= 1.0 and row.val_accuracy == pytest.approx(accuracy(row.genotype, row.epochs))
    assert len(rows) == 10


def kill_and_resume(run_dir: Path, crash_points: list[int], **kwargs) -> list:
    """Run the search, crashing it in its ``crash_points``-th evaluations (counted from each start); then finish."""
    for crash_at in crash_points:
        with pytest.raises(Crash):
            search(run_dir, CrashingEvaluator(crash_at), **kwargs)
    return search(run_dir, CrashingEvaluator(), **kwargs)


@pytest.mark.parametrize("strategy", ["evolution", pytest.param("ppo", marks=pytest.mark.slow)])  # ppo: ~20 s
def test_a_search_killed_mid_rung_resumes_to_the_same_decisions(tmp_path, strategy):
    kwargs = dict(strategy=strategy, budget=14, epoch_budget=60)
    whole = search(tmp_path / "whole", CurveEvaluator(), **kwargs)
    resumed = kill_and_resume(tmp_path / "killed", [2, 3, 5, 4, 7], **kwargs)
    assert resumed == whole
    with TrialStore(tmp_path / "whole" / "trials.db") as a, TrialStore(tmp_path / "killed" / "trials.db") as b:
        assert [e[1:] for e in a.events()] == [e[1:] for e in b.events()]  # the strategy saw the same, in order
        assert a.scheduler_reports() == b.scheduler_reports()
        assert a.snapshot() == b.snapshot()


@pytest.mark.slow  # a subprocess that imports torch, killed and resumed: ~15 s
def test_a_search_killed_with_sigkill_mid_segment_resumes_to_the_same_rows(tmp_path):
    whole = search(tmp_path / "whole", CurveEvaluator(), budget=10, epoch_budget=50)
    run_dir = tmp_path / "killed"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
              f"from fidelity_helpers import CurveEvaluator, search; "
              f"search(Path({str(run_dir)!r}), CurveEvaluator(seconds_per_epoch=0.3), budget=10, epoch_budget=50)")
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # kill it once a few segments are committed
        try:
            reports = sqlite3.connect(run_dir / "trials.db").execute("SELECT COUNT(*) FROM curves").fetchone()[0]
        except sqlite3.Error:
            reports = 0
        if reports >= 5:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait(30) == -signal.SIGKILL, "the search ended before it could be killed"
    assert search(run_dir, CurveEvaluator(), budget=10, epoch_budget=50) == whole


def judge() -> PreJudger:
    """A pre-judger by parameter count (no data read) that also audits one passed-over candidate."""
    return PreJudger(ChildConfig(cells_per_stage=1, channels=4, accelerator="cpu"),
                     {"name": "synthetic", "synthetic_train_size": 100, "synthetic_test_size": 20, "image_size": 8},
                     score="params", candidates=3, audit=1, batch_size=8)


def test_a_prejudged_search_with_a_scheduler_resumes_to_the_same_rows(tmp_path):
    whole = search(tmp_path / "whole", CurveEvaluator(), budget=8, prejudge=judge)
    assert kill_and_resume(tmp_path / "killed", [2, 5], budget=8, prejudge=judge) == whole
    with TrialStore(tmp_path / "killed" / "trials.db") as store:
        assert {r.role for r in store.rows()} == {"search", "audit"} and any(r.stopped for r in store.rows())


def crashed_in_store_then_resumed(tmp_path, monkeypatch, method: str, crash_on_call: int):
    """The search killed inside ``TrialStore.<method>``'s ``crash_on_call``-th call, then run again: its rows."""
    original, calls = getattr(TrialStore, method), iter(range(1, 1000))

    def crashing(self, *args, **kwargs):
        if next(calls) == crash_on_call:
            raise Crash
        return original(self, *args, **kwargs)
    monkeypatch.setattr(TrialStore, method, crashing)
    with pytest.raises(Crash):
        search(tmp_path / "killed", CurveEvaluator(), budget=8)
    monkeypatch.setattr(TrialStore, method, original)
    return search(tmp_path / "killed", CurveEvaluator(), budget=8)


def test_a_crash_between_checkpoint_and_commit_resumes_from_the_committed_rung(tmp_path, monkeypatch):
    whole = search(tmp_path / "whole", CurveEvaluator(), budget=8)
    # the third segment's points are never committed
    assert crashed_in_store_then_resumed(tmp_path, monkeypatch, "add_points", crash_on_call=3) == whole


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_a_crash_while_a_child_is_recorded_leaves_its_last_segment_to_train_again(tmp_path, monkeypatch, crash_at):
    whole = search(tmp_path / "whole", CurveEvaluator(), budget=8)
    # inside the row's transaction: its last segment's points go with it
    assert crashed_in_store_then_resumed(tmp_path, monkeypatch, "add", crash_on_call=crash_at) == whole


def test_a_missing_checkpoint_trains_the_child_again_to_the_same_point(tmp_path):
    whole = search(tmp_path / "whole", CurveEvaluator(), budget=8)
    run_dir = tmp_path / "killed"
    with pytest.raises(Crash):
        search(run_dir, CrashingEvaluator(crash_at=2), budget=8)  # trial 0 dies after its first rung
    for path in (run_dir / CHECKPOINT_DIR).iterdir():
        path.unlink()
    evaluator = CrashingEvaluator()
    assert search(run_dir, evaluator, budget=8) == whole
    assert evaluator.calls[0] == (0, 3, 0)  # from scratch to its next rung


@pytest.mark.slow  # starts a worker process that imports torch: ~20 s on a loaded 2-core machine
def test_the_pool_executor_trains_segments(tmp_path):
    evaluator = CurveEvaluator()
    with PoolExecutor(evaluator, num_workers=1) as pool:
        pool.submit(0, build_strategy("random", SPACE).ask().genotype, Fidelity(3))
        (trial_id, first), = pool.wait()
        assert first.ok and [p.epoch for p in first.curve] == [1, 2, 3] and first.checkpoint is not None
        rows = search(tmp_path, evaluator, budget=6, executor=pool)
    assert {r[1] for r in rows} <= {"ok", "stopped"} and len(rows) == 6


def test_a_stopped_child_says_so_in_the_progress_line(tmp_path):
    search(tmp_path, CurveEvaluator(), budget=6, strategy="random")
    with TrialStore(tmp_path / "trials.db") as store:
        stopped = next(r for r in store.rows() if r.stopped)
    line = Progress(6, 0, 0.0, max_epochs=9).record(stopped, None)
    assert f"trial {stopped.trial_id} stopped at epoch {stopped.epochs} of 9, val {stopped.val_accuracy:.4f}, " \
           f"reward {stopped.reward:.4f}" in line


@pytest.mark.slow  # starts a local Ray cluster
def test_the_ray_executor_trains_segments(tmp_path):
    import fidelity_helpers
    import ray.cloudpickle
    from cellsearch.search.executors import RayExecutor
    ray.cloudpickle.register_pickle_by_value(fidelity_helpers)  # Ray's workers do not see tests/ on their path
    evaluator = CurveEvaluator()
    with RayExecutor(evaluator, num_workers=1, num_cpus=1) as ray_executor:
        rows = search(tmp_path, evaluator, budget=6, executor=ray_executor)
    assert {r[1] for r in rows} <= {"ok", "stopped"} and len(rows) == 6
    assert rows == search(tmp_path / "local", CurveEvaluator(), budget=6)  # the same decisions as in this process
