"""Eager is the reference: a compiled training step is used only once it has matched eager here.

``torch.compile`` can produce wrong gradients on some CPUs (inductor's AVX2 kernels for the
factorized reduction's convolutions, torch 2.14, gave gradients off by 1-2 and even NaN losses,
while eager agreed with a float64 reference). Before a child trains compiled, :func:`guarded_compile`
runs one forward and backward of that child's own network on its first training batch, eagerly and
compiled, from the same weights, and compares the loss and every parameter's gradient
(``torch.testing.assert_close`` tolerances below). On a match the child trains compiled; on a
mismatch one warning line names the parameter with the largest difference and the backend, and the
child trains eagerly. The first batch is used, not a smaller one, because inductor's kernels depend
on the shapes: the probe checks exactly the kernels that training will run.

Verdicts are cached per process by (device kind with its CPU instruction set, torch version, backend,
genotype key, network shape), so a cell checked once is not probed again, and a cell that failed is
not compiled again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from cellsearch.evaluators.speed import compile_training_forward

__all__ = ["GRAD_TOLERANCE", "LOSS_TOLERANCE", "ProbeVerdict", "clear_verdicts", "device_kind", "guarded_compile",
           "probe_compiled"]

log = logging.getLogger(__name__)

# (rtol, atol), as torch.testing.assert_close applies them: |a - b| <= atol + rtol * |b|.
LOSS_TOLERANCE = (1e-4, 1e-5)
GRAD_TOLERANCE = (1e-3, 1e-4)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # one batch -> loss, through model.forward_with_aux


@dataclass(frozen=True)
class ProbeVerdict:
    """The outcome of one probe: does the compiled step match eager, and where did it differ most."""

    ok: bool
    backend: str
    device: str
    worst_name: str       # "loss" or the parameter with the largest excess over the tolerance
    worst_diff: float     # its largest absolute difference (nan if the compiled side was not finite)
    seconds: float        # what the probe cost (0 for a cached verdict)
    cached: bool = False

    def describe(self) -> str:
        """One line for the log."""
        return (f"compiled training (backend {self.backend}) differs from eager on {self.device}: "
                f"{self.worst_name} off by {self.worst_diff:.3g}")


_VERDICTS: dict[tuple, ProbeVerdict] = {}


def clear_verdicts() -> None:
    """Forget cached verdicts (tests; a process that changes its CPU capability)."""
    _VERDICTS.clear()


def device_kind(device: "torch.device | str") -> str:
    """The kind of device that decides which kernels run: the CPU's instruction set, or the GPU's name."""
    device = torch.device(device)
    if device.type == "cpu":
        return f"cpu-{torch.backends.cpu.get_cpu_capability()}"
    if device.type == "cuda":
        return f"cuda-{torch.cuda.get_device_name(device)}"
    return device.type


def _backend_name(backend: "str | Callable") -> str:
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, dict]:
    """Loss and gradients of one forward and backward from the model's current state."""
    for p in model.parameters():
        p.grad = None
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(0)
        loss = loss_fn(x, y)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    for p in model.parameters():
        p.grad = None
    return loss.detach().float(), grads


def _excess(a: torch.Tensor, b: torch.Tensor, tolerance: tuple[float, float]) -> tuple[float, float]:
    """(largest |a-b| beyond what the tolerance allows, largest |a-b|); inf where a and b disagree on finiteness."""
    a, b = a.double(), b.double()
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf"), float("nan")
    finite = torch.isfinite(b)
    diff = (a[finite] - b[finite]).abs()
    if diff.numel() == 0:
        return 0.0, 0.0
    rtol, atol = tolerance
    return float((diff - atol - rtol * b[finite].abs()).max()), float(diff.max())


def probe_compiled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                   backend: "str | Callable" = "inductor", mode: str | None = None) -> ProbeVerdict:
    """Compile ``model.forward_with_aux`` in place and compare one training step with eager.

    The model's weights and buffers (batch-norm statistics) are as before when this returns; on a
    mismatch ``forward_with_aux`` is the eager one again.
    """
    start = time.perf_counter()
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eager_loss, eager_grads = _step(model, x, y, loss_fn)
    model.load_state_dict(saved)
    compile_training_forward(model, mode=mode, backend=backend)
    try:
        compiled_loss, compiled_grads = _step(model, x, y, loss_fn)
        worst = ("loss", *_excess(compiled_loss, eager_loss, LOSS_TOLERANCE))
        for name, grad in eager_grads.items():
            other = compiled_grads.get(name)
            found = (float("inf"), float("nan")) if other is None else _excess(other, grad, GRAD_TOLERANCE)
            if found[0] > worst[1]:
                worst = (name, *found)
    except Exception as err:  # a backend that cannot build this graph: train eagerly, say why
        log.debug("compiling failed: %r", err)
        worst = (f"compiling ({type(err).__name__})", float("inf"), float("nan"))
    finally:
        model.load_state_dict(saved)
    ok = worst[1] <= 0
    if not ok:
        del model.forward_with_aux  # the instance attribute set by compiling; the class's eager method remains
        torch._dynamo.reset()
    return ProbeVerdict(ok, _backend_name(backend), device_kind(x.device), worst[0], worst[2],
                        time.perf_counter() - start)


def _cache_key(model: nn.Module, x: torch.Tensor, backend: "str | Callable", genotype_key: str) -> tuple:
    shapes = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    return (device_kind(x.device), torch.__version__, _backend_name(backend), genotype_key, hash(shapes),
            tuple(x.shape), x.dtype, torch.is_autocast_enabled(x.device.type))


def guarded_compile(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, genotype_key: str,
                    backend: "str | Callable" = "inductor", mode: str | None = None) -> ProbeVerdict:
    """Compile ``model``'s training forward if a probe (or a cached verdict) says it matches eager here."""
    key = _cache_key(model, x, backend, genotype_key)
    cached = _VERDICTS.get(key)
    if cached is not None:
        if cached.ok:
            compile_training_forward(model, mode=mode, backend=backend)
        verdict = ProbeVerdict(cached.ok, cached.backend, cached.device, cached.worst_name, cached.worst_diff,
                               0.0, cached=True)
    else:
        verdict = _VERDICTS[key] = probe_compiled(model, x, y, loss_fn, backend, mode)
    if not verdict.ok:
        log.warning("%s; training this child eagerly", verdict.describe())
    return verdict
