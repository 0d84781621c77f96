"""What the pre-judger asks of a cheap estimator of a cell's trained accuracy (one protocol, three kinds).

An estimator judges an untrained cell: a zero-cost score (:mod:`cellsearch.evaluators.zero_cost`), a vote
of scores (:mod:`cellsearch.evaluators.vote`) or a predictor learned from the run's trained children
(:mod:`cellsearch.evaluators.predictor`). Each is called on one genotype and returns :class:`Scored`: a
value (higher is better) or, when it cannot score the cell, None and the reason, so the pre-judger marks
that cell unscored in one line and goes on. Before each round :meth:`Estimator.prepare` gives it the search
space and the children trained so far; it returns why it cannot score yet ("" when it can).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence

from cellsearch.space.genotype import Genotype, SearchSpace

__all__ = ["Estimator", "SCORING_ERRORS", "Scored", "error_text"]

# What an estimate may raise on a cell it cannot handle (an op that fails, a singular matrix, an overflow):
# the cell is unscored and the search goes on. Anything else is a bug and propagates.
SCORING_ERRORS = (RuntimeError, ValueError, ArithmeticError)


class Scored(NamedTuple):
    """What an estimator made of one cell: its value (higher is better; None: unscored), the seconds it took,
    and why it could not score the cell (empty when it could)."""

    value: float | None
    seconds: float
    error: str = ""


def error_text(err: BaseException) -> str:
    """One line naming an exception: its type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class Estimator(Protocol):
    """A cheap judge of untrained cells (see the module docstring)."""

    score: str  # its name, as prejudge.score names it

    def prepare(self, space: SearchSpace, trained: Sequence[tuple[Genotype, float]]) -> str:
        """Get ready to score cells of ``space``, given the (genotype, val_accuracy) of the children trained
        so far; return why it cannot score yet, or "" when it can."""
        ...

    def __call__(self, genotype: Genotype) -> Scored:
        ...
