"""Evaluate many children: in this process, in worker processes (K per GPU), or on a Ray cluster.

All executors run one :class:`~cellsearch.evaluators.Evaluator` (stand-alone training by default) and
share one interface: ``submit(trial_id, genotype)``, then ``wait()`` returns the
``(trial_id, EvalResult)`` pairs that have finished, in the order they finish. With early stopping,
``submit(trial_id, genotype, fidelity)`` trains one segment of a child
(``evaluator.evaluate(..., fidelity=...)``; the result carries the checkpoint to go on from); without a
fidelity the evaluator is called exactly as before, and ``child_timeout`` applies to each segment. A child that fails
comes back with ``status='failed'``; a child whose worker process (or Ray node) dies is run again,
``max_retries`` times at most, then recorded as failed. With ``child_timeout`` (seconds) a child running
longer is stopped (its process and data-loader workers killed) and recorded as failed ("timed out after N s"); the local
executor then trains its children in one worker process, so that it can stop them. Configuration errors
(checked in the constructor, before any child trains) raise :class:`~cellsearch.validation.ConfigError`.
"""
from __future__ import annotations

from typing import Any

from cellsearch.evaluators.base import Evaluator
from cellsearch.search.executors.base import Executor, owned_cores
from cellsearch.search.executors.local import LocalExecutor
from cellsearch.search.executors.pool import PoolExecutor
from cellsearch.search.executors.ray import RayExecutor
from cellsearch.validation import ConfigError

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "PoolExecutor", "RayExecutor", "build_executor", "owned_cores"]

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "pool": PoolExecutor, "ray": RayExecutor}


def build_executor(kind: str, evaluator: Evaluator, seed: int = 0, **options: Any) -> Executor:
    """``LocalExecutor``, ``PoolExecutor`` or ``RayExecutor`` by name, running ``evaluator``, with its own options."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r}; choose one of {list(EXECUTORS)}")
    return EXECUTORS[kind](evaluator, seed, **options)
