"""Where children run: the device of each worker process, and packing children by memory.

Worker processes are spread over the visible GPUs, K per GPU (``workers_per_gpu``); without a
GPU the CPU counts as one device. Each device (a GPU, or the CPU when a budget is set for it)
offers a memory budget. A child reserves its estimated peak memory
(:meth:`~cellsearch.evaluators.base.Evaluator.memory_estimate`) times a calibration factor while it
trains. The factor starts at 1 and becomes the largest ratio of measured peak (the
``peak_memory_mb`` metric, ``torch.cuda.max_memory_allocated`` on a GPU) to estimate seen so far,
so an estimate that runs low is corrected by the first children measured. A child that needs more
than a whole budget still runs, alone: if it then runs out of memory, the evaluator retries it
with micro-batches (:mod:`cellsearch.evaluators.memory`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Hashable

import torch

from cellsearch.validation import ConfigError, number_in, positive_int
from cellsearch.evaluators.base import Evaluator
from cellsearch.evaluators.memory import MB
from cellsearch.space.genotype import Genotype

__all__ = ["MB", "MemoryPlan", "memory_budgets", "memory_estimate", "worker_devices"]

# Of each GPU's memory, what children may reserve: the rest is margin for CUDA contexts and the
# caching allocator's fragmentation.
GPU_MEMORY_SHARE = 0.9


def _check_gpus(gpus: list[Any]) -> None:
    """One line when the requested GPUs are not there."""
    visible = torch.cuda.device_count()
    missing = [g for g in gpus if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < visible]
    if missing:
        seen = f"GPUs 0..{visible - 1} are visible" if visible else "no CUDA GPU is visible"
        raise ConfigError(f"executor.gpus={gpus} asks for GPU(s) {missing} but {seen}; "
                          f"use executor.gpus=null (all visible GPUs, or the CPU when there are none)")


def worker_devices(accelerator: str, num_workers: int | None = None, gpus: list[int] | None = None,
                   workers_per_gpu: int | None = None) -> list[int | None]:
    """The GPU of each worker process (None: the CPU), round robin over ``gpus`` (default: every visible
    GPU when the child may use one), ``workers_per_gpu`` (default 1) on each; raises ConfigError."""
    if gpus is not None:
        gpus = list(gpus)
        _check_gpus(gpus)
    else:
        gpus = list(range(torch.cuda.device_count())) if accelerator in ("auto", "gpu", "cuda") else []
    positive_int(workers_per_gpu, "executor.workers_per_gpu", optional=True)
    per_device = workers_per_gpu or 1
    if num_workers is None:  # without a GPU: workers_per_gpu on the CPU, else a quarter of the cores
        num_workers = len(gpus) * per_device if gpus else workers_per_gpu or max(1, (os.cpu_count() or 1) // 4)
    positive_int(num_workers, "executor.num_workers")
    if gpus and num_workers > len(gpus) * per_device:
        raise ConfigError(f"executor.num_workers={num_workers} but only {len(gpus)} GPU(s) {gpus} with "
                          f"workers_per_gpu={per_device}: raise executor.workers_per_gpu")
    return [gpus[i % len(gpus)] for i in range(num_workers)] if gpus else [None] * num_workers


def memory_budgets(devices: list[int | None], device_memory_mb: float | None = None) -> dict[int | None, float]:
    """Bytes each device offers children: ``device_memory_mb`` on every device, else GPU_MEMORY_SHARE of
    each GPU's memory and no budget (no packing) on the CPU."""
    if number_in(device_memory_mb, "executor.device_memory_mb", low=0, low_open=True, optional=True) is not None:
        return {device: device_memory_mb * MB for device in set(devices)}
    return {gpu: GPU_MEMORY_SHARE * torch.cuda.get_device_properties(gpu).total_memory
            for gpu in set(devices) if gpu is not None}


def memory_estimate(evaluator: Evaluator, genotype: Genotype) -> float | None:
    """The evaluator's estimate of a child's peak memory (bytes); None when it has none, or when the
    child cannot even be built (it then fails in its worker, where the failure is recorded)."""
    try:
        return evaluator.memory_estimate(genotype)
    except Exception:
        return None


@dataclass
class MemoryPlan:
    """Memory budgets per device (bytes) and what the children running there reserve."""

    budgets: dict[Hashable, float]
    calibration: float = 1.0
    reserved: dict[Hashable, float] = field(default_factory=dict)
    measured: int = 0  # children whose peak memory calibrated the estimates

    def need(self, estimate: float | None) -> float:
        """Bytes a child with this estimate reserves (0 when nothing is known about it)."""
        return 0.0 if estimate is None else estimate * self.calibration

    def fits(self, device: Hashable, estimate: float | None) -> bool:
        """Whether a child may start on ``device`` now: it fits beside the others, or the device is idle."""
        if device not in self.budgets:
            return True
        used = self.reserved.get(device, 0.0)
        return used == 0.0 or used + self.need(estimate) <= self.budgets[device]

    def reserve(self, device: Hashable, estimate: float | None) -> float:
        """Reserve room for a child starting on ``device``; returns what to ``release`` when it ends."""
        amount = self.need(estimate) if device in self.budgets else 0.0
        self.reserved[device] = self.reserved.get(device, 0.0) + amount
        return amount

    def release(self, device: Hashable, amount: float) -> None:
        """Give back what a finished child reserved."""
        left = self.reserved.get(device, 0.0) - amount
        self.reserved[device] = 0.0 if left < 1.0 else left  # no rounding residue keeps an idle device "busy"

    def observe(self, estimate: float | None, peak: float | None) -> None:
        """Learn from a finished child's measured peak: estimates scale by the largest peak/estimate ratio."""
        if estimate and peak and estimate > 0 and peak > 0:
            ratio = peak / estimate
            self.calibration = ratio if self.measured == 0 else max(self.calibration, ratio)
            self.measured += 1
