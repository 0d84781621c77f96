"""Early stopping inside a search: each child trained in segments, rung to rung, as its scheduler decides.

With a scheduler (``scheduler=asha|hyperband``, :mod:`cellsearch.search.schedulers`) a new child is
submitted with ``Fidelity(epochs=<its first rung>)``. When a segment returns, its learning-curve points are
reported to the scheduler and stored in the trial store, numbered in the order the scheduler saw them; the
child then goes on at once to its next rung (or to ``max_epochs``) from the checkpoint the segment
returned, or it ends, and its last segment's points are committed with its row. A child that ends below
``max_epochs`` is stored with status ``stopped`` and the epochs it trained. The strategy is told
``scheduler.reward(trial_id)`` (by ``scheduler.reward_rule``) in place of the child's validation accuracy,
passed through the objective as any result is.

The compute budget ``search.epoch_budget`` counts child-epochs: the epochs every child trained, plus the
epochs of the segments in flight. A segment starts only if it fits: no new child is proposed once the next
child's first segment would pass the budget, and a child whose next segment would pass it ends where it is
(``stopped``). So a search never trains more than its budget, and searches with and without a scheduler
compare at equal compute. (With a pre-judger the next child's bracket is not known before its round:
Hyperband's check then uses the bracket of the next trial id, and may pass the budget by one segment.)

Exact resume: between segments a child's checkpoint is kept in ``run_dir/checkpoints/`` (written
atomically before its points are committed, deleted when the child ends; a child that ends commits its
last points with its row, in one transaction), and on resume the scheduler is rebuilt by replaying the
stored reports in order, so a search killed at any moment (``kill -9`` mid-rung
included) continues each child from its last rung and makes the decisions it would have made.

Without a scheduler nothing here touches a child: it is submitted without a Fidelity and stored as before;
only ``search.epoch_budget`` applies, each child costing the evaluator's ``max_epochs`` (``child.epochs``
for an evaluator without segments).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from cellsearch.evaluators.base import EpochPoint, EvalResult, Fidelity, failed_result
from cellsearch.search.atomic import atomic_write
from cellsearch.search.schedulers import ASHA
from cellsearch.search.settings import ResumeError
from cellsearch.search.store import TrialRow, TrialStore
from cellsearch.validation import ConfigError, integer

__all__ = ["CHECKPOINT_DIR", "ChildSegments", "Ending", "check_epoch_budget"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # in the run directory: trial_<id>_epoch_<e>.ckpt, one per running child
_CHECKPOINT_NAME = re.compile(r"trial_(\d+)_epoch_(\d+)\.ckpt")


def check_epoch_budget(epoch_budget: object, first_segment: int, what: str) -> int | None:
    """``search.epoch_budget`` (None: no limit); ConfigError unless it fits one child's first segment.

    Args:
        epoch_budget: the setting's value.
        first_segment: the epochs a new child trains before anything can stop it.
        what: where ``first_segment`` comes from, for the message.
    """
    integer(epoch_budget, "search.epoch_budget", 1, optional=True)
    if epoch_budget is not None and epoch_budget < first_segment:
        raise ConfigError(f"search.epoch_budget={epoch_budget} is smaller than one child's first segment "
                          f"({first_segment} epochs: {what}); raise search.epoch_budget (or null: no limit)")
    return epoch_budget


@dataclass(frozen=True)
class Ending:
    """How a child ended: what its row stores, and the result the objective makes the strategy's reward from."""

    result: EvalResult       # the metrics stored in its row (its last segment's; a failure's error)
    told: EvalResult         # the same with val_accuracy replaced by the scheduler's reward for the child
    status: str | None       # the row's status (None: the result's, as without a scheduler)
    epochs: int | None       # epochs trained (None: its curve's last epoch)
    segmented: bool          # its curve is committed segment by segment (the last one's points: below)
    points: list[EpochPoint] = dataclasses.field(default_factory=list)  # its last segment's, to commit with its row
    first_seq: int = 0       # the report number of the first of them


class ChildSegments:
    """The per-child segment bookkeeping of one search: what to train next, what each child cost, how it ended.

    Args:
        scheduler: the search's scheduler, fresh (it is rebuilt here from ``store``); None: children in one go.
        full_epochs: the epochs of a whole child (the evaluator's ``max_epochs``, else ``child.epochs``).
        epoch_budget: ``search.epoch_budget`` (None: no limit).
        store: the search's trial store (its stored reports rebuild the scheduler).
        run_dir: the run directory (checkpoints between segments go to its ``checkpoints/``).
    """

    def __init__(self, scheduler: ASHA | None, full_epochs: int, epoch_budget: int | None, store: TrialStore,
                 run_dir: Path) -> None:
        self.scheduler = scheduler
        self.full_epochs = scheduler.max_epochs if scheduler is not None else full_epochs
        self.epoch_budget = epoch_budget
        self.store = store
        self.checkpoints = Path(run_dir) / CHECKPOINT_DIR
        self._segment: dict[int, int] = {}  # trial in flight -> the epoch its segment trains to
        self._protocol_errors: dict[int, str] = {}
        self._last_points: dict[int, tuple[list[EpochPoint], int]] = {}  # an ended child's, until its row is stored
        self.stopped_at: collections.Counter[int] = collections.Counter()  # epochs -> children stopped there
        rows = store.rows()
        self._seq = self._rebuild(rows) if scheduler is not None else 0
        ended = {row.trial_id for row in rows}
        running = [t for t in (scheduler.trial_ids() if scheduler is not None else []) if t not in ended]
        self.spent = sum(self._cost(row) for row in rows) + sum(self._reached(t) for t in running)
        for row in rows:
            if row.stopped and row.epochs is not None:
                self.stopped_at[row.epochs] += 1
        self._clean_checkpoints(running)

    @property
    def active(self) -> bool:
        """Whether anything here changes how children train or when the search ends."""
        return self.scheduler is not None or self.epoch_budget is not None

    # --- resume -------------------------------------------------------------------------------------
    def _rebuild(self, rows: list[TrialRow]) -> int:
        """Replay the stored reports into the scheduler; stop those the budget stopped; return the next seq."""
        reports = self.store.scheduler_reports()
        try:
            self.scheduler.replay(reports)
        except ValueError as err:
            raise ResumeError(f"{self.store.path} holds scheduler reports this scheduler cannot replay ({err}); "
                              f"resume with the scheduler settings in search_settings.yaml") from None
        known = set(self.scheduler.trial_ids())
        for row in rows:  # ended by the epoch budget while the scheduler would have gone on
            if row.stopped and row.trial_id in known and self.scheduler.status(row.trial_id) == "running":
                self.scheduler.stop(row.trial_id)
        return len(reports)

    def _clean_checkpoints(self, running: list[int]) -> None:
        """Delete checkpoint files no running child continues from (ended children, superseded epochs)."""
        if not self.checkpoints.is_dir():
            return
        keep = {self._checkpoint_path(t, self._reached(t)).name for t in running}
        for path in self.checkpoints.iterdir():
            if _CHECKPOINT_NAME.fullmatch(path.name) and path.name not in keep:
                path.unlink()

    # --- the compute budget ---------------------------------------------------------------------------
    def _cost(self, row: TrialRow) -> int:
        """Epochs a stored child trained (a row without epochs: a whole child)."""
        return self.full_epochs if row.epochs is None else row.epochs

    def committed(self) -> int:
        """Epochs of the segments in flight."""
        return sum(target - self._reached(t) for t, target in self._segment.items())

    def fits(self, epochs: int) -> bool:
        """Whether a segment of ``epochs`` more fits the epoch budget with what was spent and is in flight."""
        return self.epoch_budget is None or self.spent + self.committed() + epochs <= self.epoch_budget

    def room_for_child(self, trial_id: int) -> bool:
        """Whether a new child ``trial_id`` may start: its first segment fits the epoch budget."""
        return self.fits(self._next_stop(trial_id, 0))

    # --- segments ------------------------------------------------------------------------------------
    def _reached(self, trial_id: int) -> int:
        """Epochs the child has trained in committed segments (0 before its first)."""
        if self.scheduler is None or trial_id not in self.scheduler.trial_ids():
            return 0
        return self.scheduler.epochs_trained(trial_id)

    def _next_stop(self, trial_id: int, reached: int) -> int:
        """The epoch the child's next segment trains to: its next rung, or a whole child."""
        if self.scheduler is None:
            return self.full_epochs
        rungs = self.scheduler.rungs(self.scheduler.bracket(trial_id))
        return next((r for r in rungs if r > reached), self.full_epochs)

    def _checkpoint_path(self, trial_id: int, epoch: int) -> Path:
        return self.checkpoints / f"trial_{trial_id}_epoch_{epoch}.ckpt"

    def start(self, trial_id: int) -> Fidelity | None:
        """Commit the child's next segment; return its Fidelity (None without a scheduler: the whole child)."""
        reached = self._reached(trial_id)
        target = self._next_stop(trial_id, reached)
        self._segment[trial_id] = target
        if self.scheduler is None:
            return None
        checkpoint = None
        if reached:
            path = self._checkpoint_path(trial_id, reached)
            if path.is_file():
                checkpoint = path.read_bytes()
            else:  # deleted by hand: the same child trained again from scratch to the same point
                log.warning("trial %d: no checkpoint %s to continue from; training it from scratch to epoch %d",
                            trial_id, path, target)
        return Fidelity(target, checkpoint)

    def returned(self, trial_id: int, result: EvalResult) -> Fidelity | None:
        """A segment came back: commit and report its points. Returns the child's next segment (submit it at
        once), or None when the child ended (then :meth:`ending` says how)."""
        target = self._segment.pop(trial_id)
        if self.scheduler is None or not result.ok:
            return None
        reached = self._reached(trial_id)
        points = [p for p in result.curve if reached < p.epoch <= target]
        error = self._check_segment(result, points, target)
        if error:
            self._protocol_errors[trial_id] = error
            return None
        # Decided in memory first; the points are committed with the child's row if it ends (so a stored report
        # of an ended child always has its row), else now, after its checkpoint (so a stored report of a running
        # child always has its checkpoint). A crash in between leaves the store as before this segment.
        go = [self.scheduler.report(trial_id, p.epoch, p.val_accuracy) for p in points][-1]
        first_seq, self._seq = self._seq, self._seq + len(points)
        self.spent += target - reached
        ends = target == self.full_epochs or not go
        if not ends and not self.fits(self._next_stop(trial_id, target) - target):  # the epoch budget ends it here
            self.scheduler.stop(trial_id)
            ends = True
        if ends:
            self._last_points[trial_id] = (points, first_seq)
            return None
        self.checkpoints.mkdir(exist_ok=True)
        atomic_write(self._checkpoint_path(trial_id, target),
                     lambda tmp: tmp.write_bytes(result.checkpoint))  # type: ignore[arg-type]
        self.store.add_points(trial_id, points, first_seq)
        if reached:
            self._checkpoint_path(trial_id, reached).unlink(missing_ok=True)
        return self.start(trial_id)

    def _check_segment(self, result: EvalResult, points: list, target: int) -> str:
        """Why a segment's result breaks the Fidelity protocol ('' if it does not)."""
        if not points or points[-1].epoch != target:
            return (f"the evaluator returned no learning-curve point at epoch {target} for a segment trained to "
                    f"epoch {target} (an evaluator with max_epochs returns its curve)")
        bad = [p.epoch for p in points if not math.isfinite(p.val_accuracy)]
        if bad:
            return f"validation accuracy is not a finite number at epoch(s) {bad} (diverged)"
        if target < self.full_epochs and not isinstance(result.checkpoint, (bytes, bytearray)):
            return (f"the evaluator returned no checkpoint for a segment stopped at epoch {target} of "
                    f"{self.full_epochs}, so the child cannot go on")
        return ""

    def ending(self, trial_id: int, result: EvalResult) -> Ending:
        """How the child whose last segment returned ``result`` ends (call after :meth:`returned` gave None)."""
        if self.scheduler is None:
            return Ending(result, result, None, None, False)
        reached = self._reached(trial_id)
        error = self._protocol_errors.pop(trial_id, "")
        if error or not result.ok:
            failed = failed_result(error, result.seconds) if error else result
            return Ending(failed, failed, "failed", reached, True)
        points, first_seq = self._last_points.pop(trial_id)
        if points:  # the row's time is the whole child's (its curve's clock runs on across segments), not one segment's
            result = dataclasses.replace(result, seconds=max(result.seconds, points[-1].seconds))
        told = dataclasses.replace(result, metrics={**result.metrics, "val_accuracy": self.scheduler.reward(trial_id)})
        status = "ok" if reached == self.full_epochs else "stopped"
        return Ending(result, told, status, reached, True, points, first_seq)

    def ended(self, row: TrialRow) -> None:
        """The child's row is stored: count what it cost and delete its checkpoint."""
        running = self._reached(row.trial_id)
        self.spent += self._cost(row) - running
        if row.stopped and row.epochs is not None:
            self.stopped_at[row.epochs] += 1
        if self.checkpoints.is_dir():
            for path in self.checkpoints.glob(f"trial_{row.trial_id}_epoch_*.ckpt"):
                path.unlink()

    def signals(self) -> dict[str, float]:
        """For the live view: epochs spent (and the share of the budget), children stopped in all and per epoch."""
        if not self.active:
            return {}
        signals: dict[str, float] = {"scheduler/epochs_spent": float(self.spent),
                                     "scheduler/children_stopped": float(sum(self.stopped_at.values()))}
        if self.epoch_budget is not None:
            signals["scheduler/epoch_budget_used"] = self.spent / self.epoch_budget
        for epoch, count in sorted(self.stopped_at.items()):
            signals[f"scheduler/stopped_at_epoch_{epoch}"] = float(count)
        return signals
