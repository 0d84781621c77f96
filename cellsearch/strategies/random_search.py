"""Random search: every decision drawn uniformly, the baseline the learning strategies must beat
(NASNet, Zoph et al. 2018, sec. 4.4: RL beat random search)."""
from __future__ import annotations

from typing import Any

from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies.base import Strategy


def random_actions(space: SearchSpace, rng) -> list[int]:
    """A uniformly drawn action sequence for ``space``."""
    return [rng.randrange(n) for n in space.layout.num_choices_list]


class RandomSearch(Strategy):
    """Proposes genotypes drawn uniformly from the search space."""

    name = "random"

    def _propose(self) -> tuple[list[int], Any]:
        return random_actions(self.space, self.rng), None
