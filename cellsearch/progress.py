"""Progress lines for long steps, so that nothing runs silent for more than a few seconds.

- :class:`StepProgress` counts a known number of steps and logs ``<label>: done/total <units> | elapsed
  | ETA`` at most every ``interval`` seconds and once at the end (with ``heartbeat``, also whenever a
  step runs long); :func:`track` wraps an iterable in it.
- :class:`Heartbeat` covers one long step with no count (a torch.export, a stand-alone training): a
  daemon thread logs ``still <doing> (<elapsed>)`` every ``interval`` seconds until the step ends.
- :class:`TrainingProgress` is the Lightning callback that does the same for a training run whose
  progress bar is off: epoch k/N, the losses and accuracy so far, elapsed and ETA.

Everything logs through :mod:`logging` (logger ``cellsearch.progress`` unless given), as the search
loop does its child lines; a script without logging set up (a benchmark) calls :func:`progress_to_stderr`.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import pytorch_lightning as pl

__all__ = ["Heartbeat", "StepProgress", "TrainingProgress", "eta_seconds", "format_seconds",
           "progress_to_stderr", "track"]

log = logging.getLogger("cellsearch.progress")

INTERVAL = 10.0  # seconds: the longest a long step stays silent
T = TypeVar("T")
Clock = Callable[[], float]


def format_seconds(seconds: float) -> str:
    """Compact duration such as ``42s``, ``3m05s`` or ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(elapsed: float, fraction: float) -> float | None:
    """Seconds left when ``fraction`` (0..1) of the work took ``elapsed`` seconds, at the same pace; None
    before anything is done."""
    if fraction <= 0:
        return None
    return max(0.0, elapsed * (1 - min(fraction, 1.0)) / fraction)


def _timing(elapsed: float, eta: float | None) -> str:
    return f"elapsed {format_seconds(elapsed)} | ETA {'-' if eta is None else format_seconds(eta)}"


def progress_to_stderr(level: int = logging.INFO) -> None:
    """Show cellsearch's log lines, progress included, on stderr in a script that has not set up logging
    (benchmarks: their tables go to stdout and stay clean). Does nothing when they already have a handler."""
    package = logging.getLogger("cellsearch")
    if package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False  # one copy of each line even where the root logger gets a handler later


class _Repeating:
    """Calls ``fn`` from a daemon thread, first after ``delay`` seconds, then after as many seconds as
    ``fn`` returns, until :meth:`stop` (which waits for the thread to end)."""

    def __init__(self, fn: Callable[[], float], delay: float, name: str) -> None:
        self.fn, self.delay = fn, delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.delay
        while not self._stop.wait(delay):
            delay = max(0.01, self.fn())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


class StepProgress:
    """``total`` steps of ``label``: :meth:`update` after each; a line at most every ``interval`` seconds
    (0: after every step) and, unless ``log_last`` is off (where the caller logs its own line then), when
    the last step is done. ``done`` counts steps finished before (a resumed run): the ETA goes by the
    pace of this run's steps.

    With ``heartbeat`` seconds, a background thread logs the line whenever that long passed without one
    (steps that each take longer than that), from construction until the last step is done or the
    ``with`` block ends. As a context manager it also says where it stopped when the block ends early."""

    def __init__(self, label: str, total: int, units: str = "steps", interval: float = INTERVAL,
                 logger: logging.Logger = log, clock: Clock = time.perf_counter, done: int = 0,
                 log_last: bool = True, heartbeat: float | None = None) -> None:
        self.label, self.total, self.units, self.interval = label, max(0, int(total)), units, interval
        self.logger, self.clock, self.log_last, self.heartbeat = logger, clock, log_last, heartbeat
        self.done = self.first = done
        self.start = self.last = self.done_at = clock()  # done_at: when the latest step finished
        self._lock = threading.Lock()  # update() and the heartbeat thread both log and move self.last
        self._beat = _Repeating(self._beat_once, heartbeat, f"progress: {label}") if heartbeat else None

    def update(self, steps: int = 1, note: str = "") -> None:
        """Count ``steps`` more done; log (with ``note``) if ``interval`` passed or the work is finished."""
        with self._lock:
            self.done += steps
            now = self.done_at = self.clock()
            finished = self.done >= self.total
            if (finished and self.log_last) or (not finished and now - self.last >= self.interval):
                self.logger.info(self.line(now, note))
                self.last = now
        if finished and self._beat is not None:  # outside the lock: the thread may be waiting for it
            self._beat.stop()

    def _beat_once(self) -> float:
        with self._lock:
            now = self.clock()
            if now - self.last >= self.heartbeat and self.done < self.total:
                self.logger.info(self.line(now))
                self.last = now
            return self.last + self.heartbeat - now

    def line(self, now: float | None = None, note: str = "") -> str:
        """``<label>: 3/8 <units> (note) | elapsed 1m05s | ETA 1m48s``."""
        now = self.clock() if now is None else now
        return (f"{self.label}: {self.done}/{self.total} {self.units}{f' ({note})' if note else ''} | "
                f"{_timing(now - self.start, self.eta(now))}")

    def eta(self, now: float) -> float | None:
        """Seconds left at ``now``: the pace of this run's finished steps times the steps left, less what
        the running step has taken so far (but not below the steps after it); None before a step is done."""
        finished, left = self.done - self.first, self.total - self.done
        if left <= 0:
            return 0.0
        if finished <= 0:
            return None
        pace = (self.done_at - self.start) / finished
        return max(pace * left - (now - self.done_at), pace * (left - 1))

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self._beat is not None:
            self._beat.stop()
        if self.done < self.total:  # a generator left early (track) ends with GeneratorExit: no error
            plain = exc_type is None or exc_type is GeneratorExit
            self.logger.info(self.line(note="stopped" if plain else f"stopped by {exc_type.__name__}"))


def track(items: Iterable[T], label: str, total: int | None = None, units: str = "steps",
          interval: float = INTERVAL, logger: logging.Logger = log, clock: Clock = time.perf_counter,
          log_last: bool = True, heartbeat: float | None = None) -> Iterator[T]:
    """Yield ``items``, logging progress as :class:`StepProgress` does (``total`` defaults to ``len(items)``)."""
    total = len(items) if total is None else total
    with StepProgress(label, total, units, interval, logger, clock, log_last=log_last, heartbeat=heartbeat) as progress:
        for item in items:
            yield item
            progress.update()


class Heartbeat:
    """While the ``with`` block runs, a daemon thread logs ``still <doing> (<elapsed>)`` every
    ``interval`` seconds (``status()``, if given, adds to the line); the thread ends with the block."""

    def __init__(self, doing: str, interval: float = INTERVAL, logger: logging.Logger = log,
                 status: Callable[[], str] | None = None, clock: Clock = time.perf_counter) -> None:
        self.doing, self.interval, self.logger, self.status, self.clock = doing, interval, logger, status, clock
        self.start = clock()
        self._beat: _Repeating | None = None

    def _beat_once(self) -> float:
        extra = f"; {self.status()}" if self.status is not None else ""
        self.logger.info("still %s (%s%s)", self.doing, format_seconds(self.clock() - self.start), extra)
        return self.interval

    def __enter__(self) -> "Heartbeat":
        self.start = self.clock()
        self._beat = _Repeating(self._beat_once, self.interval, f"heartbeat: {self.doing}")
        return self

    def __exit__(self, *_: Any) -> None:
        if self._beat is not None:
            self._beat.stop()

    @property
    def running(self) -> bool:
        """Whether the logging thread is alive."""
        return self._beat is not None and self._beat.running


class TrainingProgress(pl.Callback):
    """For a Lightning run without its progress bar: ``<label>: epoch k/N, batch b/B | train loss ... |
    val acc ... | elapsed ... | ETA ...`` at the end of every epoch and, within one, whenever ``interval``
    seconds passed since the last line (the clock is read after every batch, validation and test batches
    included). Logs on rank zero only."""

    def __init__(self, label: str = "training", interval: float = INTERVAL, logger: logging.Logger = log,
                 clock: Clock = time.perf_counter) -> None:
        self.label, self.interval, self.logger, self.clock = label, interval, logger, clock
        self.start = self.last = self.test_start = 0.0
        self.training = False  # set once the sanity check's validation is over and training starts
        self.first_epoch = 0  # where this process started (a resumed run: its ETA counts only what is left)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.last = self.clock()
        self.training = True
        self.first_epoch = trainer.current_epoch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.training = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.clock() - self.last >= self.interval:
            self._log(trainer, batch_idx + 1)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.training and self.clock() - self.last >= self.interval:
            self._log(trainer, None, note=f"validating, batch {batch_idx + 1}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, None, epoch_done=True)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_start = self.last = self.clock()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        now = self.clock()
        if now - self.last < self.interval or not trainer.is_global_zero:
            return
        self.last = now
        batches = trainer.num_test_batches[dataloader_idx]
        fraction = (batch_idx + 1) / batches if isinstance(batches, int) and batches > 0 else 0.0
        self.logger.info("%s: testing, batch %d/%s | %s", self.label, batch_idx + 1, batches,
                         _timing(now - self.test_start, eta_seconds(now - self.test_start, fraction)))

    def _log(self, trainer: pl.Trainer, batch: int | None, epoch_done: bool = False, note: str = "") -> None:
        now = self.clock()
        self.last = now
        if not trainer.is_global_zero:
            return
        batches = trainer.num_training_batches
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epoch = trainer.current_epoch + 1
        if epoch_done:
            done = float(epoch)
        else:
            within = batch / batches if batch is not None and isinstance(batches, int) and batches > 0 else 1.0
            done = trainer.current_epoch + within
        where = f"epoch {epoch}/{epochs or '?'}"
        if batch is not None:
            where += f", batch {batch}/{batches}"
        parts = [where + (f" ({note})" if note else "")]
        metrics = trainer.callback_metrics
        loss = metrics.get("train_loss_epoch" if epoch_done else "train_loss_step", metrics.get("train_loss"))
        if loss is not None:
            parts.append(f"train loss {float(loss):.4f}")
        if metrics.get("val_acc") is not None:
            parts.append(f"val acc {float(metrics['val_acc']):.4f}")
        todo = (epochs or 0) - self.first_epoch
        fraction = (done - self.first_epoch) / todo if todo > 0 else 0.0
        parts.append(_timing(now - self.start, eta_seconds(now - self.start, fraction)))
        self.logger.info("%s: %s", self.label, " | ".join(parts))
