"""Evaluate many children: in this process, in worker processes (K per GPU), or on a Ray cluster.

All executors run one :class:`~cellsearch.evaluators.Evaluator` (stand-alone training by default) and
share one interface: ``submit(trial_id, genotype)``, then ``wait()`` returns the
``(trial_id, EvalResult)`` pairs that have finished, in the order they finish. A child that fails
comes back with ``status='failed'``; a worker process that dies is replaced and its child retried
once, then recorded as failed. With ``child_timeout`` (seconds) a child running longer is stopped (its
process and data-loader workers killed) and recorded as failed ("timed out after N s"); the local
executor then trains its children in one worker process, so that it can stop them. Configuration errors (checked in the constructor, before any child
trains) raise :class:`~cellsearch.data.ConfigError`.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import math
import multiprocessing
import os
import signal
import time
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait as wait_for_ready
from typing import Any, Iterator, Mapping

import torch

from cellsearch.data import ConfigError
from cellsearch.evaluators.base import EvalResult, Evaluator, failed_result
from cellsearch.evaluators.child import describe_error
from cellsearch.search.placement import MB, MemoryPlan, memory_budgets, memory_estimate, worker_devices
from cellsearch.space.genotype import Genotype
from cellsearch.validation import integer, number_in, positive_int

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "PoolExecutor", "RayExecutor", "build_executor"]


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
    def submit(self, trial_id: int, genotype: Genotype) -> None:
        """Queue ``genotype`` for evaluation under ``trial_id``."""

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


# --- in-process --------------------------------------------------------------------------------------

class LocalExecutor(Executor):
    """Evaluates children one at a time in this process (``wait`` runs the next queued child). With a
    ``child_timeout`` they run in one worker process instead (a PoolExecutor), which can be stopped."""

    def __init__(self, evaluator: Evaluator, seed: int = 0, child_timeout: float | None = None,
                 threads_per_worker: int | None = None):
        super().__init__(evaluator, seed)
        self._queue: collections.deque[tuple[int, Genotype]] = collections.deque()
        self.threads_per_worker = check_threads(threads_per_worker) or owned_cores()
        self._worker = None if check_child_timeout(child_timeout) is None else PoolExecutor(
            evaluator, seed, num_workers=1, child_timeout=child_timeout, threads_per_worker=self.threads_per_worker)
        if self._worker is None:
            torch.set_num_threads(self.threads_per_worker)

    def submit(self, trial_id: int, genotype: Genotype) -> None:
        if self._worker is not None:
            return self._worker.submit(trial_id, genotype)
        self._queue.append((trial_id, genotype))

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        if self._worker is not None:
            return self._worker.wait(timeout)
        if not self._queue:
            return []
        trial_id, genotype = self._queue.popleft()
        return [(trial_id, self.evaluator.evaluate(genotype, trial_id=trial_id, seed=self.seed))]

    def num_running(self) -> int:
        return len(self._queue) if self._worker is None else self._worker.num_running()

    @property
    def capacity(self) -> int:
        return 1

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


# --- one worker process per device -------------------------------------------------------------------

@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (for processes started in it)."""
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pool_worker(conn: Connection, evaluator: Evaluator, seed: int, threads: int) -> None:
    """Worker process loop: receive ``(trial_id, genotype)``, send back ``(kind, trial_id, payload)``."""
    os.setpgid(0, 0)  # its own process group: a child past its time limit is killed with its data-loader workers
    torch.set_num_threads(threads)
    # The imports are done: the collection evaluate_child runs after each child then skips the ~500,000
    # objects torch and Lightning created (190-480 ms per child measured, ~0 ms frozen; benchmarks/RESULTS.md).
    gc.freeze()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if task is None:
            return
        trial_id, genotype = task
        try:
            message = ("result", trial_id, evaluator.evaluate(genotype, trial_id=trial_id, seed=seed))
        except ConfigError as err:
            message = ("config_error", trial_id, str(err))
        except Exception as err:  # evaluators record child failures; this is a last resort
            message = ("result", trial_id, failed_result(describe_error(err)))
        conn.send(message)


@dataclass
class _Task:
    trial_id: int
    genotype: Genotype
    attempts: int = 0
    started: float = 0.0
    memory_estimate: float | None = None  # bytes, when children are packed by memory
    reserved: float = 0.0


@dataclass
class _Worker:
    process: Any
    conn: Connection
    gpu: int | None
    task: _Task | None = None


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 5.0
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5.0)
        worker.conn.close()


class PoolExecutor(Executor):
    """Worker processes: ``workers_per_gpu`` per GPU (default 1; each sees only its own GPU), or
    ``num_workers`` CPU workers, with ``cores // num_workers`` torch threads each (the cores this
    process owns). Without a GPU, ``workers_per_gpu`` counts the CPU as one device. Processes use the
    ``spawn`` start method. Children are packed by memory where a device has a budget
    (``device_memory_mb``; default 90% of each GPU, none on the CPU): :mod:`cellsearch.search.placement`.

    A worker that dies (killed, segfault) is replaced; its child is retried ``max_retries`` times
    (default once) and then recorded as failed.
    """

    def __init__(self, evaluator: Evaluator, seed: int = 0, num_workers: int | None = None,
                 gpus: list[int] | None = None, threads_per_worker: int | None = None, max_retries: int = 1,
                 child_timeout: float | None = None, workers_per_gpu: int | None = None,
                 device_memory_mb: float | None = None):
        super().__init__(evaluator, seed)
        self.child_timeout = check_child_timeout(child_timeout)
        evaluator.check_single_device()
        integer(max_retries, "executor.max_retries", 0)
        self._gpus = worker_devices(evaluator.accelerator, num_workers, gpus, workers_per_gpu)
        self.num_workers = len(self._gpus)
        self.threads_per_worker = check_threads(threads_per_worker) or max(1, owned_cores() // self.num_workers)
        self.max_retries = max_retries
        self.memory = MemoryPlan(memory_budgets(self._gpus, device_memory_mb))
        self._context = multiprocessing.get_context("spawn")
        self._queue: collections.deque[_Task] = collections.deque()
        self._done: list[tuple[int, EvalResult]] = []
        self.restarts = 0
        self._workers = [self._start_worker(gpu) for gpu in self._gpus]
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    def _start_worker(self, gpu: int | None) -> _Worker:
        parent_conn, child_conn = self._context.Pipe()
        process = self._context.Process(
            target=_pool_worker, name=f"cellsearch-worker-{gpu if gpu is not None else 'cpu'}",
            args=(child_conn, self.evaluator, self.seed, self.threads_per_worker),
        )
        # The new interpreter inherits these before it imports anything: its GPU, its thread pools.
        settings = thread_settings(self.threads_per_worker)
        if gpu is not None:
            settings["CUDA_VISIBLE_DEVICES"] = str(gpu)
        with _environment(settings):
            process.start()
        child_conn.close()
        return _Worker(process, parent_conn, gpu)

    # --- interface -----------------------------------------------------------------------------
    def submit(self, trial_id: int, genotype: Genotype) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("submit() on a closed PoolExecutor")
        estimate = memory_estimate(self.evaluator, genotype) if self.memory.budgets else None
        self._queue.append(_Task(trial_id, genotype, memory_estimate=estimate))
        self._dispatch()

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.child_timeout is not None:  # wake up when the first running child reaches its limit
                first_limit = min(w.task.started for w in busy) + self.child_timeout - time.perf_counter()
                remaining = max(0.0, first_limit if remaining is None else min(remaining, first_limit))
            ready = set(wait_for_ready([w.conn for w in busy] + [w.process.sentinel for w in busy], remaining))
            for worker in busy:
                if worker.task is not None and (worker.conn in ready or worker.process.sentinel in ready):
                    self._collect(worker, worker.task)
                elif (worker.task is not None and self.child_timeout is not None
                      and time.perf_counter() - worker.task.started >= self.child_timeout):
                    self._stop_for_time(worker, worker.task)
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        done, self._done = self._done, []
        return done

    def num_running(self) -> int:
        return len(self._queue) + sum(w.task is not None for w in self._workers) + len(self._done)

    @property
    def capacity(self) -> int:
        return self.num_workers

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (replaced workers get new ones)."""
        return [w.process.pid for w in self._workers]

    def running(self) -> dict[int, int]:
        """``{trial_id: pid}`` of the children being trained now (for monitoring)."""
        return {w.task.trial_id: w.process.pid for w in self._workers if w.task is not None}

    def close(self) -> None:
        self._finalizer()
        self._queue.clear()
        for worker in self._workers:
            worker.task = None

    # --- bookkeeping ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for worker in self._workers:
            # First come, first served: the oldest child waits for room rather than being overtaken.
            if worker.task is None and self._queue and self.memory.fits(worker.gpu, self._queue[0].memory_estimate):
                if not worker.process.is_alive():  # died while idle: replace it, no child lost
                    self._restart(worker)
                task = self._queue.popleft()
                task.reserved = self.memory.reserve(worker.gpu, task.memory_estimate)
                task.attempts += 1
                task.started = time.perf_counter()
                worker.task = task
                try:
                    worker.conn.send((task.trial_id, task.genotype))
                except (OSError, ValueError):  # died just now: wait() sees its sentinel
                    pass

    def _collect(self, worker: _Worker, task: _Task) -> None:
        try:
            message = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):  # the worker's end of the pipe closed: it is dying
            message = None
            worker.process.join(5.0)
        if message is not None:
            kind, trial_id, payload = message
            worker.task = None
            self._release(worker, task)
            if kind == "result" and task.memory_estimate:  # estimate and measured peak, side by side
                payload.metrics["memory_estimate_mb"] = task.memory_estimate / MB
                peak = payload.metric("peak_memory_mb")
                self.memory.observe(task.memory_estimate, peak * MB if peak else None)
            if kind == "config_error":
                raise ConfigError(payload)
            self._done.append((trial_id, payload))
        elif not worker.process.is_alive():
            code = worker.process.exitcode
            why = f"worker process {worker.process.pid} died (exit code {code}) while training trial {task.trial_id}"
            self._release(worker, task)
            self._restart(worker)
            if task.attempts <= self.max_retries:
                self._queue.appendleft(task)
            else:
                seconds = time.perf_counter() - task.started
                self._done.append((task.trial_id, failed_result(f"{why}; gave up after {task.attempts} attempt(s)",
                                                                seconds)))

    def _release(self, worker: _Worker, task: _Task) -> None:
        self.memory.release(worker.gpu, task.reserved)
        task.reserved = 0.0

    def _stop_for_time(self, worker: _Worker, task: _Task) -> None:
        """Kill the worker's process group (the child and its data-loader workers), record the child, replace it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.kill()  # in case it had not yet made its own process group
        worker.process.join(5.0)
        self._release(worker, task)
        self._done.append((task.trial_id, timed_out(self.child_timeout, task.started)))
        self._restart(worker)

    def _restart(self, worker: _Worker) -> None:
        worker.process.join(1.0)
        worker.conn.close()
        fresh = self._start_worker(worker.gpu)
        worker.process, worker.conn, worker.task = fresh.process, fresh.conn, None
        self.restarts += 1


# --- Ray -----------------------------------------------------------------------------------------------

def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError("RayExecutor needs Ray: pip install 'cellsearch[ray]' (or use the local or pool "
                          "executor)") from err
    return ray


def _ray_evaluate(evaluator: Evaluator, genotype: Genotype, trial_id: int, seed: int, threads: int) -> EvalResult:
    torch.set_num_threads(threads)
    return evaluator.evaluate(genotype, trial_id=trial_id, seed=seed)


class RayExecutor(Executor):
    """Children as Ray tasks on an existing cluster (``address``) or a local one started here.

    Each child asks for ``num_cpus_per_child`` CPUs and ``num_gpus_per_child`` GPUs (default: one GPU
    if the cluster has any and the child may use one, else none; fractions share a GPU:
    ``children_per_gpu=K`` asks for 1/K, and on a cluster without GPUs runs children on CPUs). Ray retries
    a task whose worker dies ``max_retries`` times. A local cluster is started with bounded
    resources (``num_cpus``, ``num_gpus``, ``object_store_memory``), without the dashboard, and shut
    down by ``close``.
    """

    def __init__(self, evaluator: Evaluator, seed: int = 0, address: str | None = None, num_workers: int | None = None,
                 num_cpus_per_child: float = 1, num_gpus_per_child: float | None = None,
                 num_cpus: int | None = None, num_gpus: int | None = None,
                 object_store_memory: int | None = 200 * 1024 ** 2, max_retries: int = 1,
                 init_kwargs: Mapping[str, Any] | None = None, child_timeout: float | None = None,
                 children_per_gpu: int | None = None):
        ray = _import_ray()
        super().__init__(evaluator, seed)
        # Counted from submission: the search keeps at most as many children in flight as the cluster runs at once.
        self.child_timeout = check_child_timeout(child_timeout)
        number_in(num_cpus_per_child, "executor.num_cpus_per_child", 0, low_open=True)
        number_in(num_gpus_per_child, "executor.num_gpus_per_child", 0, optional=True)
        if children_per_gpu is not None:
            positive_int(children_per_gpu, "executor.children_per_gpu")
            if num_gpus_per_child is not None:
                raise ConfigError("set executor.children_per_gpu or executor.num_gpus_per_child, not both "
                                  "(children_per_gpu=K asks for 1/K GPU per child)")
        self._ray = ray
        self._pending: dict[Any, tuple[int, float]] = {}
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
        self._remote = ray.remote(_ray_evaluate).options(num_cpus=num_cpus_per_child, num_gpus=num_gpus_per_child,
                                                         max_retries=max_retries)

    def submit(self, trial_id: int, genotype: Genotype) -> None:
        ref = self._remote.remote(self.evaluator, genotype, trial_id, self.seed, self.threads_per_child)
        self._pending[ref] = (trial_id, time.perf_counter())

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        if not self._pending:
            return []
        refs = list(self._pending)
        if self.child_timeout is not None:  # wake up when the first child reaches its limit
            first_limit = min(started for _, started in self._pending.values()) + self.child_timeout
            timeout = max(0.0, min(first_limit - time.perf_counter(), timeout if timeout is not None else math.inf))
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        done = [self._result(ref) for ref in ready]
        if self.child_timeout is not None:
            for ref, (trial_id, started) in list(self._pending.items()):
                if time.perf_counter() - started >= self.child_timeout:
                    self._ray.cancel(ref, force=True)  # ends the worker process that runs it
                    del self._pending[ref]
                    done.append((trial_id, timed_out(self.child_timeout, started)))
        return done

    def _result(self, ref: Any) -> tuple[int, EvalResult]:
        trial_id, started = self._pending.pop(ref)
        try:
            return trial_id, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from err
            return trial_id, failed_result(f"Ray task failed: {cause!r}" if cause else str(err).splitlines()[0],
                                           time.perf_counter() - started)
        except self._ray.exceptions.RayError as err:  # worker died (after retries), node lost, ...
            return trial_id, failed_result(f"{type(err).__name__}: {str(err).strip().splitlines()[0]}",
                                           time.perf_counter() - started)

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


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "pool": PoolExecutor, "ray": RayExecutor}


def build_executor(kind: str, evaluator: Evaluator, seed: int = 0, **options: Any) -> Executor:
    """``LocalExecutor``, ``PoolExecutor`` or ``RayExecutor`` by name, running ``evaluator``, with its own options."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r}; choose one of {list(EXECUTORS)}")
    return EXECUTORS[kind](evaluator, seed, **options)
