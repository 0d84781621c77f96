"""Speed settings for training children: which ones pay off on which device, and compiling a child.

The rules follow measurements of ``benchmarks/bench_proxy_child.py`` (numbers, machine and command
in benchmarks/RESULTS.md). On a 2-core Xeon CPU, NASNet-A proxy child (N=2, F=16, batch 128),
against fp32 NCHW eager training on the tensor loader:

- channels_last: 1.40x training and 1.85x evaluation images/s. Chosen automatically on CPUs.
- bf16 autocast (with channels_last): 0.71x the training and 1.7x the evaluation images/s of
  channels_last alone. Never chosen automatically.
- ``torch.compile`` of the training forward and backward: a further 1.54x per step over
  channels_last, for ~260 s of compiling (~190 s once compiled kernels are cached). Every child is
  a new architecture and compiles anew, so it pays only for children that train long enough: on
  that CPU after ~250 steps, and it is chosen automatically from ``COMPILE_MIN_STEPS`` steps on.

Nothing has been measured on a GPU yet: the automatic choices there are eager and NCHW until
``bench_proxy_child.py`` has been run on one.
"""
from __future__ import annotations

import importlib.util
import shutil

import torch
from torch import nn

__all__ = ["COMPILE_MIN_STEPS", "compile_training_forward", "compiler_available", "use_channels_last",
           "use_compile"]

# Four times the measured break-even (~250 steps on the CPU above), for margin on other machines.
COMPILE_MIN_STEPS = 1000


def _device_type(device: "torch.device | str") -> str:
    return torch.device(device).type


def use_channels_last(setting: bool | None, device: "torch.device | str") -> bool:
    """``setting`` if given; automatic (None): on for CPUs, where it was measured faster, off elsewhere."""
    if setting is not None:
        return setting
    return _device_type(device) == "cpu"


def compiler_available(device: "torch.device | str") -> bool:
    """Whether torch.compile's default backend can build kernels here (a C++ compiler; Triton for CUDA)."""
    kind = _device_type(device)
    if kind == "cpu":
        return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    if kind == "cuda":
        return importlib.util.find_spec("triton") is not None
    return False


def use_compile(setting: bool | None, device: "torch.device | str", training_steps: int) -> bool:
    """``setting`` if given; automatic (None): on CPUs for children of at least COMPILE_MIN_STEPS
    training steps when a compiler is available, off elsewhere (not yet measured on GPUs)."""
    if setting is not None:
        return setting
    return _device_type(device) == "cpu" and training_steps >= COMPILE_MIN_STEPS and compiler_available(device)


def compile_training_forward(model: nn.Module, mode: str | None = None, backend: str = "inductor") -> None:
    """Compile ``model.forward_with_aux`` (what training calls) in place; ``forward`` stays eager.

    The module itself is left as it is, so its ``state_dict`` keys do not change (compiling the
    module would prefix them with ``_orig_mod.``). Dynamo's caches are cleared first: a process
    that trains many children sees a new architecture each time, and without a reset dynamo keeps
    every earlier graph and, after ``torch._dynamo.config.recompile_limit`` architectures (8),
    silently runs the rest eagerly.
    """
    if not callable(getattr(model, "forward_with_aux", None)):
        raise TypeError(f"{type(model).__name__} has no forward_with_aux method to compile")
    torch._dynamo.reset()
    model.forward_with_aux = torch.compile(model.forward_with_aux, mode=mode, backend=backend)
