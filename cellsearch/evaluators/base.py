"""The evaluator protocol: what a cell is worth, as a dict of named metrics.

An evaluator turns a genotype into metrics. Stand-alone Lightning training
(:class:`~cellsearch.evaluators.standalone.TrainEvaluator`) is one; reward landscapes, a lookup
table, zero-cost scores and a one-shot supernet are others. Executors run any evaluator (in this
process, in worker processes, on Ray), so an evaluator must pickle: keep its settings as plain data
and build heavy objects lazily, in the process that evaluates.

Metric names that mean the same thing everywhere (the trial store keeps each as a column):

- ``val_accuracy``: validation accuracy in [0, 1] (the default reward)
- ``train_loss``: mean training loss of the last epoch
- ``params``: trainable parameters of the child network
- ``mult_adds``: multiply-adds of one forward pass at the dataset's image size
- ``latency_ms``: measured forward latency at batch 1

Any other metric an evaluator measures is kept too (in the store's ``metrics`` JSON). An evaluator
that trains epoch by epoch also returns its learning curve (:class:`EpochPoint` per validated epoch,
the store's ``curves`` table); the others leave it empty.

Fidelity (early stopping, :mod:`cellsearch.search.schedulers`): an evaluator whose ``max_epochs`` is
not None can train a child in segments. ``evaluate(..., fidelity=Fidelity(epochs=3))`` trains (or looks
up) the child up to epoch 3 and returns the curve so far with a ``checkpoint`` to go on from;
``Fidelity(epochs=9, checkpoint=that)`` continues from there. A search with a scheduler keeps each child's
checkpoint in its run directory between segments, so a stopped child costs only the epochs it trained.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from cellsearch.space.genotype import Genotype

__all__ = ["EpochPoint", "EvalResult", "Evaluator", "Fidelity", "STANDARD_METRICS", "failed_result"]

STANDARD_METRICS: tuple[str, ...] = ("val_accuracy", "train_loss", "params", "mult_adds", "latency_ms")
STATUSES: tuple[str, ...] = ("ok", "failed")


@dataclass(frozen=True)
class EpochPoint:
    """One point of a learning curve: the child after ``epoch`` epochs of training."""

    epoch: int  # epochs trained so far: 1 after the first (the epoch schedulers' report(trial, epoch, value) takes)
    val_accuracy: float
    train_loss: float | None  # mean training loss of this epoch; None when it was not logged
    seconds: float  # wall seconds since training began
    cpu_seconds: float  # CPU seconds of the training process (all its threads) since training began


@dataclass(frozen=True)
class Fidelity:
    """How far to train a child in this evaluation: a segment of its training, for early stopping.

    Attributes:
        epochs: train until the child has trained this many epochs in all (at most the evaluator's
            ``max_epochs``); the learning-rate schedule is always that of a full ``max_epochs`` child, so
            the segments of a child add up to the child trained in one go.
        checkpoint: what the previous segment of this child returned (:attr:`EvalResult.checkpoint`);
            None starts the child from scratch.
    """

    epochs: int
    checkpoint: bytes | None = None


@dataclass
class EvalResult:
    """What one evaluation gave: named metrics, or (``status='failed'``) why it failed; ``curve`` holds the
    validation after each epoch where the evaluator trains epoch by epoch (empty otherwise)."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    curve: list[EpochPoint] = field(default_factory=list)
    #: The state to continue this child from (evaluated under a Fidelity below ``max_epochs``); None otherwise.
    #: Not part of the trial's row: a search keeps it in its run directory until the child ends.
    checkpoint: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def metric(self, name: str) -> float | None:
        """The metric ``name``, or None when it was not measured (or is NaN)."""
        value = self.metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "metrics": dict(self.metrics), "seconds": self.seconds, "error": self.error,
                "curve": [asdict(point) for point in self.curve]}


def failed_result(error: str, seconds: float = 0.0, **metrics: float) -> EvalResult:
    """A failed evaluation with its reason (and whatever was measured before it failed)."""
    return EvalResult("failed", {k: v for k, v in metrics.items() if v is not None}, seconds, error)


class Evaluator(ABC):
    """Turns a genotype into metrics. Subclasses set ``name`` and ``metrics`` and implement ``evaluate``."""

    name: str = "evaluator"
    #: The metrics this evaluator measures for every successful trial (objectives check against it).
    metrics: tuple[str, ...] = ("val_accuracy",)
    #: Lightning-style accelerator setting: "cpu", or "auto"/"gpu"/"cuda" when it may use a GPU.
    accelerator: str = "cpu"
    #: It keeps state across evaluations in this process (a supernet): only the local executor can run it.
    needs_in_process_executor: bool = False
    #: Its estimates are a cheap guess: at the end, the best cells are trained stand-alone and the best
    #: cell is named on that (:func:`cellsearch.search.final.finish_oneshot_search`).
    trains_finalists: bool = False
    #: Epochs of a full child when the evaluator can train (or look up) a child in segments
    #: (``evaluate(..., fidelity=...)``, what early-stopping schedulers need); None when it cannot.
    max_epochs: int | None = None

    def check(self) -> None:
        """Raise ConfigError for bad settings or missing data, before anything is evaluated."""

    def check_single_device(self) -> None:
        """Raise ConfigError if one evaluation needs several devices (worker pools give each one device)."""

    @abstractmethod
    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0) -> EvalResult:
        """Evaluate ``genotype``.

        Args:
            genotype: the cell pair to evaluate.
            trial_id: the trial's id in the search.
            seed: the search's seed.

        Returns:
            The metrics; failures of the cell itself (divergence, out of memory) come back as
            ``status='failed'`` with the error, not raised.
        """

    def memory_estimate(self, genotype: Genotype) -> float | None:
        """Bytes one evaluation of ``genotype`` holds on its device at its peak (executors pack children
        onto GPUs by it); None when unknown."""
        return None

    def describe(self) -> str:
        """A few words for log lines: what is evaluated and on what."""
        return self.name
