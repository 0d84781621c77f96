"""A child's learning curve: its validation accuracy after each epoch, with the time it took to get there.

:class:`CurveRecorder` is a Lightning callback that :func:`~cellsearch.evaluators.child.evaluate_child`
adds to every child's trainer; it reads what the module already computed (no extra pass over any data),
so it costs two clock reads an epoch. :func:`mean_curve` averages the curves of ``child.repeats`` runs.
A child trained in segments (:mod:`cellsearch.evaluators.segments`) carries its curve and clocks in its
checkpoint (the callback's ``state_dict``), so the next segment's curve goes on from there.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Sequence

import pytorch_lightning as pl

from cellsearch.evaluators.base import EpochPoint

__all__ = ["CurveRecorder", "mean_curve"]


class CurveRecorder(pl.Callback):
    """Collects an :class:`EpochPoint` at the end of each training epoch that was validated.

    The accuracy is the module's exact ``val_accuracy`` (the one the child's result reports), the loss
    Lightning's epoch mean of ``train_loss``; the clocks start when fitting starts (and go on from the
    checkpoint's when it resumes from one). An epoch without validation (``child.check_val_every_n_epoch``
    > 1) has no point.
    """

    def __init__(self) -> None:
        self.points: list[EpochPoint] = []
        self._validated: float | None = None  # this epoch's validation accuracy, until the epoch ends
        self._wall = self._cpu = 0.0
        self._resumed: dict[str, Any] = {"points": [], "seconds": 0.0, "cpu_seconds": 0.0}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.points, self._validated = [], None
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After any checkpoint is restored (some strategies restore after on_fit_start): go on from it.
        resumed = self._resumed
        self.points = [EpochPoint(**point) for point in resumed["points"]]
        self._wall -= resumed["seconds"]
        self._cpu -= resumed["cpu_seconds"]

    def state_dict(self) -> dict[str, Any]:
        return {"points": [asdict(point) for point in self.points], "seconds": time.perf_counter() - self._wall,
                "cpu_seconds": time.process_time() - self._cpu}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed = dict(state_dict)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the module's own epoch-end hook, so its val_accuracy is this validation's.
        if not trainer.sanity_checking:
            self._validated = pl_module.val_accuracy

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation runs inside the training epoch, so by now this epoch's validation (if any) is done.
        if self._validated is None:
            return
        loss: Any = trainer.callback_metrics.get("train_loss_epoch")
        self.points.append(EpochPoint(trainer.current_epoch + 1, float(self._validated),
                                      None if loss is None else float(loss), time.perf_counter() - self._wall,
                                      time.process_time() - self._cpu))
        self._validated = None


def mean_curve(curves: Sequence[Sequence[EpochPoint]]) -> list[EpochPoint]:
    """The per-epoch mean of several runs' curves (every field, seconds included: one run's mean time to reach
    that epoch), over the epochs that every run recorded; ``train_loss`` is None where a run lacks it."""
    by_epoch = [{point.epoch: point for point in curve} for curve in curves]
    common = sorted(set.intersection(*(set(points) for points in by_epoch))) if by_epoch else []
    mean = []
    for epoch in common:
        points = [points[epoch] for points in by_epoch]
        losses = [p.train_loss for p in points]
        mean.append(EpochPoint(epoch, sum(p.val_accuracy for p in points) / len(points),
                               None if None in losses else sum(losses) / len(losses),  # type: ignore[arg-type]
                               sum(p.seconds for p in points) / len(points),
                               sum(p.cpu_seconds for p in points) / len(points)))
    return mean
