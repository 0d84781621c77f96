"""Learning curves for reward landscapes: a cell's accuracy after each epoch, ending at its landscape reward.

A landscape (:mod:`cellsearch.evaluators.landscapes`) gives a cell one number, its reward after a full
child's training. A curve shape spreads that over ``epochs`` epochs, so that early stopping can be tried
on landscapes in seconds::

    acc(e) = reward * (1 - exp(-e / tau)) / (1 - exp(-epochs / tau))     (+ jitter before the last epoch)

``acc(epochs)`` is exactly the landscape's reward (with its noise), so a child evaluated in segments ends
where one evaluated in one go does. ``tau`` (in epochs) is the cell's learning speed; a small ``tau``
learns fast and flattens out, a large one climbs almost linearly to the end. Shapes:

- ``saturating``: ``tau`` log-uniform in [0.7, 3] from the cell's key, independent of its reward, so
  early accuracy ranks cells by their final reward with some noise: what early stopping counts on.
- ``crossing``: good cells learn slowly: ``tau`` rises with the cell's noise-free standardised score
  ``z`` (from 0.4 epochs for poor cells to 40 for the best), so curves cross (cells that start slow and
  finish high) and the first epoch ranks cells badly: where early stopping is expected to lose.

Jitter: each epoch before the last gets Gaussian noise of ``JITTER * noise`` accuracy (0.02 at the
landscapes' default noise 0.2), drawn from the evaluation's noise seed like the landscape's own noise.
"""
from __future__ import annotations

import math
import random

from cellsearch.evaluators.landscapes import Landscape
from cellsearch.space.genotype import Genotype

__all__ = ["CURVES", "LandscapeCurves", "progress"]

CURVES: tuple[str, ...] = ("saturating", "crossing")
TAU_RANGE: dict[str, tuple[float, float]] = {"saturating": (0.7, 3.0), "crossing": (0.4, 40.0)}
CROSSING_SLOPE = 1.5  # how strongly a crossing cell's learning time follows its score z
TAU_SPREAD = 0.5  # the cell's own share of its learning time (crossing), in standard deviations
JITTER = 0.1  # per-epoch noise in accuracy, per unit of the landscape's noise


def progress(epoch: int, epochs: int, tau: float) -> float:
    """The fraction of its final accuracy a cell with learning time ``tau`` has after ``epoch`` of ``epochs``."""
    return (1.0 - math.exp(-epoch / tau)) / (1.0 - math.exp(-epochs / tau))


def _phi(x: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


class LandscapeCurves:
    """The learning curves of a landscape's cells over ``epochs`` epochs, of shape ``kind`` (see CURVES)."""

    def __init__(self, landscape: Landscape, kind: str = "saturating", epochs: int = 9) -> None:
        if kind not in CURVES:
            raise ValueError(f"unknown curve shape {kind!r}; choose one of {list(CURVES)}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.landscape, self.kind, self.epochs = landscape, kind, epochs

    def tau(self, genotype: Genotype) -> float:
        """The cell's learning time in epochs (a property of the cell: no noise)."""
        own = random.Random(f"curve:{self.landscape.spec}:{self.kind}:{genotype.canonical().key()}").gauss(0.0, 1.0)
        if self.kind == "saturating":
            u = _phi(own)
        else:
            u = _phi(CROSSING_SLOPE * self.landscape.z(genotype) + TAU_SPREAD * own)
        low, high = TAU_RANGE[self.kind]
        return low * (high / low) ** u

    def curve(self, genotype: Genotype, noise_seed: object = None) -> list[float]:
        """The accuracy after each epoch 1..epochs; the last is ``landscape.reward(genotype, noise_seed)``."""
        final = self.landscape.reward(genotype, noise_seed)
        tau = self.tau(genotype)
        jitter = JITTER * self.landscape.spec.noise if noise_seed is not None else 0.0
        rng = random.Random(f"curve-noise:{self.landscape.spec}:{noise_seed}:{genotype.key()}")
        values = [final * progress(e, self.epochs, tau) + (rng.gauss(0.0, jitter) if jitter else 0.0)
                  for e in range(1, self.epochs)]
        return [min(1.0, max(0.0, v)) for v in values] + [final]
