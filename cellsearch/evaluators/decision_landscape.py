"""Reward landscapes over any search space's flat decisions (``space.layout.decisions``).

:class:`~cellsearch.evaluators.landscapes.Landscape` reads NASNet's cells (ops, inputs, combines);
the other spaces (``space=nasrl``, ``space=hierarchical``) are reached here through what every
:class:`~cellsearch.space.spaces.Space` has: its action encoding. The families keep their meaning:

- ``additive``: main effects dominate (a preference for each choice of each decision), with weak
  pairwise interactions.
- ``epistatic``: pairwise interactions dominate: each decision's contribution depends jointly on its
  own choice and on ``PAIR_PARTNERS`` other decisions' (a random table per pair).
- ``rugged``: an NK landscape: every decision's contribution depends on itself and ``K`` other
  decisions through one random table, so neighbouring genotypes have unrelated rewards.
- ``deceptive``: main effects plus traps: the decisions are cut into runs of ``TRAP_SIZE``; a run that
  matches a hidden target in every decision pays, a partial match scores below no match.

As for the cells, the raw score is standardised over random genotypes of the space (z = 0 is a
typical random genotype), noise of ``noise`` standard deviations is added per evaluation and
``reward = sigmoid(z - 1)``. Scores see the encoding of the canonical genotype, so two genotypes that
compute the same function score the same.
"""
from __future__ import annotations

import math
import random
from typing import Any

from cellsearch.evaluators.landscapes import LandscapeSpec, gauss_table
from cellsearch.space.spaces import Space

# Weight of each kind of term per family: main effects, pairwise interactions, NK, trap.
DECISION_FAMILIES: dict[str, dict[str, float]] = {
    "additive": {"main": 1.0, "pair": 0.2, "nk": 0.0, "trap": 0.0},
    "epistatic": {"main": 0.35, "pair": 1.0, "nk": 0.0, "trap": 0.0},
    "rugged": {"main": 0.35, "pair": 0.2, "nk": 1.0, "trap": 0.0},
    "deceptive": {"main": 1.0, "pair": 0.2, "nk": 0.0, "trap": 1.0},
}
PAIR_PARTNERS = 2  # other decisions each decision interacts with pairwise
NK_NEIGHBOURS = 2  # K: other decisions each decision's NK contribution depends on
TRAP_SIZE = 4  # decisions per trap (a run of consecutive decisions)
STANDARDISE_SAMPLES = 500


def canonical_encoding(space: Space, genotype: Any) -> list[int]:
    """The action sequence of ``genotype``'s canonical form (GenotypeError outside ``space``)."""
    return space.encode(genotype.canonical())


class DecisionLandscape:
    """A seeded synthetic reward over the flat decisions of ``space``; call it with a genotype.

    Args:
        space: any search space (only its layout and encoding are read).
        family: ``additive``, ``epistatic``, ``rugged`` or ``deceptive`` (see ``DECISION_FAMILIES``).
        seed: which landscape of the family (its weights).
        noise: standard deviations of z added per evaluation.
    """

    def __init__(self, space: Space, family: str = "additive", seed: int = 0, noise: float = 0.2) -> None:
        if family not in DECISION_FAMILIES:
            raise ValueError(f"unknown landscape family {family!r}; choose one of {sorted(DECISION_FAMILIES)}")
        if not noise >= 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.space, self.spec = space, LandscapeSpec(family, int(seed), float(noise))
        self.weights = DECISION_FAMILIES[family]
        choices = list(space.layout.num_choices_list)
        n = len(choices)
        rng = random.Random(f"decision-landscape:{space.name}:{family}:{seed}")
        self.main = [gauss_table(rng, c) for c in choices]
        others = [[j for j in range(n) if j != i] for i in range(n)]
        self.partners = [rng.sample(o, min(PAIR_PARTNERS, len(o))) for o in others]
        self.pair = [[gauss_table(rng, choices[i], choices[j]) for j in js] for i, js in enumerate(self.partners)]
        self.nk_neighbours = [rng.sample(o, min(NK_NEIGHBOURS, len(o))) for o in others]
        # Decision i's NK table: one uniform draw per joint value of i and its neighbours (mixed radix).
        self.nk_tables = [[rng.random() - 0.5 for _ in range(math.prod(choices[j] for j in [i, *nb]))]
                          for i, nb in enumerate(self.nk_neighbours)]
        self.nk_radix = [[math.prod(choices[j] for j in [i, *nb][k + 1:]) for k in range(len(nb) + 1)]
                         for i, nb in enumerate(self.nk_neighbours)]
        self.target = canonical_encoding(space, space.sample(rng))
        sample_rng = random.Random(f"decision-landscape-standardise:{space.name}:{family}:{seed}")
        raw = [self.raw_score(space.sample(sample_rng)) for _ in range(STANDARDISE_SAMPLES)]
        self.mean = sum(raw) / len(raw)
        self.std = math.sqrt(sum((r - self.mean) ** 2 for r in raw) / len(raw)) or 1.0

    # --- the terms ------------------------------------------------------------------------------
    def _main(self, actions: list[int]) -> float:
        return sum(table[a] for table, a in zip(self.main, actions))

    def _pairs(self, actions: list[int]) -> float:
        return sum(table[actions[i]][actions[j]] for i, (js, tables) in enumerate(zip(self.partners, self.pair))
                   for j, table in zip(js, tables))

    def _nk(self, actions: list[int]) -> float:
        total = 0.0
        for i, neighbours in enumerate(self.nk_neighbours):
            total += self.nk_tables[i][sum(actions[j] * r for j, r in zip([i, *neighbours], self.nk_radix[i]))]
        return 4.0 * total  # NK terms are uniform in +-0.5: scaled to about the main effects' spread

    def _trap(self, actions: list[int]) -> float:
        total = 0.0
        for start in range(0, len(actions), TRAP_SIZE):
            run = slice(start, start + TRAP_SIZE)
            matches = sum(a == b for a, b in zip(actions[run], self.target[run]))
            total += 8.0 if matches == len(self.target[run]) else -0.5 * matches
        return total

    # --- scoring --------------------------------------------------------------------------------
    def raw_score(self, genotype: Any) -> float:
        """The noise-free score before standardisation (GenotypeError outside the space)."""
        actions = canonical_encoding(self.space, genotype)
        w = self.weights
        score = w["main"] * self._main(actions) + w["pair"] * self._pairs(actions)
        if w["nk"]:
            score += w["nk"] * self._nk(actions)
        if w["trap"]:
            score += w["trap"] * self._trap(actions)
        return score

    def z(self, genotype: Any) -> float:
        """Standardised noise-free score: 0 for a typical random genotype, 1 = one standard deviation better."""
        return (self.raw_score(genotype) - self.mean) / self.std

    def reward(self, genotype: Any, noise_seed: object = None) -> float:
        """Reward in (0, 1); ``noise_seed`` picks the noise draw (None = noise-free)."""
        z = self.z(genotype)
        if noise_seed is not None and self.spec.noise:
            z += self.spec.noise * random.Random(f"{self.spec}:{noise_seed}:{genotype.key()}").gauss(0.0, 1.0)
        return 1.0 / (1.0 + math.exp(-(z - 1.0)))

    __call__ = reward
