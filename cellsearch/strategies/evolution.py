"""Evolution with tournament selection, as two papers run it.

- Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
  Architecture Search", AmoebaNet), the NASNet space's: the first ``population_size`` proposals are
  random; afterwards each ask samples ``sample_size`` members of the current population (the told
  trials, with replacement), takes the fittest as parent and proposes a mutant of it. Each tell adds
  the child to the population and removes the oldest member once the population is larger than
  ``population_size``, so every architecture dies of age however good it is.
- Asynchronous tournament selection over hierarchical representations (Liu et al. 2018, sec. 3.2), the
  hierarchical space's: the first ``population_size`` proposals are the trivial genotype (every motif a
  chain of identities) diversified by ``init_mutations`` random mutations (the paper: 1000), and no
  genotype is ever removed (``aging=false``); a tournament then samples the same share of the growing
  population, ``sample_size / population_size`` (the paper samples 5% of the population). The paper's population of 200 with tournaments of 5%
  is ``population_size=200 sample_size=10``.

Both are asynchronous and steady-state. A mutation is the space's own (``space.mutate(actions, rng)``:
one edge of one motif for the hierarchical space), else the NASNet cell mutation below. ``aging`` and
``init_mutations`` left null take the values of the space's paper.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from cellsearch.space.layout import CELL_TYPES
from cellsearch.space.spaces import Space
from cellsearch.strategies.base import Strategy
from cellsearch.strategies.random_search import random_actions
from cellsearch.validation import boolean, fail, integer, number_in, positive_int

MUTATION_KINDS: tuple[str, ...] = ("input", "op", "combine")
# What ``aging`` and ``init_mutations`` left null mean in each space (its paper's settings).
SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "nasnet": {"aging": True, "init_mutations": 0},  # Real et al. 2019
    "hierarchical": {"aging": False, "init_mutations": 1000},  # Liu et al. 2018, sec. 3.2 and 4.1
}


def mutate(actions: list[int], space: Space, rng: random.Random, identity_prob: float = 0.0) -> list[int]:
    """Copy of ``actions`` with one decision changed: the space's own mutation where it has one
    (``space.mutate``), else one input, one op or the combine of one NASNet block (Real et al.).

    NASNet: a cell (normal or reduce) and a mutation kind are drawn uniformly, then one decision of
    that kind in that cell and a new value different from the old one. With probability
    ``identity_prob`` the copy is returned unchanged (Real et al.'s identity mutation).
    """
    child = list(actions)
    if rng.random() < identity_prob:
        return child
    if hasattr(space, "mutate"):
        return space.mutate(child, rng)
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
    """Evolution with tournament selection: aging evolution (P=100, S=25 in Real et al.) or, with
    ``aging=False`` and ``init_mutations``, Liu et al.'s (P=200, S=5% of it, 1000 initial mutations)."""

    name = "evolution"
    spaces = ("nasnet", "hierarchical")

    def __init__(
        self,
        space: Space | Mapping[str, Any],
        seed: int = 0,
        population_size: int = 100,
        sample_size: int = 25,
        identity_prob: float = 0.05,
        dedupe: bool = False,
        dedupe_tries: int = 100,
        failure_reward: float = 0.0,
        aging: bool | None = None,
        init_mutations: int | None = None,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)
        positive_int(population_size, "search.population_size")
        if positive_int(sample_size, "search.sample_size") > population_size:
            fail("search.sample_size", f"at most search.population_size ({population_size})", sample_size)
        number_in(identity_prob, "search.identity_prob", 0, 1)
        defaults = SPACE_DEFAULTS[self.space.name]
        self.aging = boolean(defaults["aging"] if aging is None else aging, "search.aging")
        init_mutations = defaults["init_mutations"] if init_mutations is None else init_mutations
        self.init_mutations = int(integer(init_mutations, "search.init_mutations", 0))
        if self.init_mutations and not hasattr(self.space, "trivial"):
            fail("search.init_mutations", f"0 (or null) for space={self.space.name}, which has no trivial genotype to "
                                          f"mutate (its first population is drawn at random)", init_mutations)
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.identity_prob = float(identity_prob)
        self.population: list[int] = []  # trial ids, oldest first
        self.num_withdrawn = 0  # withdrawn proposals do not count towards the random start

    def min_budget(self) -> tuple[int, str]:
        start = "mutants of the trivial genotype" if self.init_mutations else "random"
        return 2 * self.population_size, f"the first population_size={self.population_size} children are {start}"

    def signals(self) -> dict[str, float]:
        """The population's size and the mean and best learning reward of its members."""
        rewards = [self.learning_reward(i) for i in self.population]
        signals = {"population": float(len(rewards))}
        if rewards:
            signals.update(population_mean_reward=sum(rewards) / len(rewards), population_best_reward=max(rewards))
        return signals

    def _propose(self) -> tuple[list[int], Any]:
        if self.num_asked - self.num_withdrawn < self.population_size or not self.population:
            return self._initial(), None
        sample = [self.rng.choice(self.population) for _ in range(self.tournament_size())]
        parent = max(sample, key=self.learning_reward)
        return mutate(self._trials[parent].actions, self.space, self.rng, self.identity_prob), None

    def tournament_size(self) -> int:
        """Members sampled per tournament: ``sample_size``, and without aging the same share of the
        population as it grows (``sample_size / population_size``; Liu et al.: 5%)."""
        if self.aging:
            return self.sample_size
        return max(self.sample_size, round(self.sample_size * len(self.population) / self.population_size))

    def _initial(self) -> list[int]:
        """A member of the first population: a uniform draw, or the trivial genotype after
        ``init_mutations`` random mutations (Liu et al.)."""
        if not self.init_mutations:
            return random_actions(self.space, self.rng)
        actions = self.space.encode(self.space.trivial())
        for _ in range(self.init_mutations):
            actions = self.space.mutate(actions, self.rng)
        return actions

    def _told(self, trial_id: int) -> None:
        self.population.append(trial_id)
        if self.aging and len(self.population) > self.population_size:
            self.population.pop(0)

    def _withdrawn(self, trial_id: int) -> None:
        self.num_withdrawn += 1

    def _extra_state(self) -> dict[str, Any]:
        return {"population": list(self.population), "num_withdrawn": self.num_withdrawn}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.population = [int(i) for i in state["population"]]
        self.num_withdrawn = int(state.get("num_withdrawn", 0))  # absent in states from before withdraw()
