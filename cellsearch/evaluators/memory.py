"""Memory of a child's training: its peak measured on a GPU, and the retry of a child that ran out.

A child that runs out of GPU memory (beside others packed on the same GPU, or alone) is trained
once more with each batch split into micro-batches whose gradients are accumulated before the
optimizer steps: the effective batch, the learning rate and its schedule stay as they were, so its
reward stays comparable with the others'. Batch-norm statistics are then taken per micro-batch,
the one thing that differs. The result records ``micro_batches`` and ``oom_retried``.
"""
from __future__ import annotations

import torch

__all__ = ["MB", "OOM_ERROR_PREFIX", "PeakMemory", "micro_batches_after_oom"]

MB = 1024 ** 2
OOM_ERROR_PREFIX = "out of memory: "  # how a failed child's error starts when the device ran out of memory
# The retry's micro-batches hold a quarter of the activations: room for a child that overran its
# estimate even by a large factor, at no cost to its result.
OOM_SPLIT = 4


def micro_batches_after_oom(batch_size: int, micro_batches: int) -> int | None:
    """Micro-batches for the one retry of a child that ran out of memory: OOM_SPLIT times as many, or
    twice as many, whichever divides the batch; None when the batch cannot be split further."""
    for factor in (OOM_SPLIT, 2):
        if batch_size % (micro_batches * factor) == 0:
            return micro_batches * factor
    return None


class PeakMemory:
    """Peak memory allocated on ``device`` from construction on (``torch.cuda.max_memory_allocated``);
    not measured on a CPU, where torch keeps no such count."""

    def __init__(self, device: "torch.device | str"):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # A fresh worker process may not have touched CUDA yet; its allocator has no per-device
            # statistics until CUDA is initialised ("Invalid device argument" otherwise).
            torch.cuda.init()
            torch.cuda.reset_peak_memory_stats(self.device)

    def metrics(self) -> dict[str, float]:
        """``{"peak_memory_mb": ...}`` on a GPU, else empty."""
        if self.device.type != "cuda":
            return {}
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / MB}
