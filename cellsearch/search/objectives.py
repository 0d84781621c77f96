"""Objectives: the reward a strategy learns from, computed from an evaluation's metrics.

The reward of a trial is stored beside its metrics; which objective made it is part of the run's
settings, so a resumed search cannot mix two meanings of "reward".
"""
from __future__ import annotations

from cellsearch.data import ConfigError
from cellsearch.evaluators.base import EvalResult

__all__ = ["AccuracyObjective", "Objective"]


class Objective:
    """Maps a successful evaluation's metrics to one reward (higher is better)."""

    name = "objective"
    #: Metrics the evaluator must measure for this objective.
    needs: tuple[str, ...] = ()

    def check(self, measured: tuple[str, ...]) -> None:
        """Raise ConfigError if the evaluator does not measure a metric this objective needs."""
        missing = [m for m in self.needs if m not in measured]
        if missing:
            raise ConfigError(f"objective={self.name} needs the metric(s) {missing}, which the evaluator does not "
                              f"measure (it measures {list(measured)})")

    def reward(self, result: EvalResult) -> float | None:
        """The reward of ``result``; None for a failed evaluation."""
        raise NotImplementedError


class AccuracyObjective(Objective):
    """Reward = validation accuracy (NASNet)."""

    name = "accuracy"
    needs = ("val_accuracy",)

    def reward(self, result: EvalResult) -> float | None:
        return result.metric("val_accuracy") if result.ok else None
