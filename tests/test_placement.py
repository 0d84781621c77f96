"""Several children per device: workers per GPU, Ray's fractional GPUs, packing by memory (on the CPU)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from cellsearch.validation import ConfigError
from cellsearch.evaluators import TrainEvaluator
from cellsearch.evaluators.child import evaluate_child
from cellsearch.evaluators.memory import MB
from cellsearch.search.executors import PoolExecutor, RayExecutor
from cellsearch.search.placement import MemoryPlan, memory_budgets, worker_devices
from cellsearch.space.genotype import load_genotype
from cellsearch.space.network import CellNetCifar
from cellsearch.space.profile import estimate_training_memory
from test_executors import CHILD, DATA

NO_CUDA = not torch.cuda.is_available()


# --- which device each worker gets -----------------------------------------------------------------

@pytest.mark.skipif(not NO_CUDA, reason="the plan without a GPU")
def test_without_a_gpu_workers_per_gpu_puts_k_workers_on_the_cpu():
    assert worker_devices("auto", workers_per_gpu=3) == [None] * 3
    assert worker_devices("auto") == [None] * max(1, (os.cpu_count() or 1) // 4)
    assert worker_devices("auto", num_workers=2, workers_per_gpu=5) == [None, None]


def test_k_workers_per_gpu_round_robin_over_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the plan for a 2-GPU machine
    assert worker_devices("auto", workers_per_gpu=3) == [0, 1, 0, 1, 0, 1]
    assert worker_devices("auto") == [0, 1]
    assert worker_devices("auto", gpus=[1], workers_per_gpu=2) == [1, 1]
    assert worker_devices("cpu", workers_per_gpu=2) == [None, None]  # a CPU child never takes a GPU
    with pytest.raises(ConfigError, match="raise executor.workers_per_gpu"):
        worker_devices("auto", num_workers=5, workers_per_gpu=2)
    with pytest.raises(ConfigError, match=r"GPU\(s\) \[2\] but GPUs 0..1 are visible"):
        worker_devices("auto", gpus=[0, 2])


@pytest.mark.skipif(not NO_CUDA, reason="asks for a GPU where there is none")
@pytest.mark.parametrize("make, match", [
    (lambda: PoolExecutor(TrainEvaluator(CHILD, DATA), gpus=[0]), r"executor.gpus=\[0\] .* no CUDA GPU is visible"),
    (lambda: PoolExecutor(TrainEvaluator({**CHILD.__dict__, "accelerator": "gpu"}, DATA)),
     "child.accelerator=gpu but no CUDA GPU is visible"),
    (lambda: evaluate_child("nasnet_a", {**CHILD.__dict__, "accelerator": "cuda"}, DATA),
     "child.accelerator=cuda but no CUDA GPU is visible"),
])
def test_a_gpu_requested_where_none_exists_is_one_line(make, match):
    with pytest.raises(ConfigError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, match", [
    (dict(workers_per_gpu=0), "executor.workers_per_gpu must be an integer >= 1"),
    (dict(device_memory_mb=-1), "executor.device_memory_mb must be a number > 0"),
    (dict(num_workers=0), "executor.num_workers must be an integer >= 1"),
])
def test_bad_placement_settings_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        PoolExecutor(TrainEvaluator(CHILD, DATA), **options)


# --- packing by memory -----------------------------------------------------------------------------

def test_memory_plan_packs_while_children_fit_and_learns_from_measured_peaks():
    plan = MemoryPlan(memory_budgets([0, 0, 1], device_memory_mb=100))
    assert set(plan.budgets) == {0, 1}
    first = plan.reserve(0, 40 * MB)
    assert plan.fits(0, 40 * MB) and not plan.fits(0, 70 * MB) and plan.fits(1, 70 * MB)
    second = plan.reserve(0, 40 * MB)
    assert not plan.fits(0, 40 * MB) and plan.fits(0, None)  # nothing known about it: it does not wait
    plan.release(0, first)
    plan.release(0, second)
    assert plan.fits(0, 500 * MB)  # too big for any budget: it runs alone, where the OOM retry can catch it
    plan.observe(40 * MB, 60 * MB)  # the estimate ran low by 1.5x: later children reserve 1.5x
    plan.observe(40 * MB, 50 * MB)
    assert plan.calibration == 1.5 and plan.need(40 * MB) == 60 * MB and plan.measured == 2
    assert not MemoryPlan(memory_budgets([None])).budgets  # no packing on the CPU unless asked


def test_memory_estimate_grows_with_the_batch_and_leaves_the_network_as_it_was():
    network = CellNetCifar(load_genotype("nasnet_a"), cells_per_stage=1, channels=8)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    weights = sum(p.numel() * 4 for p in network.parameters())
    small, large = (estimate_training_memory(network, (3, 16, 16), b) for b in (32, 64))
    assert 3 * weights < small < large
    assert large - small == pytest.approx(small - 3 * weights, rel=0.01)  # activations: linear in the batch
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())  # BN statistics untouched
    assert network.training


@pytest.mark.slow
def test_workers_per_gpu_on_the_cpu_packs_children_by_memory():
    evaluator = TrainEvaluator(CHILD, DATA)
    genotype = load_genotype("nasnet_a")
    estimate = evaluator.memory_estimate(genotype)
    # Two workers on the CPU, with room for one child at a time.
    executor = PoolExecutor(evaluator, seed=0, workers_per_gpu=2, device_memory_mb=1.5 * estimate / MB)
    try:
        assert executor.num_workers == 2 and executor.threads_per_worker == max(1, (os.cpu_count() or 1) // 2)
        for trial_id in range(3):
            executor.submit(trial_id, genotype)
        results, most = {}, 0
        deadline = time.monotonic() + 300
        while executor.num_running() and time.monotonic() < deadline:
            most = max(most, len(executor.running()))  # the second child waits for room, not for a worker
            results.update(executor.wait(timeout=0.2))
    finally:
        executor.close()
    assert sorted(results) == [0, 1, 2] and most == 1
    for result in results.values():
        assert result.ok and result.metrics["memory_estimate_mb"] == pytest.approx(estimate / MB)
    assert executor.memory.reserved == {None: 0.0}


def test_ray_children_per_gpu_or_num_gpus_per_child_not_both():
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="not both"):
        RayExecutor(TrainEvaluator(CHILD, DATA), children_per_gpu=2, num_gpus_per_child=0.5)
