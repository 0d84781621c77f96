"""Worker processes: K per GPU (each pinned to its device) or CPU workers, packed by memory."""
from __future__ import annotations

import collections
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait as wait_for_ready
from typing import Any, Iterator

import torch

from cellsearch.evaluators.base import EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.evaluators.child import describe_error
from cellsearch.search.placement import MB, MemoryPlan, memory_budgets, memory_estimate, worker_devices
from cellsearch.space.genotype import Genotype
from cellsearch.validation import ConfigError, integer
from cellsearch.search.executors.base import (Executor, check_child_timeout, check_threads, evaluate, owned_cores,
                                              thread_settings, timed_out)

log = logging.getLogger(__name__)


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
    """Worker process loop: receive ``(trial_id, genotype, fidelity)``, send back ``(kind, trial_id, payload)``."""
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
        trial_id, genotype, fidelity = task
        try:
            message = ("result", trial_id, evaluate(evaluator, genotype, trial_id, seed, fidelity))
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
    fidelity: Fidelity | None = None  # the segment to train (None: the whole child, as evaluators without one)


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
        cpu_workers = self._gpus.count(None)
        if cpu_workers > owned_cores():  # issue 24: a tiny child took 42 s instead of 1.4 s
            log.warning("executor.num_workers=%d CPU workers on %d core(s): they contend, and each child takes much "
                        "longer; use executor.num_workers=%d or fewer", cpu_workers, owned_cores(), owned_cores())
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
    def submit(self, trial_id: int, genotype: Genotype, fidelity: Fidelity | None = None) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("submit() on a closed PoolExecutor")
        estimate = memory_estimate(self.evaluator, genotype) if self.memory.budgets else None
        self._queue.append(_Task(trial_id, genotype, memory_estimate=estimate, fidelity=fidelity))
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
                    worker.conn.send((task.trial_id, task.genotype, task.fidelity))
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
