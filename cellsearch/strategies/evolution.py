"""Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search", AmoebaNet).

Asynchronous and steady-state: the first ``population_size`` proposals are random; afterwards each
ask samples ``sample_size`` members of the current population (the told trials, with replacement),
takes the fittest as parent and proposes a mutant of it. Each tell adds the child to the population
and removes the oldest member once the population is larger than ``population_size``, so every
architecture dies of age however good it is.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from cellsearch.space.genotype import SearchSpace
from cellsearch.space.layout import CELL_TYPES
from cellsearch.strategies.base import Strategy
from cellsearch.strategies.random_search import random_actions
from cellsearch.validation import fail, number_in, positive_int

MUTATION_KINDS: tuple[str, ...] = ("input", "op", "combine")


def mutate(actions: list[int], space: SearchSpace, rng: random.Random, identity_prob: float = 0.0) -> list[int]:
    """Copy of ``actions`` with one input, one op or the combine of one block changed (Real et al.).

    A cell (normal or reduce) and a mutation kind are drawn uniformly, then one decision of that kind
    in that cell and a new value different from the old one. With probability ``identity_prob``
    the copy is returned unchanged (the paper's identity mutation).
    """
    child = list(actions)
    if rng.random() < identity_prob:
        return child
    decisions = space.layout.decisions
    cell = rng.choice(CELL_TYPES)
    by_kind = {kind: [i for i, d in enumerate(decisions) if d.cell == cell and d.kind == kind and d.num_choices > 1]
               for kind in MUTATION_KINDS}
    kinds = [k for k in MUTATION_KINDS if by_kind[k]]  # inputs always have 2+ choices
    index = rng.choice(by_kind[rng.choice(kinds)])
    new_value = rng.randrange(decisions[index].num_choices - 1)
    child[index] = new_value if new_value < child[index] else new_value + 1
    return child


class RegularizedEvolution(Strategy):
    """Aging evolution with tournament selection; defaults are the paper's (P=100, S=25)."""

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        population_size: int = 100,
        sample_size: int = 25,
        identity_prob: float = 0.05,
        dedupe: bool = False,
        dedupe_tries: int = 100,
        failure_reward: float = 0.0,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)
        positive_int(population_size, "search.population_size")
        if positive_int(sample_size, "search.sample_size") > population_size:
            fail("search.sample_size", f"at most search.population_size ({population_size})", sample_size)
        number_in(identity_prob, "search.identity_prob", 0, 1)
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.identity_prob = float(identity_prob)
        self.population: list[int] = []  # trial ids, oldest first
        self.num_withdrawn = 0  # withdrawn proposals do not count towards the random start

    def min_budget(self) -> tuple[int, str]:
        return 2 * self.population_size, f"the first population_size={self.population_size} children are random"

    def signals(self) -> dict[str, float]:
        """The population's size and the mean and best learning reward of its members."""
        rewards = [self.learning_reward(i) for i in self.population]
        signals = {"population": float(len(rewards))}
        if rewards:
            signals.update(population_mean_reward=sum(rewards) / len(rewards), population_best_reward=max(rewards))
        return signals

    def _propose(self) -> tuple[list[int], Any]:
        if self.num_asked - self.num_withdrawn < self.population_size or not self.population:
            return random_actions(self.space, self.rng), None
        sample = [self.rng.choice(self.population) for _ in range(self.sample_size)]
        parent = max(sample, key=self.learning_reward)
        return mutate(self._trials[parent].actions, self.space, self.rng, self.identity_prob), None

    def _told(self, trial_id: int) -> None:
        self.population.append(trial_id)
        if len(self.population) > self.population_size:
            self.population.pop(0)

    def _withdrawn(self, trial_id: int) -> None:
        self.num_withdrawn += 1

    def _extra_state(self) -> dict[str, Any]:
        return {"population": list(self.population), "num_withdrawn": self.num_withdrawn}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.population = [int(i) for i in state["population"]]
        self.num_withdrawn = int(state.get("num_withdrawn", 0))  # absent in states from before withdraw()
