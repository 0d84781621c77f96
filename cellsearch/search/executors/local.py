"""Children evaluated one at a time in this process (in one worker process when a timeout is set)."""
from __future__ import annotations

import collections

import torch

from cellsearch.evaluators.base import EvalResult, Evaluator, Fidelity
from cellsearch.space.genotype import Genotype
from cellsearch.search.executors.base import Executor, check_child_timeout, check_threads, evaluate, owned_cores
from cellsearch.search.executors.pool import PoolExecutor


class LocalExecutor(Executor):
    """Evaluates children one at a time in this process (``wait`` runs the next queued child). With a
    ``child_timeout`` they run in one worker process instead (a PoolExecutor), which can be stopped."""

    def __init__(self, evaluator: Evaluator, seed: int = 0, child_timeout: float | None = None,
                 threads_per_worker: int | None = None):
        super().__init__(evaluator, seed)
        self._queue: collections.deque[tuple[int, Genotype, Fidelity | None]] = collections.deque()
        self.threads_per_worker = check_threads(threads_per_worker) or owned_cores()
        self._worker = None if check_child_timeout(child_timeout) is None else PoolExecutor(
            evaluator, seed, num_workers=1, child_timeout=child_timeout, threads_per_worker=self.threads_per_worker)
        if self._worker is None:
            torch.set_num_threads(self.threads_per_worker)

    def submit(self, trial_id: int, genotype: Genotype, fidelity: Fidelity | None = None) -> None:
        if self._worker is not None:
            return self._worker.submit(trial_id, genotype, fidelity)
        self._queue.append((trial_id, genotype, fidelity))

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        if self._worker is not None:
            return self._worker.wait(timeout)
        if not self._queue:
            return []
        trial_id, genotype, fidelity = self._queue.popleft()
        return [(trial_id, evaluate(self.evaluator, genotype, trial_id, self.seed, fidelity))]

    def num_running(self) -> int:
        return len(self._queue) if self._worker is None else self._worker.num_running()

    @property
    def capacity(self) -> int:
        return 1

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
