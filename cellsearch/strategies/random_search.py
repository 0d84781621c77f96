"""Random search: every decision drawn uniformly, the baseline the learning strategies must beat
(NASNet, Zoph et al. 2018, sec. 4.4: RL beat random search)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellsearch.genotype import SearchSpace
from cellsearch.strategies.base import Strategy


def random_actions(space: SearchSpace, rng) -> list[int]:
    """A uniformly drawn action sequence for ``space``."""
    return [rng.randrange(d.num_choices) for d in space.decisions()]


class RandomSearch(Strategy):
    """Proposes genotypes drawn uniformly from the search space."""

    name = "random"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
        failure_reward: float = 0.0,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)

    def _propose(self) -> tuple[list[int], Any]:
        return random_actions(self.space, self.rng), None
