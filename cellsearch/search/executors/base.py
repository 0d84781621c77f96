"""The executor interface and what every executor shares: thread and timeout settings."""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod


from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.space.genotype import Genotype


def evaluate(evaluator: Evaluator, genotype: Genotype, trial_id: int, seed: int,
             fidelity: Fidelity | None) -> EvalResult:
    """One evaluation (one segment of a child under a Fidelity): without a fidelity, exactly the call every
    evaluator takes, so evaluators that cannot train in segments never see the keyword."""
    if fidelity is None:
        return evaluator.evaluate(genotype, trial_id=trial_id, seed=seed)
    return evaluator.evaluate(genotype, trial_id=trial_id, seed=seed, fidelity=fidelity)


def check_child_timeout(child_timeout: object) -> float | None:
    """``child_timeout`` as seconds (None: no limit); ConfigError unless it is a positive number."""
    if child_timeout is None:
        return None
    if isinstance(child_timeout, bool) or not isinstance(child_timeout, (int, float)) or not child_timeout > 0:
        raise ConfigError(f"executor.child_timeout must be a positive number of seconds (or null for no limit), "
                          f"got {child_timeout!r}")
    return float(child_timeout)


def owned_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_settings(threads: int) -> dict[str, str]:
    """Environment for a worker process with ``threads`` compute threads, read by OpenMP and MKL at start-up."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def check_threads(threads: object) -> int | None:
    """``threads_per_worker`` as given (None: automatic); ConfigError unless a positive integer."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"executor.threads_per_worker must be a positive integer (or null: cores // workers), "
                          f"got {threads!r}")
    return threads


def timed_out(seconds: float, started: float) -> EvalResult:
    """The failed result of a child stopped at its time limit."""
    return failed_result(f"timed out after {seconds:g} s (executor.child_timeout)", time.perf_counter() - started)


class Executor(ABC):
    """Runs child evaluations; keep ``capacity`` children in flight and collect them with ``wait``."""

    def __init__(self, evaluator: Evaluator, seed: int = 0):
        if not isinstance(evaluator, Evaluator):
            raise ConfigError(f"an executor runs an Evaluator (e.g. cellsearch.evaluators.TrainEvaluator), "
                              f"got {type(evaluator).__name__}")
        self.evaluator = evaluator
        self.seed = seed
        evaluator.check()  # configuration errors surface here, before any child trains

    @abstractmethod
    def submit(self, trial_id: int, genotype: Genotype, fidelity: Fidelity | None = None) -> None:
        """Queue ``genotype`` for evaluation under ``trial_id`` (with ``fidelity``: one segment of its training;
        ``executor.child_timeout`` then applies to each segment)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        """Finished ``(trial_id, result)`` pairs: at least one, unless ``timeout`` passed or nothing is in flight."""

    @abstractmethod
    def num_running(self) -> int:
        """Children submitted and not yet returned by ``wait``."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many children to keep in flight."""

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
