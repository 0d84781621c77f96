"""Executors: in-process, worker processes (with failures and killed workers), a local Ray cluster."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time

import pytest
import torch

from cellsearch.evaluators import EvalResult, Evaluator, TrainEvaluator
from cellsearch.evaluators.child import ChildConfig
from cellsearch.data import DataConfig
from cellsearch.search.executors import LocalExecutor, PoolExecutor, RayExecutor, build_executor
from cellsearch.space.genotype import Block, Cell, Genotype, SearchSpace, load_genotype
from cellsearch.validation import ConfigError

DATA = DataConfig(name="synthetic", synthetic_train_size=96, synthetic_test_size=16, image_size=8, val_size=32)
CHILD = ChildConfig(cells_per_stage=1, channels=4, epochs=1, batch_size=32, logger=None)


def broken_genotype() -> Genotype:
    """Raises when its network is built: names an op that no registry has."""
    normal = Cell(blocks=(Block(inputs=(0, 1), ops=("no_such_op", "identity")),), concat=(2,))
    return Genotype(normal, load_genotype("nasnet_a").reduce)


def batch_of_children() -> dict[int, Genotype]:
    """Two sampled children, a published one and one that fails."""
    space = SearchSpace()
    rng = random.Random(0)
    return {0: space.sample(rng), 1: broken_genotype(), 2: load_genotype("nasnet_a"), 3: space.sample(rng)}


def run_batch(executor, genotypes: dict[int, Genotype], timeout: float = 300) -> dict[int, EvalResult]:
    for trial_id, genotype in genotypes.items():
        executor.submit(trial_id, genotype)
    results: dict[int, EvalResult] = {}
    deadline = time.monotonic() + timeout
    while executor.num_running() and time.monotonic() < deadline:
        for trial_id, result in executor.wait(timeout=max(0.0, deadline - time.monotonic())):
            assert trial_id not in results
            results[trial_id] = result
    return results


def check_batch(results: dict[int, EvalResult]) -> None:
    assert sorted(results) == [0, 1, 2, 3]
    assert [results[i].status for i in range(4)] == ["ok", "failed", "ok", "ok"]
    assert "no_such_op" in results[1].error and results[1].metric("val_accuracy") is None
    for i in (0, 2, 3):
        metrics = results[i].metrics
        correct = metrics["val_accuracy"] * DATA.val_size  # a whole number of the 32 validation images
        assert correct == pytest.approx(round(correct)) and metrics["params"] > 0 and metrics["mult_adds"] > 0
        assert [p.epoch for p in results[i].curve] == [1] and results[i].curve[0].val_accuracy == metrics["val_accuracy"]
    assert results[1].curve == []


@pytest.mark.slow
def test_local_executor_survives_a_failing_child():
    with LocalExecutor(TrainEvaluator(CHILD, DATA), seed=0) as executor:
        assert executor.capacity == 1 and executor.wait() == []
        results = run_batch(executor, batch_of_children())
        assert executor.num_running() == 0
    check_batch(results)


def test_local_executor_records_a_diverging_child():
    with LocalExecutor(TrainEvaluator(ChildConfig(**{**CHILD.__dict__, "lr": 1e30, "grad_clip": 0.0}), DATA)) as executor:
        executor.submit(5, load_genotype("nasnet_a"))
        [(trial_id, result)] = executor.wait()
    assert trial_id == 5 and result.status == "failed" and "diverged" in result.error


@pytest.mark.parametrize("make", [
    lambda: LocalExecutor(TrainEvaluator(CHILD, {"name": "cifar10", "root": "/nonexistent/data", "download": False})),
    lambda: PoolExecutor(TrainEvaluator(CHILD, DataConfig(name="cifar10", root="/nonexistent/data", download=False)),
                         num_workers=2),
    lambda: PoolExecutor(TrainEvaluator({**CHILD.__dict__, "devices": 2}, DATA)),
    lambda: PoolExecutor(TrainEvaluator(CHILD, DATA), num_workers=0),
    lambda: build_executor("slurm", TrainEvaluator(CHILD, DATA)),
    lambda: LocalExecutor(CHILD),
])
def test_configuration_errors_raise_before_any_child_trains(make):
    with pytest.raises(ConfigError):
        make()
    assert not multiprocessing.active_children()  # no worker was started


@pytest.mark.slow
def test_two_worker_processes_evaluate_a_batch_with_a_failing_child():
    executor = PoolExecutor(TrainEvaluator(CHILD, DATA), seed=0, workers_per_gpu=2)  # 2 CPU workers without a GPU
    try:
        assert executor.capacity == 2 and executor.threads_per_worker == max(1, (os.cpu_count() or 1) // 2)
        pids = executor.worker_pids
        assert len(set(pids)) == 2 and os.getpid() not in pids
        results = run_batch(executor, batch_of_children())
        assert executor.restarts == 0
    finally:
        executor.close()
    check_batch(results)
    assert not multiprocessing.active_children()  # close() stopped the workers


def test_a_worker_process_brings_back_the_childs_curve():
    """The curve travels inside EvalResult, so it reaches the search from a worker process unchanged."""
    child = ChildConfig(**{**CHILD.__dict__, "epochs": 2, "val_every_n_epochs": 1})
    with PoolExecutor(TrainEvaluator(child, DATA), seed=0, num_workers=1) as executor:
        [result] = run_batch(executor, {4: load_genotype("nasnet_a")}).values()
    assert result.ok and [p.epoch for p in result.curve] == [1, 2]
    assert result.curve[-1].val_accuracy == result.metrics["val_accuracy"] and result.curve[-1].cpu_seconds > 0


def wait_until_running(executor: PoolExecutor, trial_id: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while trial_id not in executor.running():
        assert time.monotonic() < deadline, "child never started"
        assert executor.wait(timeout=0.2) == []
    return executor.running()[trial_id]


@pytest.mark.slow
def test_killed_worker_is_replaced_and_its_child_retried_once_then_failed():
    slow_child = ChildConfig(**{**CHILD.__dict__, "epochs": 4})
    executor = PoolExecutor(TrainEvaluator(slow_child, DATA), seed=0, num_workers=1, max_retries=1)
    try:
        executor.submit(0, load_genotype("nasnet_a"))
        executor.submit(1, load_genotype("nasnet_a"))
        # trial 0: killed once, retried on a fresh worker, succeeds
        first_pid = wait_until_running(executor, 0)
        os.kill(first_pid, signal.SIGKILL)
        assert executor.wait(timeout=1.0) == []
        assert executor.restarts == 1 and executor.running()[0] != first_pid
        [(trial_id, result)] = executor.wait()
        assert trial_id == 0 and result.status == "ok", result
        # trial 1: killed on both attempts, recorded as failed; the executor keeps working
        pid = wait_until_running(executor, 1)
        os.kill(pid, signal.SIGKILL)
        retry_pid = pid
        deadline = time.monotonic() + 60
        while retry_pid == pid:
            assert time.monotonic() < deadline
            executor.wait(timeout=0.2)
            retry_pid = executor.running().get(1, pid)
        os.kill(retry_pid, signal.SIGKILL)
        [(trial_id, result)] = executor.wait()
        assert trial_id == 1 and result.status == "failed" and result.metric("val_accuracy") is None
        assert "died" in result.error and "2 attempt" in result.error
        assert executor.restarts == 3
        executor.submit(2, load_genotype("nasnet_a"))
        [(trial_id, result)] = executor.wait()
        assert trial_id == 2 and result.status == "ok"
    finally:
        executor.close()


def test_ray_executor_without_ray_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    with pytest.raises(ConfigError, match=r"pip install 'cellsearch\[ray\]'"):
        RayExecutor(TrainEvaluator(CHILD, DATA))


@pytest.mark.parametrize("value", [-1, 1.5, None, True])
def test_ray_max_retries_must_be_a_count(value):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="executor.max_retries must be an integer >= 0"):
        RayExecutor(TrainEvaluator(CHILD, DATA), max_retries=value)  # refused before any cluster starts


def test_executor_settings_are_free_to_change_on_resume(compose):
    """Where and how children run (retries included) does not define a reward: not in search_settings.yaml."""
    from cellsearch.search.settings import search_settings

    assert search_settings(compose("executor=ray", "executor.max_retries=0", "run_dir=/tmp")) == \
        search_settings(compose("executor=local", "run_dir=/tmp"))


@pytest.mark.slow
def test_local_ray_cluster_evaluates_a_batch_with_a_failing_child():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    # Told it has one GPU, the cluster runs two children on it (0.5 GPU each); torch sees no CUDA device
    # in them here, so they train on the CPU.
    executor = RayExecutor(TrainEvaluator(CHILD, DATA), seed=0, num_cpus=2, num_gpus=1, children_per_gpu=2)
    try:
        assert ray.is_initialized() and executor.capacity == 2 and ray.cluster_resources()["GPU"] == 1
        results = run_batch(executor, batch_of_children())
    finally:
        executor.close()
    assert not ray.is_initialized()
    check_batch(results)


# --- a time limit per child -------------------------------------------------------------------------------

LONG_CHILD = ChildConfig(cells_per_stage=1, channels=4, epochs=10_000, batch_size=32, logger=None)


@pytest.mark.parametrize("kind", ["local", pytest.param("pool", marks=pytest.mark.slow)])  # pool: 7 s, slow tier
def test_a_child_past_its_time_limit_is_stopped_and_recorded(kind):
    """A child that would train for hours is stopped after child_timeout seconds, with its process."""
    with build_executor(kind, TrainEvaluator(LONG_CHILD, DATA), seed=0, child_timeout=3) as executor:
        start = time.monotonic()
        results = run_batch(executor, {7: load_genotype("nasnet_a")}, timeout=120)
        pool = executor if kind == "pool" else executor._worker
        assert results[7].status == "failed" and results[7].error.startswith("timed out after 3 s")
        assert 3 <= results[7].seconds and time.monotonic() - start < 60
        assert pool.restarts == 1 and executor.num_running() == 0


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_child_timeout_must_be_positive_seconds(value):
    with pytest.raises(ConfigError, match="executor.child_timeout must be a positive number of seconds"):
        build_executor("local", TrainEvaluator(CHILD, DATA), seed=0, child_timeout=value)


# --- threads per worker -----------------------------------------------------------------------------------

class _ThreadsSeen(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


class ThreadsEvaluator(Evaluator):
    """Reports the compute threads of the process that evaluates, and of a DataLoader worker it starts."""

    name = "threads"
    metrics = ("threads", "loader_threads")

    def evaluate(self, genotype, trial_id=0, seed=0):
        loader = torch.utils.data.DataLoader(_ThreadsSeen(), batch_size=2, num_workers=1)
        loader_threads = int(next(iter(loader)).max())
        return EvalResult("ok", {"threads": torch.get_num_threads(), "loader_threads": loader_threads,
                                 "omp": float(os.environ.get("OMP_NUM_THREADS", "0"))})


@pytest.mark.slow
def test_each_worker_runs_the_threads_it_owns_and_loader_workers_add_none():
    with PoolExecutor(ThreadsEvaluator(), seed=0, num_workers=2) as executor:
        results = run_batch(executor, {0: load_genotype("nasnet_a"), 1: load_genotype("nasnet_a")})
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert executor.threads_per_worker == share
    for result in results.values():
        assert result.metrics == {"threads": share, "loader_threads": 1, "omp": share}
    with pytest.raises(ConfigError, match="threads_per_worker must be a positive integer"):
        PoolExecutor(ThreadsEvaluator(), seed=0, threads_per_worker=0)
