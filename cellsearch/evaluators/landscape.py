"""Evaluate cells on a synthetic reward landscape: a whole search in seconds, for comparing strategies."""
from __future__ import annotations

import time
from typing import Any, Mapping

from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EvalResult, Evaluator, failed_result
from cellsearch.evaluators.landscapes import FAMILIES, Landscape
from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace

__all__ = ["LandscapeEvaluator"]


class LandscapeEvaluator(Evaluator):
    """``val_accuracy`` of a cell = a seeded landscape's reward (see ``landscapes.py``), with noise
    drawn from the search seed and the trial id, so a rerun of a trial gives the same number."""

    name = "landscape"
    metrics = ("val_accuracy",)

    def __init__(self, space: "SearchSpace | Mapping[str, Any]", family: str = "additive", seed: int = 0,
                 noise: float = 0.2) -> None:
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(**dict(space))
        self.family, self.seed, self.noise = family, int(seed), float(noise)
        self._landscape: Landscape | None = None  # built where it evaluates (keeps the evaluator small to pickle)

    def check(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"evaluator.family: unknown landscape family {self.family!r}; "
                              f"choose one of {sorted(FAMILIES)}")
        if not self.noise >= 0:
            raise ConfigError(f"evaluator.noise: must be non-negative, got {self.noise}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_landscape": None}

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0) -> EvalResult:
        start = time.perf_counter()
        if self._landscape is None:
            self.check()
            self._landscape = Landscape(self.space, self.family, self.seed, self.noise)
        try:
            reward = self._landscape(genotype, noise_seed=(seed, trial_id))
        except GenotypeError as err:
            return failed_result(f"GenotypeError: {err}", time.perf_counter() - start)
        return EvalResult("ok", {"val_accuracy": reward}, time.perf_counter() - start)

    def describe(self) -> str:
        return f"the {self.family} reward landscape (seed {self.seed}, noise {self.noise})"
