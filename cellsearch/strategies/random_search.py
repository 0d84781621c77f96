"""Random search: every decision drawn uniformly, the baseline the learning strategies must beat
(NASNet, Zoph et al. 2018, sec. 4.4: RL beat random search)."""
from __future__ import annotations

from typing import Any

from cellsearch.strategies.base import Strategy, random_actions

__all__ = ["RandomSearch", "random_actions"]


class RandomSearch(Strategy):
    """Proposes genotypes drawn uniformly from the search space."""

    name = "random"
    spaces = None  # draws from any space's decisions

    def _propose(self) -> tuple[list[int], Any]:
        return random_actions(self.space, self.rng), None
