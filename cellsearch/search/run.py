"""A search from the Hydra config: the one dispatch above the ask/tell loop and the DARTS driver.

:func:`run_search` locks the run directory and picks the driver by what the configured search
declares: a search config with ``drives_own_loop`` (DARTS, :mod:`cellsearch.search.darts`) runs
itself; any other builds a strategy, an evaluator, an objective and an executor and runs
:class:`~cellsearch.search.loop.SearchLoop`. What happens around the loop follows what the evaluator
declares too: one that needs its state in this process (``needs_in_process_executor``) is refused
with another executor, and one whose estimates are a cheap guess (``trains_finalists``) has the best
cells trained stand-alone at the end (:mod:`cellsearch.search.final`).
"""
from __future__ import annotations

import inspect
import logging
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from cellsearch.data import as_data_config, describe_dataset
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.latency import device_for
from cellsearch.search.atomic import write_failure
from cellsearch.search.darts import run_darts
from cellsearch.search.executors import LocalExecutor
from cellsearch.search.export import export_cells, export_paths
from cellsearch.search.fidelity import ChildSegments, check_epoch_budget
from cellsearch.search.final import finish_oneshot_search
from cellsearch.search.front import published_costs
from cellsearch.search.lock import lock_run_dir
from cellsearch.search.live import search_observers
from cellsearch.search.loop import SearchLoop, check_budget
from cellsearch.search.report import report
from cellsearch.search.schedulers import ASHA, scheduler_from_config
from cellsearch.search.resume import write_run_config
from cellsearch.search.settings import (RUN_OPTIONS, SETTINGS_FILE, check_settings, check_version,
                                        search_settings)
from cellsearch.search.store import TRIALS_FILE, TrialStore
from cellsearch.space.networks import has_auxiliary_head
from cellsearch.space.spaces import space_from_settings
from cellsearch.validation import ConfigError, integer

__all__ = ["build_from_config", "record_device", "run_search"]

log = logging.getLogger("cellsearch.search.loop")  # the search's log lines keep the name they always had

DEVICE_FILE = "device.txt"


def run_search(cfg: DictConfig) -> Any:
    """Run or resume the search that ``cfg`` describes in ``cfg.run_dir``; write the summary and plots.
    The run directory is locked first: a second search on it is refused (RunDirBusy)."""
    with lock_run_dir(cfg.run_dir, "search"):
        try:
            if getattr(_search_class(cfg), "drives_own_loop", False):
                return run_darts(cfg)
            return _run_loop(cfg)
        except (OSError, sqlite3.Error) as err:  # a full disk: one line, the directory stays resumable
            failure = write_failure(err, cfg.run_dir)
            if failure is err:
                raise
            raise failure from err


def _search_class(cfg: DictConfig) -> Any:
    """What ``search._target_`` names (None if it names nothing: building the strategy then says why)."""
    try:
        return get_object(str(cfg.search.get("_target_")))
    except Exception:  # hydra raises its own errors for a missing module or name
        return None


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


def _run_loop(cfg: DictConfig) -> Any:
    """An ask/tell search: build its parts, run the loop in ``cfg.run_dir``, report, and export if asked."""
    check_budget(cfg.search.budget)
    integer(cfg.seed, "seed", 0)
    if cfg.export.name:  # fail now, not after the search
        export_paths(cfg.export.name, cfg.export.top_k, cfg.export.dir, cfg.export.overwrite)
    settings = search_settings(cfg)
    space = space_from_settings(settings["space"])  # GenotypeError (one line) for bad space settings
    search_node = {k: v for k, v in cfg.search.items() if k not in RUN_OPTIONS}
    strategy = build_from_config("search", search_node, space=space, seed=cfg.seed)
    child, data = as_child_config(cfg.child), as_data_config(cfg.data)
    if child.auxiliary_weight > 0 and not has_auxiliary_head(space.sample(random.Random(0))):
        raise ConfigError(f"child.auxiliary_weight={child.auxiliary_weight:g} trains an auxiliary head, which the "
                          f"networks of space={space.name} do not have: set child.auxiliary_weight=0")
    evaluator = build_from_config("evaluator", cfg.evaluator, child=child, data=data, space=space)
    objective = build_from_config("objective", cfg.objective)
    objective.check(evaluator.metrics)
    scheduler, full_epochs, epoch_budget = _early_stopping(cfg, evaluator, child.epochs)
    prejudge = build_from_config("prejudge", cfg.prejudge, child=child, data=data, seed=cfg.seed) \
        if cfg.get("prejudge") else None
    observers = search_observers(cfg, Path(cfg.run_dir), evaluator)  # live.*: checked before anything is written
    # The executor checks the evaluator's settings (child, data, the dataset) before anything trains.
    executor = build_from_config("executor", cfg.executor, evaluator=evaluator, seed=cfg.seed)
    if getattr(evaluator, "needs_in_process_executor", False) and not isinstance(executor, LocalExecutor):
        executor.close()
        raise ConfigError(f"the {getattr(evaluator, 'name', 'configured')} evaluator keeps its state in this "
                          f"process: use executor=local")
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
        check_version(run_dir)  # before the store is opened (and perhaps migrated) by a release that cannot read it
        with open_run_store(run_dir) as store:
            check_settings(run_dir, settings)  # recorded once the store exists: see open_run_store
            write_run_config(cfg, run_dir)
            record_device(evaluator, run_dir)
            log.info("search: %s on %s, budget %d children, %d in flight; run dir %s", name, data.name,
                     cfg.search.budget, executor.capacity, run_dir)
            segments = ChildSegments(scheduler, full_epochs, epoch_budget, store, run_dir) \
                if scheduler is not None or epoch_budget is not None else None
            summary = SearchLoop(strategy, executor, store, run_dir, cfg.search.budget, objective, prejudge,
                                 rebuild_state=bool(cfg.search.get("rebuild_state", False)),
                                 observers=observers, segments=segments).run()
            metric = objective.metric or ("params" if "params" in evaluator.metrics else None)
            published = published_costs(metric, child, describe_dataset(data), device_for(child.accelerator)) \
                if metric and space.name == "nasnet" else {}  # published NASNet cells at the child's N and F
            report(summary, store.rows(), store.best(5), title=f"{name} on {data.name}", metric=metric,
                   published=published, notes=[prejudge.summary(store)] if prejudge else [])
            if getattr(evaluator, "trains_finalists", False):  # name the best cell on stand-alone accuracy
                finish_oneshot_search(evaluator, store.rows(), run_dir, cfg.seed)
    finally:
        executor.close()
    if cfg.export.name:
        export_cells(run_dir, cfg.export.name, cfg.export.top_k, cfg.export.dir, cfg.export.overwrite)
    return summary


def _early_stopping(cfg: DictConfig, evaluator: Any, child_epochs: int) -> tuple[ASHA | None, int, int | None]:
    """The scheduler (None: ``scheduler=none``), a whole child's epochs and ``search.epoch_budget``, checked against
    the evaluator; ConfigError in one line."""
    node = cfg.get("scheduler")
    config = None if node is None else {str(k): v for k, v in node.items()}
    max_epochs = getattr(evaluator, "max_epochs", None)
    if config is not None and config.get("name", "none") != "none" and max_epochs is None:
        raise ConfigError(f"scheduler={config.get('name')} trains children in segments, which the "
                          f"{getattr(evaluator, 'name', type(evaluator).__name__)} evaluator cannot (its max_epochs is "
                          f"None): use scheduler=none, or an evaluator that supports it (train: stand-alone training; "
                          f"table with a table that has learning curves; landscape)")
    full_epochs = max_epochs if max_epochs is not None else child_epochs
    scheduler = scheduler_from_config(config, full_epochs)
    first = scheduler.min_epochs if scheduler is not None else full_epochs
    what = "scheduler.min_epochs" if scheduler is not None else "a whole child without a scheduler"
    epoch_budget = check_epoch_budget(cfg.search.get("epoch_budget"), first, what)
    return scheduler, full_epochs, epoch_budget


def open_run_store(run_dir: Path) -> TrialStore:
    """The trial store of ``run_dir``; refused with one line when the directory holds a search whose store is gone.

    A new search creates its store before it records its settings, so a directory with settings and no
    store lost it (deleted, moved), and starting afresh there would drop its children without a word."""
    path = run_dir / TRIALS_FILE
    if (run_dir / SETTINGS_FILE).is_file() and not path.exists():
        raise ConfigError(f"{run_dir} holds a search ({SETTINGS_FILE}) but no {TRIALS_FILE}, which kept its children "
                          f"and strategy state: restore {TRIALS_FILE} from a backup (with {TRIALS_FILE}-wal if there "
                          f"is one), or start a new run directory")
    return TrialStore(path)


def record_device(evaluator: Any, run_dir: Path) -> None:
    """Append the device this start evaluates on to ``run_dir/device.txt`` (latency is measured there)."""
    name = getattr(evaluator, "device_name", None)
    if callable(name):
        with open(run_dir / DEVICE_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {name()}\n")
