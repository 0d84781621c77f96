"""Zero-cost scores: judge an untrained child network from one minibatch, in well under a second.

Each score builds the child at the search's size (N, F, classes, channels) with fixed initial weights
(``seed``) and looks at one fixed minibatch of the search's training data; higher is better:

- ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): the binary codes of
  every ReLU's output per image give a kernel K = codes . codes^T + (1 - codes) . (1 - codes)^T
  (how many units two images agree on); the score is log |det K|: networks that keep images apart
  at initialisation score higher.
- ``synflow`` (Tanaka et al. 2020): with every weight replaced by its absolute value and an all-ones
  input, the sum over parameters of |theta * dR/dtheta| for R the sum of the outputs (in float64,
  BN in eval mode so the network is linear in each weight). Data-free.
- ``snip`` (Lee et al. 2019): sum over conv and linear weights of |theta * dL/dtheta|, L the
  cross-entropy of the minibatch.
- ``grad_norm``: sum over conv and linear weights of the L2 norm of dL/dtheta.
- ``params``: the parameter count, the baseline a score must beat to be worth its time (Abdelfattah
  et al. 2021 found it often is not beaten on larger spaces).
- ``mult_adds``: multiply-accumulates of one image's forward pass, the other size baseline.

A leading ``-`` turns any score around (lower is better): ``-params`` prefers the smallest cell, which is
what a short child training rewards on the testbed table (Kendall tau +0.24 against its 3-seed accuracy,
where ``params`` has -0.24; benchmarks/bench_estimators.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellsearch.data import DataConfig, ImageDataModule, as_data_config, describe_dataset
from cellsearch.evaluators.child import ChildConfig, as_child_config
from cellsearch.evaluators.estimator import SCORING_ERRORS, Scored, error_text
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.space.networks import build_network
from cellsearch.space.profile import count_mult_adds, count_params
from cellsearch.evaluators.ranking import kendall_tau, spearman_rho, top_k_precision  # noqa: F401  (re-exported)
from cellsearch.validation import ConfigError

__all__ = ["SCORES", "ZeroCostScorer", "check_score", "kendall_tau", "spearman_rho", "split_score",
           "top_k_precision"]


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """log |det K| of the ReLU code kernel over the minibatch (Mellor et al. 2021)."""
    codes: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        codes.append((output.detach() > 0).flatten(1).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return 0.0
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign != 0 else float("-inf")


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Synaptic flow of the weights made positive, on an all-ones input (Tanaka et al. 2020)."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones_like(x[:1], dtype=torch.float64)).sum().backward()
    return float(sum((p.detach() * p.grad).abs().sum() for p in model.parameters() if p.grad is not None))


def _loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[nn.Parameter]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [w for w in _weights(model) if w.grad is not None]


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Connection sensitivity sum |theta * dL/dtheta| over conv and linear weights (Lee et al. 2019)."""
    return float(sum((w.detach() * w.grad).abs().sum() for w in _loss_gradients(model, x, y)))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of the per-layer L2 norms of the loss gradient."""
    return float(sum(w.grad.norm() for w in _loss_gradients(model, x, y)))


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The parameter count (the baseline)."""
    return float(count_params(model))


def mult_adds(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Multiply-accumulates of one image of the minibatch's size (the other size baseline)."""
    return float(count_mult_adds(model, input_size=tuple(x.shape[1:])))


SCORES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "naswot": naswot, "synflow": synflow, "snip": snip, "grad_norm": grad_norm, "params": params,
    "mult_adds": mult_adds}


def split_score(name: str) -> tuple[str, float]:
    """The score of SCORES that ``name`` names and its sign: ``-params`` -> ("params", -1.0)."""
    return (name[1:], -1.0) if name.startswith("-") else (name, 1.0)


def check_score(name: str) -> str:
    """Raise ConfigError unless ``name`` is a known zero-cost score, or one with a leading ``-``."""
    if not isinstance(name, str) or split_score(name)[0] not in SCORES:
        raise ConfigError(f"unknown zero-cost score {name!r}; choose one of {list(SCORES)}, or one of them with a "
                          f"leading '-' to prefer the lowest (e.g. -params: the smallest cell first)")
    return name


@dataclass
class ZeroCostScorer:
    """Scores genotypes with ``score`` on one fixed minibatch (``batch_size`` images, ``seed``) of ``data``,
    for children built as ``child`` says (its N, F; on the CPU of the process that scores)."""

    score: str
    child: ChildConfig
    data: DataConfig
    seed: int = 0
    batch_size: int = 64
    _batch: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_score(self.score)
        self.child, self.data = as_child_config(self.child), as_data_config(self.data)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(f"prejudge.batch_size must be an integer >= 2, got {self.batch_size!r}")

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first training minibatch of the data in ``seed``'s order (loaded once)."""
        if self._batch is None:
            datamodule = ImageDataModule(self.data, batch_size=self.batch_size, seed=self.seed)
            datamodule.prepare_data()
            x, y = next(iter(datamodule.train_dataloader()))
            self._batch = (x.float().cpu().contiguous(), y.cpu())
        return self._batch

    def __call__(self, genotype: Genotype) -> Scored:
        """The cell's score; unscored (value None, with the reason) when the network cannot be scored (a NaN
        score, a failing op)."""
        start = time.perf_counter()
        x, y = self.minibatch()
        info = describe_dataset(self.data)
        torch.manual_seed(self.seed)  # the same initial weights for every candidate of every round
        try:
            model = build_network(genotype, cells_per_stage=self.child.cells_per_stage, channels=self.child.channels,
                                  num_classes=info.num_classes, in_chans=info.in_chans)
            model.train()
            base, sign = split_score(self.score)
            value = sign * SCORES[base](model, x, y)
        except SCORING_ERRORS as err:  # a candidate that cannot be scored is ranked last, not fatal
            return Scored(None, time.perf_counter() - start, error_text(err))
        if math.isnan(value):
            return Scored(None, time.perf_counter() - start, "the score is NaN")
        return Scored(value, time.perf_counter() - start)

    def prepare(self, space: SearchSpace, trained: Sequence[tuple[Genotype, float]]) -> str:
        """Nothing to prepare: a zero-cost score needs neither the space nor trained children."""
        return ""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_batch": None}
