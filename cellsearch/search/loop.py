"""The search loop: a strategy proposes cells, an executor trains them, the trial store keeps them.

The loop keeps ``executor.capacity`` children in flight. Each proposal is stored in the strategy's
state (committed) before it is submitted; each result is committed to the trial store together
with the strategy's tell, in one transaction. So whenever the process dies, the run directory holds
every finished child and the state of the strategy that learned from exactly those, and a rerun
resumes: the proposals still pending are trained again under the same trial id, and the search
stops once the store holds ``budget`` children (or its ``epoch_budget`` of child-epochs is spent). With a
scheduler, children train in segments and may be stopped early: :mod:`cellsearch.search.fidelity`.

Files in the run directory: ``trials.db`` (the children and the strategy's state, see
:mod:`cellsearch.search.store` and :mod:`cellsearch.search.strategy_state`),
``search_settings.yaml`` (what must not change on resume), ``run_config.yaml`` (the whole configuration,
for ``resume=``; see :mod:`cellsearch.search.resume`), ``cellsearch_version.txt`` (the newest release
that wrote it; see :mod:`cellsearch.search.settings`), ``device.txt`` (what evaluates, per start),
``best_cell.yaml`` (kept up to date), ``checkpoints/`` (with a scheduler: children between segments),
``tensorboard/`` (the live view, an observer: see :mod:`cellsearch.search.events`), and at the end
``rewards.png``, ``best_cell.png`` and ``pareto.png`` (accuracy against a cost metric; see
:mod:`cellsearch.search.front`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from cellsearch.evaluators.base import EvalResult
from cellsearch.search.executors import Executor
from cellsearch.search.atomic import atomic_write
from cellsearch.search.events import Observers, SearchObserver, SearchStart
from cellsearch.search.fidelity import ChildSegments
from cellsearch.space.genotype import Genotype
from cellsearch.search.objectives import AccuracyObjective, Objective
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.report import (  # noqa: F401  (the plot names are re-exported for callers)
    BEST_CELL_FILE, BEST_CELL_PLOT, PARETO_PLOT, REWARDS_PLOT, Progress, SearchSummary)
from cellsearch.search.estimates import reward_text
from cellsearch.search.settings import ResumeError
from cellsearch.search.store import TrialRow, TrialStore
from cellsearch.search.strategy_state import StrategyState, StrategyStateError
from cellsearch.strategies.base import Proposal, Strategy
from cellsearch.validation import positive_int

log = logging.getLogger(__name__)


def check_budget(budget: object) -> None:
    """Raise ConfigError unless ``budget`` is a positive number of children."""
    positive_int(budget, "search.budget")


class SearchLoop:
    """Runs (or resumes) one search in ``run_dir`` until the store holds ``budget`` children."""

    def __init__(self, strategy: Strategy, executor: Executor, store: TrialStore, run_dir: "str | Path",
                 budget: int, objective: Objective | None = None, prejudge: PreJudger | None = None,
                 rebuild_state: bool = False, observers: Sequence[SearchObserver] = (),
                 segments: ChildSegments | None = None) -> None:
        check_budget(budget)
        self.strategy = strategy
        self.prejudge = prejudge
        self.executor = executor
        self.objective = objective or AccuracyObjective()
        self.store = store
        self.run_dir = Path(run_dir)
        self.budget = budget
        self.rebuild_state = rebuild_state
        self.state = StrategyState(store)
        self.best: TrialRow | None = None
        self.observers = Observers(observers)  # told what happens (cellsearch.search.events); never in the way
        # early stopping and the epoch budget (None: every child trained in one go, no epoch budget)
        self.segments = segments

    # --- one step at a time ---------------------------------------------------------------------
    def _save_state(self) -> None:
        """Store what the strategy did (a snapshot now and then) in the open transaction: cost per child stays flat."""
        self.state.save(self.strategy)

    def _resume(self) -> list[Proposal]:
        """Restore the strategy; tell it the children it missed; return those to train again."""
        num_stored = len(self.store)
        if self.rebuild_state:
            self._rebuild()
        elif self.state.exists():
            try:
                self.state.load(self.strategy)
            except StrategyStateError as err:
                raise ResumeError(f"{err}; run again with search.rebuild_state=true to rebuild the strategy from "
                                  f"the children {self.store.path} holds") from None
            self._check_store_holds_told()
        elif num_stored:
            raise ResumeError(f"{self.store.path} holds {num_stored} children but no strategy state (an older run "
                              f"directory whose strategy_state.pt was missing when it was upgraded); run again with "
                              f"search.rebuild_state=true to rebuild the strategy from those children")
        to_retrain = []
        for proposal in self.strategy.pending():
            row = self.store.get(proposal.trial_id)
            if row is None:
                to_retrain.append(proposal)
                continue
            if row.genotype != proposal.genotype:
                raise ResumeError(f"trial {proposal.trial_id} in {self.store.path} is not the cell the strategy "
                                  f"proposed under that id; the run directory mixes two searches")
            self.strategy.tell(proposal.trial_id, row.reward if row.ok else None)
            self._save_state()
        if self.prejudge is not None:  # audits in flight when the search stopped
            to_retrain += self.prejudge.resume(self.store)
        best = self.store.best(1)
        self.best = best[0] if best else None
        if self.best is not None:  # rewritten from the store: a damaged or stale copy is repaired
            write_best_cell(self.best, self.run_dir)
        if num_stored:
            log.info("resuming %s: %d of %d children done, %d to train again%s", self.run_dir, num_stored,
                     self.budget, len(to_retrain), f", best reward {self.best.reward:.4f}" if self.best else "")
        return to_retrain

    def _rebuild(self) -> None:
        """Rebuild the (fresh) strategy by replaying the stored children in trial order (search.rebuild_state)."""
        rows = sorted(self.store.rows(), key=lambda r: r.trial_id)
        with self.store.transaction():  # the old state goes only if the new one is stored
            self.state.clear()
            for row in rows:
                while self.strategy.num_asked < row.trial_id:  # proposed but never stored: a withdrawn placeholder
                    self.strategy.withdraw(self.strategy.ask().trial_id)
                self.strategy.add_trial(row.genotype, row.reward if row.ok else None)
            self.state.snapshot(self.strategy)
        log.warning("rebuilt the strategy state in %s from the %d children it holds", self.store.path, len(rows))

    def _check_store_holds_told(self) -> None:
        """Refuse a strategy state that learned from children the store no longer holds (rows deleted by hand)."""
        missing = [i for i in range(self.strategy.num_asked) if self.strategy.is_told(i) and i not in self.store]
        if missing:
            raise ResumeError(f"the strategy state in {self.store.path} learned from {len(missing)} finished children "
                              f"that its trials table does not hold (trials {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}): rows were deleted; restore it from a backup, or "
                              f"run with search.rebuild_state=true to go on from the children it holds")

    def _record(self, trial_id: int, genotype: Genotype, result: EvalResult) -> TrialRow:
        """Store the row, tell the strategy and store its state in one transaction; then update best_cell.yaml."""
        previous = [r.metrics for r in self.store.rows() if r.ok] if self.objective.uses_history else []
        audit = self.prejudge is not None and trial_id in self.prejudge.audit_ids
        role = "audit" if audit else "search"
        with self.store.transaction():
            if self.segments is None:
                reward = self.objective.reward(result, previous) if result.ok else None
                row = self.store.add(trial_id, genotype, result, reward, role=role)
            else:  # the objective's reward of what the scheduler makes of the child (its reward_rule)
                end = self.segments.ending(trial_id, result)
                reward = self.objective.reward(end.told, previous) if end.told.ok else None
                row = self.store.add(trial_id, genotype, end.result, reward, role=role, status=end.status,
                                     epochs=end.epochs, segmented=end.segmented)
                self.store.add_points(trial_id, end.points, end.first_seq)  # its last segment's, with its row
            if not audit:  # an audited candidate was withdrawn: the strategy does not learn from it
                self.strategy.tell(trial_id, row.reward if row.ok else None)
                self._save_state()
        if self.segments is not None:
            self.segments.ended(row)
        if self.prejudge is not None:
            self.prejudge.recorded(self.store)
        if row.beats(self.best):
            self.best = row
            write_best_cell(row, self.run_dir)
        return row

    def _propose(self, room: int) -> list[Proposal]:
        """The next proposals to evaluate: one from the strategy, or a pre-judged round (and its audit)."""
        if self.prejudge is None or not self.prejudge.active:
            proposal = self.strategy.ask()
            self._save_state()
            return [proposal]
        return [p for p, _ in self.prejudge.round(self.strategy, self.store, self.budget, room, self._save_state)]

    def _signals(self) -> dict[str, float]:
        """What the live view plots beside the rewards: the strategy's signals and the pre-judger's audit."""
        signals = dict(self.strategy.signals())
        if self.prejudge is not None:
            signals.update(self.prejudge.signals())
        if self.segments is not None:
            signals.update(self.segments.signals())
        return signals

    def _submit(self, trial_id: int, genotype: Genotype) -> None:
        """Submit a child's (first or resumed) segment; without a scheduler, the whole child as always."""
        fidelity = self.segments.start(trial_id) if self.segments is not None else None
        if fidelity is None:
            self.executor.submit(trial_id, genotype)
        else:
            self.executor.submit(trial_id, genotype, fidelity)

    def _room_for_new_child(self) -> bool:
        """Whether the epoch budget leaves room for the next child's first segment."""
        return self.segments is None or self.segments.room_for_child(self.strategy.num_asked)

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> SearchSummary:
        """Search until the store holds ``budget`` children (kill it any time; run again to resume)."""
        try:
            summary = self._search()
            if self.observers.active:
                self.observers.notify("search_finished", summary, self.store.rows())
            return summary
        finally:
            self.observers.close()

    def _started(self) -> SearchStart:
        return SearchStart(self.run_dir, self.budget, getattr(self.strategy, "name", ""), self.objective.name,
                           self.objective.metric, self.strategy.space, tuple(self.store.rows()))

    def _search(self) -> SearchSummary:
        start = time.perf_counter()
        queue = self._resume()
        if self.observers.active:
            self.observers.notify("search_started", self._started())
        in_flight: dict[int, Genotype] = {}
        progress = Progress(self.budget, len(self.store), start,
                            self.segments.full_epochs if self.segments is not None else None)
        try:
            while True:
                while (len(in_flight) < self.executor.capacity
                       and progress.num_done + len(in_flight) < self.budget):
                    if not queue:
                        if not self._room_for_new_child():
                            if not in_flight:
                                log.info("search.epoch_budget reached: %d of %d child-epochs spent, no room for "
                                         "another child", self.segments.spent, self.segments.epoch_budget)
                            break
                        queue = self._propose(self.budget - progress.num_done - len(in_flight))
                    proposal = queue.pop(0)
                    self._submit(proposal.trial_id, proposal.genotype)
                    in_flight[proposal.trial_id] = proposal.genotype
                if not in_flight:
                    break
                results = self.executor.wait()
                if not results:
                    raise RuntimeError(f"the executor returned nothing with {len(in_flight)} children in flight")
                for trial_id, result in results:
                    if trial_id not in in_flight:
                        raise RuntimeError(f"the executor returned trial {trial_id}, which is not in flight")
                    going_on = self.segments.returned(trial_id, result) if self.segments is not None else None
                    if going_on is not None:  # its next segment, at once: nothing waits for a rung to fill
                        self.executor.submit(trial_id, in_flight[trial_id], going_on)
                        continue
                    row = self._record(trial_id, in_flight.pop(trial_id), result)
                    log.info(progress.record(row, self.best))
                    if self.observers.active:
                        self.observers.notify("trial_finished", row, self.best, self._signals())
        except KeyboardInterrupt:
            log.warning("interrupted with %d children in flight; run again with the same run directory "
                        "(hydra.run.dir=%s) to resume", len(in_flight), self.run_dir)
            raise
        return SearchSummary(run_dir=self.run_dir, budget=self.budget, num_trials=progress.num_done,
                             num_trained=progress.num_trained, seconds=time.perf_counter() - start, best=self.best)


def write_best_cell(row: TrialRow, run_dir: Path) -> Path:
    """Write the best cell so far to ``run_dir/best_cell.yaml`` (atomically)."""
    genotype = replace(row.genotype, name="",  # a genotype of any search space
                       source=f"cellsearch search in {run_dir}: trial {row.trial_id}, {reward_text(row)}")
    path = run_dir / BEST_CELL_FILE
    atomic_write(path, lambda tmp: tmp.write_text(genotype.to_yaml()))
    return path

