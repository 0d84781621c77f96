"""A learned predictor of a cell's accuracy, trained on the run's own children (after BANANAS, White et al.
2021: an ensemble of small MLPs on an encoding of the cell, its mean the prediction).

The encoding of a cell (:func:`encode`) has two parts:

- the adjacency encoding: one indicator per (decision, choice) of the canonical action encoding (each
  block's two (input, op) pairs sorted), which says which op reads which state in every block;
- the paths of length one: per cell type (normal, reduction), how many times each op is used (NASNet
  cells only; another search space's genotypes are encoded by the first part alone, one indicator per
  choice of each of its flat decisions).

The ensemble (``members`` MLPs with ``hidden`` units in each of two hidden layers, different initial
weights and a different bootstrap of the children each) learns the standardised validation accuracy with
full-batch Adam. It refits only when a child was added, and scores nothing until ``min_children`` children
are trained. Everything is seeded, so the same children give the same predictions (a resumed search
redoes a round exactly).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cellsearch.evaluators.estimator import SCORING_ERRORS, Scored, error_text
from cellsearch.evaluators.surrogate import RidgeSurrogate
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.space.spaces import Space
from cellsearch.validation import integer

__all__ = ["LearnedPredictor", "encode"]


def encode(space: "Space", genotypes: Sequence[Any]) -> np.ndarray:
    """[cells, features]: the adjacency encoding and, for NASNet cells, the op counts per cell type (see the
    module docstring)."""
    actions = np.array([space.encode(g.canonical()) for g in genotypes], dtype=np.int64).reshape(len(genotypes), -1)
    onehot = RidgeSurrogate.features(actions, tuple(space.layout.num_choices_list))[:, 1:]
    if not isinstance(space, SearchSpace):  # the op counts below are NASNet's cells' paths of length one
        return onehot
    counts = np.zeros((len(genotypes), 2 * len(space.ops)))
    for i, genotype in enumerate(genotypes):
        for c, cell in enumerate((genotype.normal, genotype.reduce)):
            for block in cell.blocks:
                for op in block.ops:
                    counts[i, c * len(space.ops) + space.ops.index(op)] += 1
    return np.concatenate([onehot, counts], axis=1)


def _mlp(inputs: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class LearnedPredictor:
    """An ensemble of MLPs fitted to the (cell, val_accuracy) of the children trained so far."""

    score = "predictor"

    def __init__(self, members: int = 5, hidden: int = 32, epochs: int = 200, min_children: int = 10,
                 seed: int = 0) -> None:
        for name, value, low in (("members", members, 1), ("hidden", hidden, 1), ("epochs", epochs, 1),
                                 ("min_children", min_children, 2)):
            integer(value, f"prejudge.predictor.{name}", low)
        self.members, self.hidden, self.epochs = members, hidden, epochs
        self.min_children, self.seed = min_children, seed
        self.space: SearchSpace | None = None
        self.num_fitted = 0  # children the ensemble was fitted to
        self._models: list[nn.Module] = []
        self._scale = (0.0, 1.0)  # the accuracies' mean and standard deviation

    def fit(self, space: SearchSpace, genotypes: Sequence[Genotype], accuracies: Sequence[float]) -> None:
        """Fit the ensemble to ``genotypes`` and their ``accuracies`` (each member on a bootstrap of them), on one
        thread: an MLP this small gains nothing from more, and on a busy machine threads that wait for each other
        made a fit a hundred times slower (measured: 2 minutes instead of 3 s with 2 threads on 2 loaded cores)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._fit(space, genotypes, accuracies)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, space: SearchSpace, genotypes: Sequence[Genotype], accuracies: Sequence[float]) -> None:
        x = torch.tensor(encode(space, genotypes), dtype=torch.float32)
        y = np.asarray(accuracies, dtype=np.float64)
        mean, std = float(y.mean()), float(y.std()) or 1.0
        target = torch.tensor((y - mean) / std, dtype=torch.float32)[:, None]
        generator = torch.Generator().manual_seed(self.seed)
        models = []
        for _ in range(self.members):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            model = _mlp(x.shape[1], self.hidden)
            rows = torch.randint(0, len(y), (len(y),), generator=generator)  # a bootstrap: members disagree
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
            for _ in range(self.epochs):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x[rows]), target[rows])
                loss.backward()
                optimizer.step()
            models.append(model.eval())
        self.space, self.num_fitted, self._models, self._scale = space, len(y), models, (mean, std)

    def predict(self, genotypes: Sequence[Genotype]) -> np.ndarray:
        """The ensemble's mean predicted accuracy of each cell."""
        if not self._models or self.space is None:
            raise RuntimeError("the predictor is not fitted yet")
        x = torch.tensor(encode(self.space, genotypes), dtype=torch.float32)
        with torch.no_grad():
            standard = torch.stack([m(x)[:, 0] for m in self._models]).mean(dim=0).numpy()
        return self._scale[0] + self._scale[1] * standard

    def prepare(self, space: SearchSpace, trained: Sequence[tuple[Genotype, float]]) -> str:
        """Refit to ``trained`` if a child was added since the last fit; the reason to wait below
        ``min_children``."""
        if len(trained) < self.min_children:
            return f"{len(trained)} of the {self.min_children} trained children it learns from before it can score"
        if len(trained) != self.num_fitted or space != self.space:
            self.fit(space, [g for g, _ in trained], [a for _, a in trained])
        return ""

    def __call__(self, genotype: Genotype) -> Scored:
        """The predicted accuracy; unscored (with the reason) when the cell cannot be encoded or predicted."""
        start = time.perf_counter()
        try:
            value = float(self.predict([genotype])[0])
        except SCORING_ERRORS as err:
            return Scored(None, time.perf_counter() - start, error_text(err))
        if not np.isfinite(value):
            return Scored(None, time.perf_counter() - start, "the prediction is not finite")
        return Scored(value, time.perf_counter() - start)
