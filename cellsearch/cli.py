"""The ``cellsearch`` command: search for a cell, retrain it at full size, export the best cells.

    cellsearch                                     # PPO search on CIFAR-10 (search.budget children)
    cellsearch experiment=quick_cpu                # a few tiny children on digits, on a CPU
    cellsearch resume=<run dir> [search.budget=N]  # resume that search with its stored settings
    cellsearch task=export export.run=<run dir> export.name=my_cell   # into the export's run directory
    cellsearch task=export export.format=onnx export.run=<run dir>    # also torchscript, python, ...
    cellsearch task=retrain cell=<name or path>    # N=6, F=32, 600 epochs; weights for timm
    cellsearch -m search=ppo,random seed=0,1,2     # a sweep: one run directory per job

In a clone of the repository ``python train.py ...`` runs the same. The configuration ships inside the
package (``cellsearch.conf``, the repository's ``conf/``); ``cellsearch --help`` lists its groups.
Mistakes in it end the program with one line on stderr and exit status 2; set HYDRA_FULL_ERROR=1 for a
traceback. :func:`job` returns the number a Hydra sweeper optimises: the search's best reward, or the
retrained cell's test accuracy (``cellsearch -m hydra/sweeper=optuna ...``, with the ``optuna`` extra).

Importing this module loads Hydra but not torch: ``--help``, a bad override and a busy run directory are
answered before the task's modules (torch, Lightning, timm) are imported, in :func:`run`.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from cellsearch.config import expected_value  # (and registers the data and child schemas for hydra.main)
from cellsearch.search.atomic import RunDirWriteError
from cellsearch.search.lock import RunDirBusy, check_not_locked, is_main_rank
from cellsearch.search.settings import ResumeError
from cellsearch.space.genotype import GenotypeError
from cellsearch.validation import ConfigError

__all__ = ["USER_ERRORS", "error_message", "job", "main", "run", "task_value"]

log = logging.getLogger("cellsearch")

CONFIG_PATH = "pkg://cellsearch.conf"  # the repository's conf/, installed with the package
# Errors in what the user asked for: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, GenotypeError, ResumeError, RunDirBusy, RunDirWriteError, FileExistsError,
               NotADirectoryError, PermissionError, HydraException, OmegaConfBaseException)
_traceback_wanted = os.environ.get("HYDRA_FULL_ERROR") == "1"  # read before main() sets it
BUG_HINT = ("error: an unexpected {name} (the traceback is above): not a problem with your settings but a bug; "
            "please report it with the traceback and the command line")
# For conf/hydra/default.yaml: resume=<dir> runs in <dir> and keeps the .hydra/ its search started with.
OmegaConf.register_new_resolver("cellsearch_or", lambda value, default: value or default, replace=True)
OmegaConf.register_new_resolver("cellsearch_output_subdir", lambda resume: None if resume else ".hydra",
                                replace=True)


def run(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task.name`` (search, retrain or export) and return its result."""
    from cellsearch.retrain import run_retrain
    from cellsearch.search.export import export_cells
    from cellsearch.search.run import run_search

    task = cfg.task.name
    if cfg.get("resume"):
        from cellsearch.search.resume import resumed_config

        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        cfg = resumed_config(cfg, overrides)
        task = cfg.task.name
    if task == "search":
        return run_search(cfg)
    if task == "retrain":
        return run_retrain(cfg)
    if task == "export":
        settings = cfg.export
        if settings.get("format") is not None:
            from cellsearch.deploy import run_export
            return run_export(cfg)
        if settings.name is None:
            raise ConfigError("task=export needs export.name=<name for the exported cells>")
        paths = export_cells(settings.run, settings.name, settings.top_k, settings.dir, settings.overwrite)
        log.info("exported %s", ", ".join(str(p) for p in paths))
        return paths
    raise ConfigError(f"unknown task {task!r}; choose search, retrain or export")


def task_value(result: Any) -> float | None:
    """What a sweeper optimises: a search's best reward (None if no child succeeded, a failed trial to
    Optuna), a retrained cell's test accuracy; None for an export."""
    from cellsearch.retrain import RetrainResult
    from cellsearch.search.loop import SearchSummary

    if isinstance(result, SearchSummary):
        return result.best.reward if result.best is not None else None
    if isinstance(result, RetrainResult):
        return result.test_accuracy
    return None


def error_message(err: BaseException) -> str:
    """One line that says what is wrong with the user's input."""
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return f"unknown option {group}={option}; choose one of: {', '.join(sorted(err.options))}"
    if isinstance(err, OverrideParseException):
        reason = [line for line in err.message.splitlines() if not line.startswith(("See ", "Error parsing"))]
        return (f"cannot read the override {err.override!r}: {' '.join(reason) or err.message.splitlines()[0]} "
                f"(write key=value, group=option or +new_key=value)")
    cause = err.__cause__ if isinstance(err, HydraException) and err.__cause__ is not None else err
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and " not in " in str(cause):
        key = getattr(cause, "full_key", None) or getattr(cause, "key", "")
        return f"unknown config key {key!r} (cellsearch --cfg job lists the keys; +{key}=... adds a new one)"
    if isinstance(cause, MissingMandatoryValue):
        return f"{cause.full_key} has no value: set it on the command line, {cause.full_key}=..."
    expected = expected_value(getattr(cause, "object_type", None), getattr(cause, "key", None)) \
        if isinstance(cause, ValidationError) and getattr(cause, "full_key", None) else None
    if expected is not None:  # a value of the wrong type for a schema field: say what it takes
        return f"{cause.full_key} must be {expected}, got {cause.value!r} (set {cause.full_key}=...)"
    if isinstance(cause, OmegaConfBaseException):
        where = f"{cause.full_key}: " if getattr(cause, "full_key", None) else ""
        return where + str(cause.msg if getattr(cause, "msg", None) else cause).splitlines()[0]
    if isinstance(err, (FileExistsError, NotADirectoryError, PermissionError)):  # Hydra creating the run directory
        return (f"cannot create or write {err.filename} ({err.strerror}): choose a run directory you can write "
                f"that is not a file or under one (hydra.run.dir=...)")
    if _unwritable_log_file(err):
        return (f"cannot write the log file {err.__cause__.filename} ({err.__cause__.strerror}); choose a run "
                f"directory you can write (hydra.run.dir=...)")
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


def _unwritable_log_file(err: BaseException) -> bool:
    """Whether ``err`` is logging's failure to open the run directory's log file (an unwritable directory)."""
    return str(err).startswith("Unable to configure handler") and isinstance(err.__cause__, OSError)


def _fail(err: BaseException) -> None:
    print(f"error: {error_message(err)}", file=sys.stderr)
    raise SystemExit(2)


def _refuse_a_busy_run_dir(args: list[str]) -> None:
    """Refuse a run directory named on the command line that another process holds, before Hydra writes its
    own files there (the task itself takes the lock; this keeps a refused run from touching the directory)."""
    if "-m" in args or "--multirun" in args:
        return  # each job of a sweep locks its own directory
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "run_dir", "resume") and value and is_main_rank():
            try:
                check_not_locked(value)
            except RunDirBusy as err:
                _fail(err)


def job(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run, or one job of a ``-m`` sweep; returns :func:`task_value`."""
    try:
        result = run(cfg)
    except USER_ERRORS as err:
        if _traceback_wanted or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # in a sweep the launcher says which job failed, then main() prints why
        _fail(err)
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # in a sweep it is a failed job, None to the sweeper
        _fail_if_no_child_succeeded(result)
    return task_value(result)


def _fail_if_no_child_succeeded(result: Any) -> None:
    """A search in which every child failed ends with status 1 and says why (it is not a result)."""
    from cellsearch.search.report import SearchSummary, no_success_line

    line = no_success_line(result) if isinstance(result, SearchSummary) else None
    if line is not None:
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1)


def main(config_path: str = CONFIG_PATH) -> None:
    """The ``cellsearch`` command: run :func:`job` with the command line's overrides; configuration errors
    (Hydra's included) end with one line and exit status 2, a bug with its traceback and exit status 1.

    Args:
        config_path: where the configuration is: the package's copy, or (train.py) the clone's ``conf/``.
    """
    _refuse_a_busy_run_dir(sys.argv[1:])
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's own errors reach us instead of being printed
    try:
        hydra.main(version_base="1.3", config_path=config_path, config_name="config")(job)()
    except KeyboardInterrupt:  # the search has logged how to resume
        raise SystemExit(130) from None
    except BrokenPipeError:  # the output went to a reader that stopped early (cellsearch --help | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exiting flushes nowhere
        raise SystemExit(1) from None
    except USER_ERRORS as err:
        if _traceback_wanted:
            raise
        _fail(err)
    except Exception as err:
        if _unwritable_log_file(err) and not _traceback_wanted:  # Hydra configures logging before the task runs
            _fail(err)
        traceback.print_exc()
        print(BUG_HINT.format(name=type(err).__name__), file=sys.stderr)
        raise SystemExit(1) from None
