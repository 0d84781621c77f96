"""Which rewards are estimates: a one-shot search scores cells on a weight-sharing supernet, and its rewards are
the supernet's guess at each cell, not the accuracy of a trained child. An estimate of 0.21 is a cell the
supernet ranks low, not a child that failed, so every line a user reads names it as an estimate.

Every one-shot evaluation (:class:`cellsearch.evaluators.OneShotEvaluator`) records the supernet's step count
as the metric :data:`SUPERNET_STEPS`, scored or not: that metric is what marks a trial's reward as an estimate.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellsearch.search.store import TrialRow

__all__ = ["SUPERNET_STEPS", "is_estimate", "reward_text"]

SUPERNET_STEPS = "supernet_steps"


def is_estimate(row: "TrialRow") -> bool:
    """Whether ``row``'s reward is a supernet's estimate of the cell (a one-shot search), not a trained child's."""
    return SUPERNET_STEPS in row.other_metrics


def reward_text(row: "TrialRow") -> str:
    """``row``'s reward as a user reads it: "reward 0.9412", or "one-shot estimate 0.2100" for a supernet's."""
    return f"{'one-shot estimate' if is_estimate(row) else 'reward'} {row.reward:.4f}"
