"""Evaluate genotypes on a synthetic reward landscape: a whole search in seconds, for comparing strategies.

Any search space has the per-decision families (``additive``, ``epistatic``, ``rugged``, ``deceptive``:
over NASNet's cells :mod:`cellsearch.evaluators.landscapes`, over the other spaces' flat decisions
:mod:`cellsearch.evaluators.decision_landscape`) and the structure families of its space
(``structure``, ``structure_wiring``: :mod:`cellsearch.evaluators.structure_landscape`).

With ``epochs`` set (the config sets it to ``child.epochs``) every cell also has a learning curve of shape
``curve`` (:mod:`cellsearch.evaluators.landscape_curves`) ending at its reward, and the evaluator honours a
:class:`~cellsearch.evaluators.base.Fidelity`: ``evaluate(..., fidelity=Fidelity(epochs=e))`` returns the
curve up to epoch ``e`` and a checkpoint to go on from, so early stopping can be tried in seconds.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from cellsearch.validation import ConfigError
from cellsearch.evaluators.base import EpochPoint, EvalResult, Evaluator, Fidelity, failed_result
from cellsearch.evaluators.landscape_curves import CURVES, LandscapeCurves
from cellsearch.evaluators.lookup_checkpoint import checked_epochs, read_checkpoint, write_checkpoint
from cellsearch.evaluators.decision_landscape import DecisionLandscape
from cellsearch.evaluators.landscapes import FAMILIES, Landscape
from cellsearch.evaluators.structure_landscape import StructureLandscape, structure_families
from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace
from cellsearch.space.spaces import Space, space_from_settings

__all__ = ["LandscapeEvaluator", "build_landscape", "landscape_families"]


def landscape_families(space: Space) -> list[str]:
    """The landscape families ``space`` has: the per-decision ones, then its structure families."""
    return [*FAMILIES, *structure_families(space)]


def build_landscape(space: Space, family: str = "additive", seed: int = 0, noise: float = 0.2) \
        -> "Landscape | DecisionLandscape | StructureLandscape":
    """The landscape of ``family`` over ``space`` (NASNet's per-slot landscape for NASNet cells; the
    per-decision one for other spaces). Called ``landscape(genotype, noise_seed)``; ValueError for a
    family the space has not."""
    if family not in landscape_families(space):
        raise ValueError(f"unknown landscape family {family!r} for space={space.name}; choose one of "
                         f"{landscape_families(space)}")
    if family not in FAMILIES:
        return StructureLandscape(space, family, seed, noise)
    return (Landscape if isinstance(space, SearchSpace) else DecisionLandscape)(space, family, seed, noise)


class LandscapeEvaluator(Evaluator):
    """``val_accuracy`` of a genotype = a seeded landscape's reward (see ``build_landscape``), with noise
    drawn from the search seed and the trial id, so a rerun of a trial gives the same number; with
    ``epochs``, also its learning curve of shape ``curve`` (``saturating`` or ``crossing``)."""

    name = "landscape"
    metrics = ("val_accuracy",)

    def __init__(self, space: "Space | Mapping[str, Any]", family: str = "additive", seed: int = 0,
                 noise: float = 0.2, curve: str = "saturating", epochs: int | None = None) -> None:
        self.space = space_from_settings(space)
        self.family, self.seed, self.noise = family, int(seed), float(noise)
        self.curve, self.epochs = curve, epochs
        self._curves: LandscapeCurves | None = None  # built where it evaluates (keeps the evaluator small to pickle)

    @property
    def max_epochs(self) -> int | None:  # type: ignore[override]
        """``epochs``: the curves' length, when the evaluator has curves (fidelity supported)."""
        return self.epochs

    def check(self) -> None:
        families = landscape_families(self.space)
        if self.family not in families:
            raise ConfigError(f"evaluator.family: unknown landscape family {self.family!r} for "
                              f"space={self.space.name}; choose one of {families}")
        if not self.noise >= 0:
            raise ConfigError(f"evaluator.noise: must be non-negative, got {self.noise}")
        if self.curve not in CURVES:
            raise ConfigError(f"evaluator.curve: unknown curve shape {self.curve!r}; choose one of {list(CURVES)}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ConfigError(f"evaluator.epochs: must be an integer >= 1 or null (no curves), got {self.epochs!r}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_curves": None}

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0,
                 fidelity: Fidelity | None = None) -> EvalResult:
        """The cell's reward; with ``fidelity``, its accuracy after ``fidelity.epochs`` epochs.

        Raises:
            ConfigError: a fidelity without ``epochs`` set, beyond ``epochs``, or with another cell's checkpoint.
        """
        start = time.perf_counter()
        if self._curves is None:
            self.check()
            landscape = build_landscape(self.space, self.family, self.seed, self.noise)
            self._curves = LandscapeCurves(landscape, self.curve, self.epochs or 1)
        epoch = self._check_fidelity(genotype, fidelity)
        noise_seed = (seed, trial_id)
        try:
            if self.epochs is None:
                reward = self._curves.landscape(genotype, noise_seed=noise_seed)
                return EvalResult("ok", {"val_accuracy": reward}, time.perf_counter() - start)
            curve = self._curves.curve(genotype, noise_seed)
        except GenotypeError as err:
            return failed_result(f"GenotypeError: {err}", time.perf_counter() - start)
        # The clock of a landscape child is its epochs: one "second" per epoch, so compute adds up as in training.
        points = [EpochPoint(e + 1, value, None, float(e + 1), float(e + 1)) for e, value in enumerate(curve[:epoch])]
        checkpoint = write_checkpoint(genotype, epoch) if epoch < self.epochs else None
        return EvalResult("ok", {"val_accuracy": curve[epoch - 1]}, time.perf_counter() - start, curve=points,
                          checkpoint=checkpoint)

    def _check_fidelity(self, genotype: Genotype, fidelity: Fidelity | None) -> int:
        """The epoch to evaluate at (``epochs`` without a fidelity), checked."""
        if fidelity is None:
            return self.epochs or 1
        if self.epochs is None:
            raise ConfigError("this landscape evaluator has no learning curves, so it cannot be evaluated at a "
                              "fidelity; set evaluator.epochs (e.g. to child.epochs)")
        epochs = checked_epochs(fidelity, self.epochs, "the landscape's curves", "evaluator.epochs")
        if fidelity.checkpoint is not None:
            read_checkpoint(fidelity, genotype, "this landscape")
        return epochs

    def describe(self) -> str:
        curves = f", {self.curve} curves of {self.epochs} epochs" if self.epochs else ""
        return f"the {self.family} reward landscape (seed {self.seed}, noise {self.noise}{curves})"
