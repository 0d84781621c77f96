"""A small evaluator that implements the Fidelity protocol, for the early-stopping tests.

:class:`CurveEvaluator` is a real :class:`~cellsearch.evaluators.Evaluator` with ``max_epochs``: a child's
learning curve is a deterministic function of its genotype (a final accuracy and a speed, so some curves
cross: a slow starter can finish high), it trains (looks up) a segment from the checkpoint it was given to
``fidelity.epochs``, and its checkpoint bytes encode the genotype and the epoch it reached, which the next
segment checks. It counts the epochs it trained, so a test can check the compute a search spent.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from cellsearch.evaluators.base import EpochPoint, EvalResult, Evaluator, Fidelity
from cellsearch.search.executors import Executor, LocalExecutor
from cellsearch.search.fidelity import ChildSegments
from cellsearch.search.loop import SearchLoop
from cellsearch.search.objectives import Objective
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.schedulers import scheduler_from_config
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.strategies import build_strategy

SPACE = SearchSpace(num_blocks=2)
ASHA_CONFIG = {"name": "asha", "min_epochs": 1, "reduction_factor": 3}
STRATEGY_SETTINGS = {"evolution": {"population_size": 4, "sample_size": 2}, "random": {},
                     "ppo": {"update_every": 3, "hidden_size": 8}}


def accuracy(genotype: Genotype, epoch: int) -> float:
    """The child's validation accuracy after ``epoch`` epochs: final * (1 - exp(-speed * epoch))."""
    digest = int(hashlib.sha256(genotype.key().encode()).hexdigest()[:12], 16)
    final = 0.3 + 0.6 * (digest % 1000) / 1000
    speed = 0.15 + 1.5 * ((digest // 1000) % 1000) / 1000
    return final * (1.0 - math.exp(-speed * epoch))


class CurveEvaluator(Evaluator):
    """Children whose curves come from their genotypes; ``evaluate(..., fidelity=...)`` trains a segment."""

    name = "curves"
    metrics = ("val_accuracy", "params")

    def __init__(self, max_epochs: int = 9, fail_trials: tuple[int, ...] = (), seconds_per_epoch: float = 0.0) -> None:
        self.max_epochs = max_epochs
        self.seconds_per_epoch = seconds_per_epoch  # a slow child, for a test that kills the search mid-segment
        self.fail_trials = fail_trials  # these children diverge in their second segment (or at once without one)
        self.epochs_trained = 0  # in this process
        self.calls: list[tuple[int, int | None, int]] = []  # (trial_id, fidelity epochs, epoch it started from)

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0,
                 fidelity: Fidelity | None = None) -> EvalResult:
        target = self.max_epochs if fidelity is None else fidelity.epochs
        start = 0
        if fidelity is not None and fidelity.checkpoint is not None:
            state = json.loads(fidelity.checkpoint.decode())
            if state["key"] != genotype.key():
                raise ValueError(f"trial {trial_id}: the checkpoint is another child's")
            start = state["epoch"]
        if not start < target <= self.max_epochs:
            raise ValueError(f"trial {trial_id}: cannot train from epoch {start} to {target}")
        self.calls.append((trial_id, None if fidelity is None else target, start))
        if trial_id in self.fail_trials and (start > 0 or fidelity is None):
            return EvalResult("failed", {}, 0.01, "ChildDiverged: loss became NaN")
        self.epochs_trained += target - start
        time.sleep(self.seconds_per_epoch * (target - start))
        curve = [EpochPoint(e, accuracy(genotype, e), 1.0 / e, 0.01 * e, 0.01 * e) for e in range(start + 1, target + 1)]
        checkpoint = json.dumps({"key": genotype.key(), "epoch": target}).encode() if target < self.max_epochs else None
        params = int(hashlib.sha256(genotype.key().encode()).hexdigest()[:6], 16) % 100000
        return EvalResult("ok", {"val_accuracy": accuracy(genotype, target), "params": params}, 0.01 * (target - start),
                          curve=curve, checkpoint=checkpoint)


def search(run_dir: Path, evaluator: CurveEvaluator, scheduler: dict | None = ASHA_CONFIG, budget: int = 12,
           epoch_budget: int | None = None, strategy: str = "evolution", objective: Objective | None = None,
           executor: Executor | None = None, prejudge: Callable[[], PreJudger] | None = None) -> list:
    """Run (or resume) a search in ``run_dir`` (``prejudge`` makes its pre-judger); return its rows as (trial, status,
    epochs, reward, genotype key)."""
    with TrialStore(run_dir / "trials.db") as store:
        segments = ChildSegments(scheduler_from_config(scheduler, evaluator.max_epochs), evaluator.max_epochs,
                                 epoch_budget, store, run_dir)
        strategy_ = build_strategy(strategy, SPACE, seed=3, **STRATEGY_SETTINGS[strategy])
        SearchLoop(strategy_, executor or LocalExecutor(evaluator), store, run_dir, budget, objective=objective,
                   prejudge=prejudge() if prejudge else None, segments=segments).run()
        return rows_of(store)


def rows_of(store: TrialStore) -> list:
    """A store's rows as (trial, status, epochs, reward, genotype key), by trial."""
    return sorted((r.trial_id, r.status, r.epochs, r.reward, r.genotype.key()) for r in store.rows())
