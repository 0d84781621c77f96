"""Objectives: the reward a strategy learns from, computed from an evaluation's metrics.

The reward of a trial is stored beside its metrics; which objective made it is part of the run's
settings, so a resumed search cannot mix two meanings of "reward". Three objectives
(``objective=accuracy|constrained|pareto``):

- accuracy: reward = validation accuracy (NASNet).
- constrained: the MnasNet reward (Tan et al. 2019), accuracy x (m / target) ^ w for a cost metric
  m (params, mult_adds or latency_ms), with w = -0.07 by default: a cell at the target keeps its
  accuracy, one twice as costly loses about 5 % of it, one half as costly gains about 5 %.
- pareto: reward = 1 / (1 + rank), where rank is the trial's non-dominated rank over (accuracy up,
  metric down) among all successful trials recorded so far, this one included: 0 (reward 1) on the
  current front, 1 (reward 1/2) on the front that remains once that one is removed, and so on. It is
  computed once, when the trial is recorded, and stored; a later trial that dominates it does not
  change it (the strategy was told that reward, and the store keeps what it was told).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EvalResult

__all__ = ["COST_METRICS", "AccuracyObjective", "ConstrainedObjective", "Objective", "ParetoObjective",
           "pareto_front", "pareto_ranks"]

COST_METRICS: tuple[str, ...] = ("params", "mult_adds", "latency_ms")


class Objective:
    """Maps a successful evaluation's metrics to one reward (higher is better)."""

    name = "objective"
    #: Metrics the evaluator must measure for this objective.
    needs: tuple[str, ...] = ()
    #: The cost metric traded against accuracy (None: accuracy alone).
    metric: str | None = None
    #: Whether :meth:`reward` looks at the earlier trials (``previous``).
    uses_history = False

    def check(self, measured: Sequence[str]) -> None:
        """Raise ConfigError if the evaluator does not measure a metric this objective needs."""
        missing = [m for m in self.needs if m not in measured]
        if missing:
            hint = " (set evaluator.latency=true to measure latency_ms)" if "latency_ms" in missing else ""
            raise ConfigError(f"objective={self.name} needs the metric(s) {missing}, which the evaluator does not "
                              f"measure (it measures {list(measured)}){hint}")

    def reward(self, result: EvalResult, previous: Sequence[Mapping[str, float]] = ()) -> float | None:
        """The reward of ``result`` (``previous``: metrics of the successful trials recorded before it);
        None for a failed evaluation."""
        raise NotImplementedError

    def describe(self) -> str:
        """A few words for log lines and plot titles."""
        return self.name


class AccuracyObjective(Objective):
    """Reward = validation accuracy (NASNet)."""

    name = "accuracy"
    needs = ("val_accuracy",)

    def reward(self, result: EvalResult, previous: Sequence[Mapping[str, float]] = ()) -> float | None:
        return result.metric("val_accuracy") if result.ok else None


def check_metric(metric: str, objective: str) -> str:
    """Raise ConfigError unless ``metric`` is a cost metric an objective can trade against accuracy."""
    if metric not in COST_METRICS:
        raise ConfigError(f"objective.metric={metric!r} is not a cost metric; choose one of {list(COST_METRICS)} "
                          f"(objective={objective})")
    return metric


class ConstrainedObjective(Objective):
    """The MnasNet soft-constrained reward: accuracy x (metric / target) ^ weight."""

    name = "constrained"

    def __init__(self, metric: str = "params", target: float = 1e6, weight: float = -0.07) -> None:
        self.metric = check_metric(metric, self.name)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise ConfigError(f"objective.target must be a positive {metric} value, got {target!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"objective.weight must be a number (MnasNet uses -0.07), got {weight!r}")
        self.target, self.weight = float(target), float(weight)
        self.needs = ("val_accuracy", self.metric)

    def reward(self, result: EvalResult, previous: Sequence[Mapping[str, float]] = ()) -> float | None:
        if not result.ok:
            return None
        accuracy, cost = result.metric("val_accuracy"), result.metric(self.metric)
        if accuracy is None or cost is None:
            return None
        # A measured cost of 0 (a latency below the timer's resolution) counts as the smallest positive one.
        return accuracy * (max(float(cost), 1e-12) / self.target) ** self.weight

    def describe(self) -> str:
        return f"accuracy x ({self.metric} / {self.target:g}) ^ {self.weight:g}"


class ParetoObjective(Objective):
    """Reward = 1 / (1 + non-dominated rank) over (accuracy up, ``metric`` down), at recording time."""

    name = "pareto"
    uses_history = True

    def __init__(self, metric: str = "params") -> None:
        self.metric = check_metric(metric, self.name)
        self.needs = ("val_accuracy", self.metric)

    def reward(self, result: EvalResult, previous: Sequence[Mapping[str, float]] = ()) -> float | None:
        if not result.ok or result.metric("val_accuracy") is None or result.metric(self.metric) is None:
            return None
        points = [(m["val_accuracy"], m[self.metric]) for m in previous
                  if m.get("val_accuracy") is not None and m.get(self.metric) is not None]
        points.append((result.metric("val_accuracy"), result.metric(self.metric)))
        return 1.0 / (1.0 + pareto_ranks(points)[-1])

    def describe(self) -> str:
        return f"Pareto rank over accuracy and {self.metric}"


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is at least as accurate and as cheap as ``b``, and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated rank of each (accuracy, cost) point: 0 on the front, 1 on the front once it is
    removed, and so on (equal points share a rank)."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (accuracy, cost) points, cheapest first."""
    ranks = pareto_ranks(points)
    return sorted((i for i, r in enumerate(ranks) if r == 0), key=lambda i: (points[i][1], -points[i][0]))
