"""Measured latency: one image (batch 1) through a network, after warm-up, median of repeated runs.

Measured on the device the search runs on, never estimated from counts: mult-adds miss memory
traffic and kernel launches, which dominate small children. Every cell of a search is measured the
same way (same input size, same device, same repeats); :func:`device_name` says which device, and
the search writes it to ``device.txt`` in the run directory.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from cellsearch.space.genotype import Genotype
from cellsearch.space.networks import build_network

__all__ = ["WARMUP", "REPEATS", "child_latency_ms", "device_for", "device_name", "measure_latency_ms"]

WARMUP = 5      # runs before timing: allocator, cuDNN autotuning, caches
REPEATS = 30    # timed runs; the median resists a busy machine's outliers


def device_for(accelerator: str) -> torch.device:
    """The torch device a Lightning ``accelerator`` setting trains on here (auto: a GPU when there is one)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: "torch.device | str") -> str:
    """A line naming the device and the threads or GPU model latency is measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{device.type}: {model}, {torch.get_num_threads()} torch thread(s) (torch {torch.__version__})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency_ms(model: nn.Module, input_size: tuple[int, int, int], device: "torch.device | str",
                       warmup: int = WARMUP, repeats: int = REPEATS) -> float:
    """Median milliseconds of one forward pass of one image (eval mode) on ``device``."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(1, *input_size, device=device)
    for _ in range(warmup):
        model(x)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def child_latency_ms(genotype: Genotype, cells_per_stage: int, channels: int, num_classes: int,
                     input_size: tuple[int, int, int], device: "torch.device | str") -> float:
    """Latency of the child network of ``genotype`` (weights do not matter: a fresh one is timed)."""
    model = build_network(genotype, cells_per_stage=cells_per_stage, channels=channels, num_classes=num_classes,
                          in_chans=input_size[0])
    try:
        return measure_latency_ms(model, input_size, device)
    finally:
        del model
