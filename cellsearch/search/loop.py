"""The search loop: a strategy proposes cells, an executor trains them, the trial store keeps them.

The loop keeps ``executor.capacity`` children in flight. Each proposal is recorded in the strategy
state (journaled) before it is submitted; each result is committed to the trial store before
the strategy learns from it, and the state is saved again. So whenever the process dies, the run
directory holds every finished child, and a rerun resumes: proposals whose rows are in the store
are told, the others are trained again under the same trial id, and the search stops once the
store holds ``budget`` children.

Files in the run directory: ``trials.db`` (see :mod:`cellsearch.search.store`), ``strategy_state.pt``
and its journal ``strategy_state.pt.journal`` (see :mod:`cellsearch.search.strategy_state`),
``search_settings.yaml`` (what must not change on resume), ``run_config.yaml`` (the whole configuration,
for ``resume=``; see :mod:`cellsearch.search.resume`), ``device.txt`` (what evaluates, per start),
``best_cell.yaml`` (kept up to date), and at the end ``rewards.png``, ``best_cell.png`` and
``pareto.png`` (accuracy against a cost metric; see :mod:`cellsearch.search.front`).
"""
from __future__ import annotations

import inspect
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cellsearch.data import ConfigError, as_data_config, describe_dataset
from cellsearch.evaluators.base import EvalResult
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.latency import device_for
from cellsearch.search.executors import Executor, LocalExecutor
from cellsearch.search.atomic import atomic_write, write_failure
from cellsearch.search.events import Observers, SearchObserver, SearchStart
from cellsearch.search.export import export_cells, export_paths
from cellsearch.search.live import search_observers
from cellsearch.search.lock import lock_run_dir
from cellsearch.space.genotype import Genotype
from cellsearch.search.front import published_costs
from cellsearch.search.objectives import AccuracyObjective, Objective
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.resume import write_run_config
from cellsearch.search.report import (  # noqa: F401  (the plot names are re-exported for callers)
    BEST_CELL_FILE, BEST_CELL_PLOT, PARETO_PLOT, REWARDS_PLOT, Progress, SearchSummary, report)
from cellsearch.search.settings import RUN_OPTIONS, ResumeError, check_settings, search_settings
from cellsearch.search.store import TRIALS_FILE, TrialRow, TrialStore
from cellsearch.search.strategy_state import StateFileError, StrategyStateFiles
from cellsearch.strategies.base import Proposal, Strategy, as_search_space
from cellsearch.validation import integer, positive_int

log = logging.getLogger(__name__)

STATE_FILE = "strategy_state.pt"
DEVICE_FILE = "device.txt"


def check_budget(budget: object) -> None:
    """Raise ConfigError unless ``budget`` is a positive number of children."""
    positive_int(budget, "search.budget")


class SearchLoop:
    """Runs (or resumes) one search in ``run_dir`` until the store holds ``budget`` children."""

    def __init__(self, strategy: Strategy, executor: Executor, store: TrialStore, run_dir: "str | Path",
                 budget: int, objective: Objective | None = None, prejudge: PreJudger | None = None,
                 rebuild_state: bool = False, observers: Sequence[SearchObserver] = ()) -> None:
        check_budget(budget)
        self.strategy = strategy
        self.prejudge = prejudge
        self.executor = executor
        self.objective = objective or AccuracyObjective()
        self.store = store
        self.run_dir = Path(run_dir)
        self.budget = budget
        self.state_path = self.run_dir / STATE_FILE
        self.rebuild_state = rebuild_state
        self.state_files = StrategyStateFiles(self.state_path)
        self.best: TrialRow | None = None
        self.observers = Observers(observers)  # told what happens (cellsearch.search.events); never in the way

    # --- one step at a time ---------------------------------------------------------------------
    def _save_state(self) -> None:
        """Journal what the strategy did (a snapshot now and then): cost per child stays flat."""
        self.state_files.save(self.strategy)

    def _resume(self) -> list[Proposal]:
        """Restore the strategy; tell it the children it missed; return those to train again."""
        num_stored = len(self.store)
        if self.rebuild_state:
            self._rebuild()
        elif self.state_files.exists():
            try:
                self.state_files.load(self.strategy)
            except StateFileError as err:
                raise ResumeError(f"{err}; run again with search.rebuild_state=true to rebuild the strategy from "
                                  f"{TRIALS_FILE}") from None
            self._check_store_holds_told()
        elif num_stored:
            raise ResumeError(f"{self.store.path} holds {num_stored} children but {self.state_path} is missing, "
                              f"so the search cannot resume; start a new run directory")
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
        for row in rows:
            while self.strategy.num_asked < row.trial_id:  # proposed but never stored: a withdrawn placeholder
                self.strategy.withdraw(self.strategy.ask().trial_id)
            self.strategy.add_trial(row.genotype, row.reward if row.ok else None)
        self._save_state()
        log.warning("rebuilt the strategy state %s from the %d children in %s", self.state_path, len(rows),
                    self.store.path)

    def _check_store_holds_told(self) -> None:
        """Refuse a strategy state that learned from children the store does not hold (an emptied trials.db)."""
        missing = [i for i in range(self.strategy.num_asked) if self.strategy.is_told(i) and i not in self.store]
        if missing:
            raise ResumeError(f"{self.state_path} learned from {len(missing)} finished children that {self.store.path} "
                              f"does not hold (trials {missing[:5]}{'...' if len(missing) > 5 else ''}): it was "
                              f"emptied or replaced; restore it, or run with search.rebuild_state=true to go on "
                              f"from the children it holds")

    def _record(self, trial_id: int, genotype: Genotype, result: EvalResult) -> TrialRow:
        """Commit, then tell the strategy, then save its state, then update best_cell.yaml."""
        previous = [r.metrics for r in self.store.rows() if r.ok] if self.objective.uses_history else []
        reward = self.objective.reward(result, previous) if result.ok else None
        audit = self.prejudge is not None and trial_id in self.prejudge.audit_ids
        row = self.store.add(trial_id, genotype, result, reward, role="audit" if audit else "search")
        if not audit:  # an audited candidate was withdrawn: the strategy does not learn from it
            self.strategy.tell(trial_id, row.reward if row.ok else None)
            self._save_state()
        if self.prejudge is not None:
            self.prejudge.recorded(self.store)
        if row.ok and row.reward is not None and (self.best is None or (-row.reward, row.trial_id) < (
                -self.best.reward, self.best.trial_id)):  # ties: the earlier trial, as TrialStore.best ranks them
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
        progress = Progress(self.budget, len(self.store), start)
        try:
            while True:
                while (len(in_flight) < self.executor.capacity
                       and progress.num_done + len(in_flight) < self.budget):
                    if not queue:
                        queue = self._propose(self.budget - progress.num_done - len(in_flight))
                    proposal = queue.pop(0)
                    self.executor.submit(proposal.trial_id, proposal.genotype)
                    in_flight[proposal.trial_id] = proposal.genotype
                if not in_flight:
                    break
                results = self.executor.wait()
                if not results:
                    raise RuntimeError(f"the executor returned nothing with {len(in_flight)} children in flight")
                for trial_id, result in results:
                    if trial_id not in in_flight:
                        raise RuntimeError(f"the executor returned trial {trial_id}, which is not in flight")
                    row = self._record(trial_id, in_flight.pop(trial_id), result)
                    log.info(progress.record(row, self.best))
                    if self.observers.active:
                        self.observers.notify("trial_finished", row, self.best, self.strategy.signals())
        except KeyboardInterrupt:
            log.warning("interrupted with %d children in flight; run again with the same run directory "
                        "(hydra.run.dir=%s) to resume", len(in_flight), self.run_dir)
            raise
        finally:
            self.state_files.close()
        return SearchSummary(run_dir=self.run_dir, budget=self.budget, num_trials=progress.num_done,
                             num_trained=progress.num_trained, seconds=time.perf_counter() - start, best=self.best)


def write_best_cell(row: TrialRow, run_dir: Path) -> Path:
    """Write the best cell so far to ``run_dir/best_cell.yaml`` (atomically)."""
    genotype = Genotype(row.genotype.normal, row.genotype.reduce, name="",
                        source=f"cellsearch search in {run_dir}: trial {row.trial_id}, reward {row.reward:.4f}")
    path = run_dir / BEST_CELL_FILE
    atomic_write(path, lambda tmp: tmp.write_text(genotype.to_yaml()))
    return path


# --- a search from the Hydra config ---------------------------------------------------------------

def build_from_config(what: str, node: "DictConfig | dict[str, Any]", **objects: Any) -> Any:
    """``node``'s ``_target_`` called with its plain values and those of ``objects`` (a space, a child
    config, an evaluator) that it takes; a value it rejects raises ConfigError naming the group ``what``."""
    factory = instantiate(node, _partial_=True, _convert_="all")
    target = getattr(factory, "func", factory)
    accepted = inspect.signature(target).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(getattr(factory, "keywords", {})) - set(accepted))
        if unknown:
            settings = sorted(set(accepted) - set(objects) - {"self"})
            raise ConfigError(f"{what}.{unknown[0]} is not a setting of {target.__name__}; it takes {settings}")
        objects = {k: v for k, v in objects.items() if k in accepted}
    try:
        return factory(**objects)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{what}: {err}") from err


def run_search(cfg: DictConfig) -> Any:
    """Run or resume the search that ``cfg`` describes in ``cfg.run_dir``; write the summary and plots.
    The run directory is locked first: a second search on it is refused (RunDirBusy)."""
    with lock_run_dir(cfg.run_dir, "search"):
        try:
            return _run_search(cfg)
        except (OSError, sqlite3.Error) as err:  # a full disk: one line, the directory stays resumable
            failure = write_failure(err, cfg.run_dir)
            if failure is err:
                raise
            raise failure from err


def _run_search(cfg: DictConfig) -> Any:
    if cfg.search.get("_target_") == "cellsearch.search.darts.DartsConfig":  # search=darts: no ask/tell loop
        from cellsearch.search.darts import run_darts

        return run_darts(cfg)
    check_budget(cfg.search.budget)
    integer(cfg.seed, "seed", 0)
    if cfg.export.name:  # fail now, not after the search
        export_paths(cfg.export.name, cfg.export.top_k, cfg.export.dir, cfg.export.overwrite)
    settings = search_settings(cfg)
    space = as_search_space(settings["space"])
    search_node = {k: v for k, v in cfg.search.items() if k not in RUN_OPTIONS}
    strategy = build_from_config("search", search_node, space=space, seed=cfg.seed)
    child, data = as_child_config(cfg.child), as_data_config(cfg.data)
    evaluator = build_from_config("evaluator", cfg.evaluator, child=child, data=data, space=space)
    objective = build_from_config("objective", cfg.objective)
    objective.check(evaluator.metrics)
    prejudge = build_from_config("prejudge", cfg.prejudge, child=child, data=data, seed=cfg.seed) \
        if cfg.get("prejudge") else None
    observers = search_observers(cfg, Path(cfg.run_dir), evaluator)  # live.*: checked before anything is written
    # The executor checks the evaluator's settings (child, data, the dataset) before anything trains.
    executor = build_from_config("executor", cfg.executor, evaluator=evaluator, seed=cfg.seed)
    if getattr(evaluator, "name", "") == "oneshot" and not isinstance(executor, LocalExecutor):
        executor.close()
        raise ConfigError("the one-shot evaluator keeps its supernet in this process: use executor=local")
    if not isinstance(executor, LocalExecutor):
        # Children train in other processes that use the cores. The controller is a small LSTM; with several
        # threads it contends with them (measured on a busy 2-core machine: a PPO ask took 120 ms, not 5 ms).
        torch.set_num_threads(1)
    name = getattr(strategy, "name", type(strategy).__name__)
    needed, why = strategy.min_budget()
    if cfg.search.budget < needed:
        log.warning("search.budget=%d is too small for %s as configured: %s, so it needs at least %d children "
                    "to learn anything; raise search.budget or lower those settings", cfg.search.budget, name, why,
                    needed)
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_settings(run_dir, settings)
        write_run_config(cfg, run_dir)
        record_device(evaluator, run_dir)
        log.info("search: %s on %s, budget %d children, %d in flight; run dir %s", name, data.name,
                 cfg.search.budget, executor.capacity, run_dir)
        with TrialStore(run_dir / TRIALS_FILE) as store:
            summary = SearchLoop(strategy, executor, store, run_dir, cfg.search.budget, objective, prejudge,
                                 rebuild_state=bool(cfg.search.get("rebuild_state", False)),
                                 observers=observers).run()
            metric = objective.metric or ("params" if "params" in evaluator.metrics else None)
            published = published_costs(metric, child, describe_dataset(data), device_for(child.accelerator)) \
                if metric else {}
            report(summary, store.rows(), store.best(5), title=f"{name} on {data.name}", metric=metric,
                   published=published, notes=[prejudge.summary(store)] if prejudge else [])
            if getattr(evaluator, "name", "") == "oneshot":  # name the best cell on stand-alone accuracy
                from cellsearch.search.final import finish_oneshot_search

                finish_oneshot_search(evaluator, store.rows(), run_dir, cfg.seed)
    finally:
        executor.close()
    if cfg.export.name:
        export_cells(run_dir, cfg.export.name, cfg.export.top_k, cfg.export.dir, cfg.export.overwrite)
    return summary


def record_device(evaluator: Any, run_dir: Path) -> None:
    """Append the device this start evaluates on to ``run_dir/device.txt`` (latency is measured there)."""
    name = getattr(evaluator, "device_name", None)
    if callable(name):
        with open(run_dir / DEVICE_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {name()}\n")
