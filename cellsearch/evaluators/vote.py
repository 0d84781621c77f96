"""A vote of zero-cost scores: a cell's mean standing over several scores (Abdelfattah et al. 2021 voted
synflow, jacob_cov and snip).

Each component score (a name of :data:`cellsearch.evaluators.zero_cost.SCORES`, a leading ``-`` for the
lowest first) places the cell among a fixed reference set of cells: its standing is the share of reference
cells it beats (a tie counts half). The vote is the mean standing over the components, between 0 and 1.
Because the reference set is fixed (``reference`` cells drawn uniformly from the search space with the
run's seed, scored once), a cell's vote does not depend on which other cells were scored with it, so the
votes of different rounds compare and the audit can rank them. :func:`mean_rank` is the same vote over a
set of cells that are all known at once (the benchmark's table).
"""
from __future__ import annotations

import random
import time
from typing import Any, Sequence

import numpy as np

from cellsearch.evaluators.estimator import Scored
from cellsearch.evaluators.zero_cost import ZeroCostScorer, check_score
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.validation import ConfigError

__all__ = ["ScoreVote", "mean_rank"]


def mean_rank(estimates: Sequence[Sequence[float]]) -> list[float]:
    """The mean rank of several estimates of the same cells (higher: better; ties share their mean rank)."""
    ranks = []
    for values in estimates:
        values = np.asarray(values, dtype=float)
        below = (values[None, :] < values[:, None]).sum(axis=1)
        tied = (values[None, :] == values[:, None]).sum(axis=1)
        ranks.append(below + (tied - 1) / 2.0)
    return list(np.mean(ranks, axis=0))


class ScoreVote:
    """The mean standing of a cell over the ``components`` scores, against ``reference`` cells of the space."""

    score = "vote"

    def __init__(self, components: Sequence[str], child: Any, data: Any, seed: int = 0, batch_size: int = 64,
                 reference: int = 20) -> None:
        if isinstance(components, str) or not isinstance(components, Sequence) or len(components) < 2:
            raise ConfigError(f"prejudge.vote must list at least two zero-cost scores, got {components!r}")
        if len(set(components)) != len(components):
            raise ConfigError(f"prejudge.vote lists a score twice: {list(components)}")
        if isinstance(reference, bool) or not isinstance(reference, int) or reference < 2:
            raise ConfigError(f"prejudge.reference must be an integer >= 2 (cells to place each score), "
                              f"got {reference!r}")
        self.scorers = [ZeroCostScorer(check_score(name), child, data, seed, batch_size) for name in components]
        self.reference, self.seed = reference, seed
        self._space: SearchSpace | None = None
        self._standards: list[np.ndarray] = []  # per component: the reference cells' scores (unscored left out)

    @property
    def components(self) -> list[str]:
        return [s.score for s in self.scorers]

    def prepare(self, space: SearchSpace, trained: Sequence[tuple[Genotype, float]]) -> str:
        """Score the reference cells of ``space`` once (the same cells for the same seed)."""
        if self._space != space:
            rng = random.Random(self.seed * 1_000_003 + 17)
            cells = [space.sample(rng) for _ in range(self.reference)]
            self._standards = [np.array([v for v in (scorer(g).value for g in cells) if v is not None])
                               for scorer in self.scorers]
            self._space = space
        return ""

    def __call__(self, genotype: Genotype) -> Scored:
        """The cell's mean standing; unscored when a component cannot score it (that component's reason)."""
        start = time.perf_counter()
        standings = []
        for scorer, standard in zip(self.scorers, self._standards):
            value, _, error = scorer(genotype)
            if value is None:
                return Scored(None, time.perf_counter() - start, f"{scorer.score}: {error}")
            if len(standard):
                standings.append(((standard < value).sum() + 0.5 * (standard == value).sum()) / len(standard))
        if not standings:
            return Scored(None, time.perf_counter() - start, "no reference cell could be scored")
        return Scored(float(np.mean(standings)), time.perf_counter() - start)

