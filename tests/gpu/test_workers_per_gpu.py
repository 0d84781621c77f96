"""K worker processes per GPU train children concurrently, and every child lands in trials.db."""
from __future__ import annotations

import random
import time

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (pytest tests/gpu on a GPU machine)", allow_module_level=True)

from cellsearch.data import DataConfig  # noqa: E402
from cellsearch.evaluators import TrainEvaluator  # noqa: E402
from cellsearch.evaluators.child import ChildConfig  # noqa: E402
from cellsearch.search.executors import PoolExecutor  # noqa: E402
from cellsearch.search.loop import SearchLoop  # noqa: E402
from cellsearch.search.store import TRIALS_FILE, TrialStore  # noqa: E402
from cellsearch.space.genotype import SearchSpace  # noqa: E402
from cellsearch.strategies.random_search import RandomSearch  # noqa: E402

K = 4
DATA = DataConfig(name="synthetic", synthetic_train_size=1024, synthetic_test_size=128, image_size=32, val_size=256)
CHILD = ChildConfig(cells_per_stage=1, channels=16, epochs=2, batch_size=128, logger=None)


def test_k_workers_per_gpu_train_concurrently_and_every_child_lands_in_trials_db(tmp_path):
    executor = PoolExecutor(TrainEvaluator(CHILD, DATA), seed=0, workers_per_gpu=K)
    try:
        gpus = torch.cuda.device_count()
        assert executor.num_workers == K * gpus
        space, rng = SearchSpace(), random.Random(0)

        def run_round(first_id: int) -> tuple[float, list]:
            start, done = time.monotonic(), []
            for trial_id in range(first_id, first_id + K * gpus):
                executor.submit(trial_id, space.sample(rng))
            while executor.num_running() and time.monotonic() < start + 240:
                done += executor.wait(timeout=1.0)
            return time.monotonic() - start, done

        run_round(1000)  # warm-up: the workers import torch and Lightning
        wall, done = run_round(2000)
        assert len(done) == K * gpus
        assert all(result.ok and result.metrics["peak_memory_mb"] > 0 for _, result in done), done  # on the GPU
        # Concurrent: the round took well under the children's summed training times.
        assert wall < 0.75 * sum(result.seconds for _, result in done), wall
        budget = 2 * K * gpus
        with TrialStore(tmp_path / TRIALS_FILE) as store:
            SearchLoop(RandomSearch(space, seed=0), executor, store, tmp_path, budget).run()
            rows = store.rows()
    finally:
        executor.close()
    assert len(rows) == budget and all(row.ok for row in rows)
