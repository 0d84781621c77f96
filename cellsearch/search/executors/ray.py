"""Children as Ray tasks on an existing cluster or a local one started for the run."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from cellsearch.evaluators.base import EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.space.genotype import Genotype
from cellsearch.validation import ConfigError, integer, number_in, positive_int
from cellsearch.search.executors.base import Executor, check_child_timeout, evaluate, timed_out

log = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError("RayExecutor needs Ray: pip install 'cellsearch[ray]' (or use the local or pool "
                          "executor)") from err
    return ray


def _ray_evaluate(evaluator: Evaluator, genotype: Genotype, trial_id: int, seed: int, threads: int,
                  fidelity: Fidelity | None = None) -> EvalResult:
    torch.set_num_threads(threads)
    return evaluate(evaluator, genotype, trial_id, seed, fidelity)


@dataclass
class _Child:
    trial_id: int
    genotype: Genotype
    started: float   # this attempt's submission (perf_counter)
    attempts: int = 1
    fidelity: Fidelity | None = None  # the segment to train (None: the whole child)


class RayExecutor(Executor):
    """Children as Ray tasks on an existing cluster (``address``) or a local one started here.

    Each child asks for ``num_cpus_per_child`` CPUs and ``num_gpus_per_child`` GPUs (default: one GPU
    if the cluster has any and the child may use one, else none; fractions share a GPU:
    ``children_per_gpu=K`` asks for 1/K, and on a cluster without GPUs runs children on CPUs). A child
    whose worker process or node dies (Ray's ``WorkerCrashedError``, ``NodeDiedError``, or
    ``OutOfMemoryError`` when Ray's memory monitor stopped it) is submitted again, on whichever node
    has room, at most ``max_retries`` times, each retry logged; then it is recorded as failed. A child
    that raises is a result, never retried. A local cluster is started with bounded resources
    (``num_cpus``, ``num_gpus``, ``object_store_memory``), without the dashboard, and shut down by ``close``.
    """

    def __init__(self, evaluator: Evaluator, seed: int = 0, address: str | None = None, num_workers: int | None = None,
                 num_cpus_per_child: float = 1, num_gpus_per_child: float | None = None,
                 num_cpus: int | None = None, num_gpus: int | None = None,
                 object_store_memory: int | None = 200 * 1024 ** 2, max_retries: int = 3,
                 init_kwargs: Mapping[str, Any] | None = None, child_timeout: float | None = None,
                 children_per_gpu: int | None = None):
        ray = _import_ray()
        super().__init__(evaluator, seed)
        # Counted from submission: the search keeps at most as many children in flight as the cluster runs at once.
        self.child_timeout = check_child_timeout(child_timeout)
        self.max_retries = integer(max_retries, "executor.max_retries", 0)
        number_in(num_cpus_per_child, "executor.num_cpus_per_child", 0, low_open=True)
        number_in(num_gpus_per_child, "executor.num_gpus_per_child", 0, optional=True)
        if children_per_gpu is not None:
            positive_int(children_per_gpu, "executor.children_per_gpu")
            if num_gpus_per_child is not None:
                raise ConfigError("set executor.children_per_gpu or executor.num_gpus_per_child, not both "
                                  "(children_per_gpu=K asks for 1/K GPU per child)")
        self._ray = ray
        self._pending: dict[Any, _Child] = {}
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address is None:  # start a local cluster with bounded resources
                options.update(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus,
                               object_store_memory=object_store_memory)
            options.update(init_kwargs or {})
            try:
                ray.init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise ConfigError(f"could not start or reach a Ray cluster at {address or 'a new local cluster'}: "
                                  f"{err}") from err
        resources = ray.cluster_resources()
        if children_per_gpu is not None:  # on a cluster without GPUs the children train on CPUs
            usable = resources.get("GPU", 0) > 0 and evaluator.accelerator != "cpu"
            num_gpus_per_child = 1 / children_per_gpu if usable else 0
        if num_gpus_per_child is None:
            num_gpus_per_child = 1 if resources.get("GPU", 0) >= 1 and evaluator.accelerator != "cpu" else 0
        if num_gpus_per_child > resources.get("GPU", 0) or num_cpus_per_child > resources.get("CPU", 0):
            self.close()
            raise ConfigError(f"a child asks for {num_cpus_per_child} CPU(s) and {num_gpus_per_child} GPU(s) but the "
                              f"Ray cluster has {resources.get('CPU', 0)} CPU(s) and {resources.get('GPU', 0)} GPU(s)")
        if num_workers is None:
            slots = [resources.get("CPU", 0) / num_cpus_per_child]
            if num_gpus_per_child > 0:
                slots.append(resources["GPU"] / num_gpus_per_child)
            num_workers = max(1, math.floor(min(slots)))
        self.num_workers = num_workers
        self.threads_per_child = max(1, int(num_cpus_per_child))
        # Ray's own task retries are off: they would run a child again silently, so the executor retries
        # (see _result), logging each retry and counting the attempts in the error of a child that gives up.
        self._remote = ray.remote(_ray_evaluate)
        self._options = dict(num_cpus=num_cpus_per_child, num_gpus=num_gpus_per_child, max_retries=0,
                             retry_exceptions=False)
        exceptions = ray.exceptions
        self._died = (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.OutOfMemoryError)

    def submit(self, trial_id: int, genotype: Genotype, fidelity: Fidelity | None = None) -> None:
        self._submit(_Child(trial_id, genotype, time.perf_counter(), fidelity=fidelity))

    def _submit(self, child: _Child) -> None:
        # Named after the trial: `ray list tasks` and the worker's process title (ray::trial 7) say which child it is.
        ref = self._remote.options(**self._options, name=f"trial {child.trial_id}").remote(
            self.evaluator, child.genotype, child.trial_id, self.seed, self.threads_per_child, child.fidelity)
        self._pending[ref] = child

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._pending:  # children that come back only to be retried do not count as results
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            done = self._wait_once(left)
            if done or left == 0.0:
                return done
        return []

    def _wait_once(self, timeout: float | None) -> list[tuple[int, EvalResult]]:
        refs = list(self._pending)
        if self.child_timeout is not None:  # wake up when the first child reaches its limit
            first_limit = min(child.started for child in self._pending.values()) + self.child_timeout
            timeout = max(0.0, min(first_limit - time.perf_counter(), timeout if timeout is not None else math.inf))
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        done = [result for result in map(self._result, ready) if result is not None]
        if self.child_timeout is not None:
            for ref, child in list(self._pending.items()):
                if time.perf_counter() - child.started >= self.child_timeout:
                    self._ray.cancel(ref, force=True)  # ends the worker process that runs it
                    del self._pending[ref]
                    done.append((child.trial_id, timed_out(self.child_timeout, child.started)))
        return done

    def _result(self, ref: Any) -> tuple[int, EvalResult] | None:
        """``ref``'s child and result, or None when its worker or node died and it was submitted again."""
        child = self._pending.pop(ref)
        seconds = time.perf_counter() - child.started
        try:
            return child.trial_id, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from err
            return child.trial_id, failed_result(f"Ray task failed: {cause!r}" if cause else str(err).splitlines()[0],
                                                 seconds)
        except self._died as err:  # the process or node running it is gone, not the child's fault
            why = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
            if child.attempts > self.max_retries:
                return child.trial_id, failed_result(
                    f"its Ray worker or node died on each of {child.attempts} attempt(s) (executor.max_retries="
                    f"{self.max_retries}); last: {why}", seconds)
            log.warning("trial %d: its Ray worker or node died (%s); running it again on a node with room "
                        "(retry %d of executor.max_retries=%d)", child.trial_id, why, child.attempts, self.max_retries)
            self._submit(_Child(child.trial_id, child.genotype, time.perf_counter(), child.attempts + 1, child.fidelity))
            return None
        except self._ray.exceptions.RayError as err:  # cancelled, unschedulable, a runtime env that failed, ...
            return child.trial_id, failed_result(f"{type(err).__name__}: {str(err).strip().splitlines()[0]}", seconds)

    def num_running(self) -> int:
        return len(self._pending)

    @property
    def capacity(self) -> int:
        return self.num_workers

    def close(self) -> None:
        for ref in list(self._pending):
            self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False
