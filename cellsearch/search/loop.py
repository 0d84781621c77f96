"""The search loop: a strategy proposes cells, an executor trains them, the trial store keeps them.

The loop keeps ``executor.capacity`` children in flight. Each proposal is recorded in the strategy
state (saved atomically) before it is submitted; each result is committed to the trial store before
the strategy learns from it, and the state is saved again. So whenever the process dies, the run
directory holds every finished child, and a rerun resumes: proposals whose rows are in the store
are told, the others are trained again under the same trial id, and the search stops once the
store holds ``budget`` children.

Files in the run directory: ``trials.db`` (see :mod:`cellsearch.search.store`), ``strategy_state.pt``,
``search_settings.yaml`` (what must not change on resume), ``run_config.yaml`` (the whole configuration,
for ``resume=``; see :mod:`cellsearch.search.resume`), ``device.txt`` (what evaluates, per start),
``best_cell.yaml`` (kept up to date), and at the end ``rewards.png``, ``best_cell.png`` and
``pareto.png`` (accuracy against a cost metric; see :mod:`cellsearch.search.front`).
"""
from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cellsearch.data import ConfigError, as_data_config, describe_dataset
from cellsearch.evaluators.base import EvalResult
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.latency import device_for
from cellsearch.search.executors import Executor, LocalExecutor
from cellsearch.search.export import export_cells, export_paths
from cellsearch.space.genotype import Genotype
from cellsearch.search.front import front_lines, front_rows, published_costs
from cellsearch.search.plots import plot_genotype, plot_pareto, plot_rewards
from cellsearch.space.profile import format_count
from cellsearch.search.objectives import AccuracyObjective, Objective
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.resume import fill_added_settings, write_run_config
from cellsearch.search.store import TRIALS_FILE, TrialRow, TrialStore
from cellsearch.strategies.base import Proposal, Strategy, as_search_space

log = logging.getLogger(__name__)

STATE_FILE = "strategy_state.pt"
BEST_CELL_FILE = "best_cell.yaml"
SETTINGS_FILE = "search_settings.yaml"
REWARDS_PLOT = "rewards.png"
DEVICE_FILE = "device.txt"
PARETO_PLOT = "pareto.png"
BEST_CELL_PLOT = "best_cell.png"
# Settings that may change when a search resumes: where things run and are logged, not what a reward means.
RESUMABLE_CHANGES = {
    "data": ("root", "download", "num_workers", "loader"),
    "child": ("accelerator", "devices", "strategy", "logger", "log_dir", "log_every_n_steps", "enable_progress_bar"),
}


class ResumeError(ValueError):
    """A run directory that cannot be resumed with the given settings."""


@dataclass
class SearchSummary:
    """What a call of :meth:`SearchLoop.run` did."""

    run_dir: Path
    budget: int
    num_trials: int       # children in the store at the end
    num_trained: int      # children trained by this call (the rest came from the store)
    seconds: float        # wall time of this call
    best: TrialRow | None


def check_budget(budget: object) -> None:
    """Raise ValueError unless ``budget`` is a positive number of children."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"search.budget must be a positive number of children, got {budget!r}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` over ``path`` in one step, so ``path`` is never partial."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_strategy_state(strategy: Strategy, path: Path) -> None:
    """Write ``strategy.state_dict()`` atomically."""
    state = strategy.state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_strategy_state(strategy: Strategy, path: Path) -> None:
    """Restore a strategy from :func:`save_strategy_state` (plain tensors and containers only)."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise ResumeError(f"cannot read the strategy state {path}: {err}") from None
    try:
        strategy.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise ResumeError(f"cannot resume from {path}: {err}") from None


def check_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in a new run directory, or check that a resumed run uses the same ones."""
    path = run_dir / SETTINGS_FILE
    if not path.exists():
        atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(settings, sort_keys=True)))
        return
    saved = yaml.safe_load(path.read_text())
    old, new = fill_added_settings(_flatten(saved)), fill_added_settings(_flatten(settings))
    changed = [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        raise ResumeError(
            f"{run_dir} holds a search with other settings ({'; '.join(changed)}); resume it with the "
            f"settings in {path}, or start a new run directory"
        )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


class SearchLoop:
    """Runs (or resumes) one search in ``run_dir`` until the store holds ``budget`` children."""

    def __init__(self, strategy: Strategy, executor: Executor, store: TrialStore, run_dir: "str | Path",
                 budget: int, objective: Objective | None = None, prejudge: PreJudger | None = None) -> None:
        check_budget(budget)
        self.strategy = strategy
        self.prejudge = prejudge
        self.executor = executor
        self.objective = objective or AccuracyObjective()
        self.store = store
        self.run_dir = Path(run_dir)
        self.budget = budget
        self.state_path = self.run_dir / STATE_FILE
        self.best: TrialRow | None = None

    # --- one step at a time ---------------------------------------------------------------------
    def _save_state(self) -> None:
        save_strategy_state(self.strategy, self.state_path)

    def _resume(self) -> list[Proposal]:
        """Restore the strategy; tell it the children it missed; return those to train again."""
        num_stored = len(self.store)
        if self.state_path.exists():
            load_strategy_state(self.strategy, self.state_path)
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
        if num_stored:
            log.info("resuming %s: %d of %d children done, %d to train again%s", self.run_dir, num_stored,
                     self.budget, len(to_retrain), f", best reward {self.best.reward:.4f}" if self.best else "")
        return to_retrain

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
        if row.ok and row.reward is not None and (self.best is None or row.reward > self.best.reward):
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
        start = time.perf_counter()
        queue = self._resume()
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
        except KeyboardInterrupt:
            log.warning("interrupted with %d children in flight; run again with the same run directory "
                        "(hydra.run.dir=%s) to resume", len(in_flight), self.run_dir)
            raise
        return SearchSummary(run_dir=self.run_dir, budget=self.budget, num_trials=progress.num_done,
                             num_trained=progress.num_trained, seconds=time.perf_counter() - start, best=self.best)


class Progress:
    """Counts finished children; one log line per child: count, reward, best so far, time per child, ETA."""

    def __init__(self, budget: int, num_done: int, start: float) -> None:
        self.budget = budget
        self.num_done = num_done
        self.num_trained = 0
        self.start = start

    def record(self, row: TrialRow, best: TrialRow | None) -> str:
        """Count ``row`` and return its progress line."""
        self.num_done += 1
        self.num_trained += 1
        per_child = (time.perf_counter() - self.start) / self.num_trained
        outcome = f"reward {row.reward:.4f}" if row.ok and row.reward is not None else \
            f"FAILED ({row.error.splitlines()[0] if row.error else 'no reason given'})"
        best_text = f"best {best.reward:.4f} (trial {best.trial_id})" if best else "best -"
        eta = format_seconds(per_child * (self.budget - self.num_done))
        width = len(str(self.budget))
        return (f"child {self.num_done:>{width}}/{self.budget} | trial {row.trial_id:>{width}} {outcome} | "
                f"{best_text} | {per_child:.1f} s/child (train {row.seconds:.1f} s) | ETA {eta}")


def format_seconds(seconds: float) -> str:
    """Compact duration such as ``42s``, ``3m05s`` or ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def write_best_cell(row: TrialRow, run_dir: Path) -> Path:
    """Write the best cell so far to ``run_dir/best_cell.yaml`` (atomically)."""
    genotype = Genotype(row.genotype.normal, row.genotype.reduce, name="",
                        source=f"cellsearch search in {run_dir}: trial {row.trial_id}, reward {row.reward:.4f}")
    path = run_dir / BEST_CELL_FILE
    atomic_write(path, lambda tmp: tmp.write_text(genotype.to_yaml()))
    return path


def summary_table(rows: list[TrialRow]) -> str:
    """Ranked rows (the best cells) as a text table."""
    header = (f"{'rank':>4}  {'trial':>5}  {'reward':>7}  {'val_acc':>7}  {'params':>9}  {'mult-adds':>10}  "
              f"{'train s':>7}")
    lines = [header, "-" * len(header)]
    for rank, r in enumerate(rows, 1):
        accuracy = "-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}"
        lines.append(f"{rank:>4}  {r.trial_id:>5}  {r.reward:>7.4f}  {accuracy:>7}  {format_count(r.params):>9}  "
                     f"{format_count(r.mult_adds):>10}  {r.seconds:>7.1f}")
    return "\n".join(lines)


# --- a search from the Hydra config ---------------------------------------------------------------

def search_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define what a search's rewards mean (checked when it resumes)."""
    settings = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    chosen: dict[str, Any] = {"seed": settings["seed"], "space": settings["space"]}
    for group in ("evaluator", "objective", "prejudge"):  # run dirs from before them: see ADDED_SETTINGS
        chosen[group] = settings.get(group)
    chosen["search"] = {k: v for k, v in settings["search"].items() if k != "budget"}
    for group, free in RESUMABLE_CHANGES.items():
        chosen[group] = {k: v for k, v in settings[group].items() if k not in free}
    return chosen


def build_from_config(what: str, node: "DictConfig | dict[str, Any]", **objects: Any) -> Any:
    """``node``'s ``_target_`` called with its plain values and those of ``objects`` (a space, a child
    config, an evaluator) that it takes; a value it rejects raises ConfigError naming the group ``what``."""
    factory = instantiate(node, _partial_=True, _convert_="all")
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        objects = {k: v for k, v in objects.items() if k in accepted}
    try:
        return factory(**objects)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{what}: {err}") from err


def run_search(cfg: DictConfig) -> SearchSummary:
    """Run or resume the search that ``cfg`` describes in ``cfg.run_dir``; write the summary and plots."""
    check_budget(cfg.search.budget)
    if cfg.export.name:  # fail now, not after the search
        export_paths(cfg.export.name, cfg.export.top_k, cfg.export.dir, cfg.export.overwrite)
    settings = search_settings(cfg)
    space = as_search_space(settings["space"])
    search_node = {k: v for k, v in cfg.search.items() if k != "budget"}
    strategy = build_from_config("search", search_node, space=space, seed=cfg.seed)
    child, data = as_child_config(cfg.child), as_data_config(cfg.data)
    evaluator = build_from_config("evaluator", cfg.evaluator, child=child, data=data)
    objective = build_from_config("objective", cfg.objective)
    objective.check(evaluator.metrics)
    prejudge = build_from_config("prejudge", cfg.prejudge, child=child, data=data, seed=cfg.seed) \
        if cfg.get("prejudge") else None
    # The executor checks the evaluator's settings (child, data, the dataset) before anything trains.
    executor = build_from_config("executor", cfg.executor, evaluator=evaluator, seed=cfg.seed)
    if not isinstance(executor, LocalExecutor):
        # Children train in other processes that use the cores. The controller is a small LSTM; with several
        # threads it contends with them (measured on a busy 2-core machine: a PPO ask took 120 ms, not 5 ms).
        torch.set_num_threads(1)
    name = getattr(strategy, "name", type(strategy).__name__)
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_settings(run_dir, settings)
        write_run_config(cfg, run_dir)
        record_device(evaluator, run_dir)
        log.info("search: %s on %s, budget %d children, %d in flight; run dir %s", name, data.name,
                 cfg.search.budget, executor.capacity, run_dir)
        with TrialStore(run_dir / TRIALS_FILE) as store:
            summary = SearchLoop(strategy, executor, store, run_dir, cfg.search.budget, objective, prejudge).run()
            metric = objective.metric or ("params" if "params" in evaluator.metrics else None)
            published = published_costs(metric, child, describe_dataset(data), device_for(child.accelerator)) \
                if metric else {}
            report(summary, store.rows(), store.best(5), title=f"{name} on {data.name}", metric=metric,
                   published=published, notes=[prejudge.summary(store)] if prejudge else [])
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


def report(summary: SearchSummary, rows: list[TrialRow], top: list[TrialRow], title: str = "",
           metric: str | None = None, published: dict[str, float] | None = None, notes: list[str] = ()) -> None:
    """Log the summary, the table of the best cells and the front over accuracy and ``metric``; draw the
    reward curve, the best cell and ``pareto.png`` (with the ``published`` cells' costs)."""
    run_dir = summary.run_dir
    plot_rewards(rows, run_dir / REWARDS_PLOT, title=f"{title}: {len(rows)} children" if title else "")
    front_text = []
    if metric is not None:
        front = front_rows(rows, metric)
        plot_pareto(rows, front, metric, published or {}, run_dir / PARETO_PLOT, title=title)
        front_text = front_lines(rows, metric, published or {}) + [f"front plot: {run_dir / PARETO_PLOT}"]
    lines = [f"search done: {summary.num_trials}/{summary.budget} children ({sum(not r.ok for r in rows)} failed), "
             f"{summary.num_trained} trained in this run in {format_seconds(summary.seconds)}"]
    if summary.best is not None:
        plot_genotype(summary.best.genotype, run_dir / BEST_CELL_PLOT,
                      title=f"best cell: trial {summary.best.trial_id}, reward {summary.best.reward:.4f}")
        lines += [summary_table(top), f"best cell: {run_dir / BEST_CELL_FILE} (diagram {run_dir / BEST_CELL_PLOT})"]
    else:
        lines.append("no child succeeded: see the error column of trials.db")
    lines += front_text + list(notes)
    lines.append(f"trials: {run_dir / TRIALS_FILE}, reward curve: {run_dir / REWARDS_PLOT}")
    log.info("\n".join(lines))
