"""A small evaluator that implements the Fidelity protocol, for the early-stopping tests.

:class:`CurveEvaluator` is a real :class:`~cellsearch.evaluators.Evaluator` with ``max_epochs``: a child's
learning curve is a deterministic function of its genotype (a final accuracy and a speed, so some curves
cross: a slow starter can finish high), it trains (looks up) a segment from the checkpoint it was given to
``fidelity.epochs``, and its checkpoint bytes encode the genotype and the epoch it reached, which the next
segment checks. It counts the epochs it trained, so a test can check the compute a search spent.
"""
from __future__ import annotations

import hashlib
import json
import math

from cellsearch.evaluators.base import EpochPoint, EvalResult, Evaluator, Fidelity
from cellsearch.space.genotype import Genotype


def accuracy(genotype: Genotype, epoch: int) -> float:
    """The child's validation accuracy after ``epoch`` epochs: final * (1 - exp(-speed * epoch))."""
    digest = int(hashlib.sha256(genotype.key().encode()).hexdigest()[:12], 16)
    final = 0.3 + 0.6 * (digest % 1000) / 1000
    speed = 0.15 + 1.5 * ((digest // 1000) % 1000) / 1000
    return final * (1.0 - math.exp(-speed * epoch))


class CurveEvaluator(Evaluator):
    """Children whose curves come from their genotypes; ``evaluate(..., fidelity=...)`` trains a segment."""

    name = "curves"
    metrics = ("val_accuracy", "params")

    def __init__(self, max_epochs: int = 9, fail_trials: tuple[int, ...] = ()) -> None:
        self.max_epochs = max_epochs
        self.fail_trials = fail_trials  # these children diverge in their second segment (or at once without one)
        self.epochs_trained = 0  # in this process
        self.calls: list[tuple[int, int | None, int]] = []  # (trial_id, fidelity epochs, epoch it started from)

    def evaluate(self, genotype: Genotype, trial_id: int = 0, seed: int = 0,
                 fidelity: Fidelity | None = None) -> EvalResult:
        target = self.max_epochs if fidelity is None else fidelity.epochs
        start = 0
        if fidelity is not None and fidelity.checkpoint is not None:
            state = json.loads(fidelity.checkpoint.decode())
            if state["key"] != genotype.key():
                raise ValueError(f"trial {trial_id}: the checkpoint is another child's")
            start = state["epoch"]
        if not start < target <= self.max_epochs:
            raise ValueError(f"trial {trial_id}: cannot train from epoch {start} to {target}")
        self.calls.append((trial_id, None if fidelity is None else target, start))
        if trial_id in self.fail_trials and (start > 0 or fidelity is None):
            return EvalResult("failed", {}, 0.01, "ChildDiverged: loss became NaN")
        self.epochs_trained += target - start
        curve = [EpochPoint(e, accuracy(genotype, e), 1.0 / e, 0.01 * e, 0.01 * e) for e in range(start + 1, target + 1)]
        checkpoint = json.dumps({"key": genotype.key(), "epoch": target}).encode() if target < self.max_epochs else None
        params = int(hashlib.sha256(genotype.key().encode()).hexdigest()[:6], 16) % 100000
        return EvalResult("ok", {"val_accuracy": accuracy(genotype, target), "params": params}, 0.01 * (target - start),
                          curve=curve, checkpoint=checkpoint)
