"""The live view of a running search in TensorBoard: ``tensorboard --logdir <run dir>/tensorboard``.

On by default when TensorBoard is installed; ``live.tensorboard=false`` turns it off. What it writes
under ``<run dir>/tensorboard/``, flushed after every child (TensorBoard shows a child within its
reload interval, 5 s by default):

- ``search/``, one point per child with the child's finishing order as step (1 = the first child
  to finish): ``search/reward``, ``search/best_reward``, ``search/failures`` (failed children so
  far), ``child/<metric>`` (every metric the evaluator measured), ``strategy/<signal>``
  (:meth:`~cellsearch.strategies.base.Strategy.signals`: the controller's loss and entropy, the
  population, the surrogate's error); the image ``best_cell`` when the best child changes; for
  ``objective=pareto|constrained`` the scalar ``front/size`` and the image ``pareto_front`` when the
  front changes. An image is redrawn at most every 10 s (a search of cheap children changes its best
  often at first), and at the end of the search.
- ``trials/trial_<id>/``, one run per child: its HParams row. Hyperparameters: strategy,
  objective, trial_id, status, role and, for NASNet cells, blocks, ``ops/<op>`` (how often each op
  appears in the two cells) and ``combine/<method>`` (how many blocks combine so); for another search
  space, ``decision/<name>`` (the choice made at each of the space's decisions); metrics
  ``trial/reward`` and ``trial/<metric>``.
- ``supernet/`` (``evaluator=oneshot``): the supernet's training loss, accuracy and learning rate
  per phase; ``darts/`` (``search=darts``): loss, learning rate, the parameter-free share and the
  architecture weights per epoch (see :class:`CurveWriter`).

Resume: a resumed search writes the children that the run directory's ``trials.db`` holds and the
live view lacks (those finished while it was not written: the last one before a kill, or all of
them when the view was off), with the same steps, and goes on. The writer starts with
TensorBoard's purge step at the first child it writes, so points a killed process wrote past it are
hidden, never shown twice; strategy signals are known only while the strategy runs, so children
written again carry none.

The live view never stops a search: an error writing it (a full disk, an unwritable folder) is
one warning, and the search goes on without it.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from cellsearch.search.events import SearchObserver, SearchStart
from cellsearch.search.objectives import pareto_front
from cellsearch.search.plots import genotype_figure, pareto_figure
from cellsearch.search.store import TrialRow
from cellsearch.space.genotype import SearchSpace
from cellsearch.validation import ConfigError, boolean

__all__ = ["LIVE_DIR", "CurveWriter", "TensorBoardObserver", "curve_writer", "search_observers", "tensorboard_enabled"]

log = logging.getLogger(__name__)

LIVE_DIR = "tensorboard"   # under the run directory
SEARCH_RUN = "search"      # the per-child curves and images
TRIALS_RUN = "trials"      # one HParams session per child below it
# An image is redrawn at most this often: a cell diagram costs 0.2 s of CPU to draw, which a search
# of cheap children (table, landscape evaluators) would feel when its best changes child after child.
IMAGE_INTERVAL_S = 10.0
BEST_CELL_IMAGE, FRONT_IMAGE = "best_cell", "pareto_front"


def tensorboard_enabled(cfg: DictConfig) -> bool:
    """Whether this run writes the live view: ``live.tensorboard`` (true unless set; a run directory
    from before the setting reads true) and TensorBoard importable (if not: one info line, no view)."""
    if not boolean(OmegaConf.select(cfg, "live.tensorboard", default=True), "live.tensorboard"):
        return False
    try:
        import tensorboard.plugins.hparams.plugin_data_pb2  # noqa: F401
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        log.info("no live view in TensorBoard: tensorboard is not installed (pip install tensorboard); "
                 "live.tensorboard=false says this was meant")
        return False
    return True


def search_observers(cfg: DictConfig, run_dir: Path, evaluator: Any = None) -> list[SearchObserver]:
    """The observers the configuration asks for: the live view, and the supernet's curves for an
    evaluator that reports its training (the one-shot evaluator's ``report_phases``)."""
    if not tensorboard_enabled(cfg):
        return []
    observers: list[SearchObserver] = [TensorBoardObserver(run_dir / LIVE_DIR)]
    report_phases = getattr(evaluator, "report_phases", None)
    if callable(report_phases):
        curves = CurveWriter(run_dir / LIVE_DIR / "supernet", "the supernet curves in TensorBoard")
        report_phases(curves.scalars)
        observers.append(curves)  # the search closes it
    return observers


def curve_writer(cfg: DictConfig, run_dir: Path, name: str) -> "CurveWriter | None":
    """A :class:`CurveWriter` for the run ``name`` of the live view, or None when the view is off."""
    if not tensorboard_enabled(cfg):
        return None
    return CurveWriter(run_dir / LIVE_DIR / name, f"the {name} curves in TensorBoard")


def _summary_writer(log_dir: Path, purge_step: int | None = None) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


class TensorBoardObserver(SearchObserver):
    """Writes the live view of one search under ``log_dir`` (see the module's docstring)."""

    description = "the TensorBoard live view"

    def __init__(self, log_dir: "str | Path") -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self.start: SearchStart | None = None
        self.metric: str | None = None  # the objective's cost metric: the Pareto front is shown when set
        self.step = 0          # children seen so far, in finishing order
        self.failures = 0
        self.best: TrialRow | None = None
        self.measured: list[TrialRow] = []  # children with accuracy and the cost metric (objective with a metric)
        self.front: list[TrialRow] = []
        self.stale: set[str] = set()        # images whose subject changed since they were drawn
        self.drawn_at = {BEST_CELL_IMAGE: -math.inf, FRONT_IMAGE: -math.inf}  # time.monotonic() of each
        self.best_diagram = True  # False once the genotypes' space turned out to have no diagram module

    # --- the search's events --------------------------------------------------------------------
    def search_started(self, start: SearchStart) -> None:
        self.start, self.metric = start, start.metric
        rows = list(start.rows)
        written = self._written_sessions()
        done = next((i for i, row in enumerate(rows) if self._session_name(row) not in written), len(rows))
        redo = max(0, done - 1)  # the last child written may be written in part: the search was killed
        for row in rows[redo:]:
            shutil.rmtree(self.log_dir / TRIALS_RUN / self._session_name(row), ignore_errors=True)
        self.writer = _summary_writer(self.log_dir / SEARCH_RUN, purge_step=redo + 1)
        for row in rows[:redo]:
            self._account(row)
        self.stale = {BEST_CELL_IMAGE, FRONT_IMAGE} if rows else set()  # drawn again, as a purge may hide them
        for row in rows[redo:]:
            self._write_child(row, {})
        self.writer.flush()

    def trial_finished(self, row: TrialRow, best: TrialRow | None, signals: dict[str, float]) -> None:
        self._write_child(row, signals)

    def search_finished(self, summary: Any, rows: Sequence[TrialRow]) -> None:
        self._draw_images(now=True)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()

    # --- one child ------------------------------------------------------------------------------
    def _account(self, row: TrialRow) -> None:
        """Count ``row`` as the next child: failures, the best (ties: the earlier trial, as the search
        ranks them), the front."""
        self.step += 1
        self.failures += not row.ok
        if self.metric is not None:
            self._update_front(row, self.metric)
        if row.beats(self.best):
            self.best = row
            self.stale.add(BEST_CELL_IMAGE)

    def _update_front(self, row: TrialRow, metric: str) -> None:
        if not row.ok or row.val_accuracy is None or row.metrics.get(metric) is None:
            return
        self.measured.append(row)
        candidates = self.front + [row]
        front = [candidates[i] for i in pareto_front([(r.val_accuracy, r.metrics[metric]) for r in candidates])]
        if any(r is row for r in front):
            self.front = front
            self.stale.add(FRONT_IMAGE)

    def _write_child(self, row: TrialRow, signals: dict[str, float]) -> None:
        self._account(row)
        step, writer = self.step, self.writer
        writer.add_scalar("search/failures", self.failures, step)
        if row.ok and row.reward is not None:
            writer.add_scalar("search/reward", row.reward, step)
        if self.best is not None:
            writer.add_scalar("search/best_reward", self.best.reward, step)
        if row.ok:
            for name, value in row.metrics.items():
                writer.add_scalar(f"child/{name}", value, step)
        for name, value in signals.items():
            writer.add_scalar(f"strategy/{name}", value, step)
        if self.metric is not None:
            writer.add_scalar("front/size", len(self.front), step)
        self._draw_images()
        writer.flush()
        self._write_session(row, step)

    def _draw_images(self, now: bool = False) -> None:
        """Draw the images whose subject changed, each at most every IMAGE_INTERVAL_S unless ``now``."""
        for image in sorted(self.stale):
            if not now and time.monotonic() - self.drawn_at[image] < IMAGE_INTERVAL_S:
                continue
            if image == BEST_CELL_IMAGE and self.best is not None and self.best_diagram:
                title = f"best cell: trial {self.best.trial_id}, reward {self.best.reward:.4f} (child {self.step})"
                try:
                    figure = genotype_figure(self.best.genotype, title=title)
                except ConfigError as err:  # a space without a diagram module: the view goes on without the image
                    self.best_diagram = False
                    log.warning("the live view shows no best_cell image: %s", err)
                else:
                    self.writer.add_figure(image, figure, self.step)
            elif image == FRONT_IMAGE and self.front:
                title = f"{len(self.measured)} children, {len(self.front)} on the front (child {self.step})"
                self.writer.add_figure(image, pareto_figure(self.measured, self.front, self.metric, {}, title),
                                       self.step)
            self.drawn_at[image] = time.monotonic()
            self.stale.discard(image)

    # --- HParams: one session (run) per child ---------------------------------------------------
    @staticmethod
    def _session_name(row: TrialRow) -> str:
        return f"trial_{row.trial_id:05d}"

    def _written_sessions(self) -> set[str]:
        trials = self.log_dir / TRIALS_RUN
        return {p.name for p in trials.iterdir()} if trials.is_dir() else set()

    def _write_session(self, row: TrialRow, step: int) -> None:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from torch.utils.tensorboard.summary import scalar
        from torch.utils.tensorboard.writer import FileWriter

        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for name, value in trial_hparams(row, self.start).items():
            if isinstance(value, bool):
                start.hparams[name].bool_value = value
            elif isinstance(value, str):
                start.hparams[name].string_value = value
            else:
                start.hparams[name].number_value = value
        status = api_pb2.Status.Value("STATUS_SUCCESS" if row.ok else "STATUS_FAILURE")
        end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
        writer = FileWriter(str(self.log_dir / TRIALS_RUN / self._session_name(row)))
        try:
            writer.add_summary(_hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start), step)
            for name, value in trial_metrics(row).items():
                writer.add_summary(scalar(f"trial/{name}", value), step)
            writer.add_summary(_hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end), step)
        finally:
            writer.close()


def _hparams_summary(tag: str, **data: Any) -> Any:
    """A summary the HParams plugin reads: ``tag`` with ``HParamsPluginData(**data)`` as its metadata."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=content)])


def trial_hparams(row: TrialRow, start: SearchStart) -> dict[str, Any]:
    """A child's HParams hyperparameters: where it comes from and what it is: for NASNet cells its ops and
    combine methods counted over both cells, for another space the choice it made at each of the space's
    decisions. Every child has the same keys, so the table has no holes."""
    hparams: dict[str, Any] = {"strategy": start.strategy, "objective": start.objective, "trial_id": row.trial_id,
                               "status": row.status, "role": row.role}
    if not isinstance(start.space, SearchSpace):
        decisions = start.space.layout.decisions
        hparams.update({f"decision/{d.name}": choice for d, choice in zip(decisions, start.space.encode(row.genotype))})
        return hparams
    cells = (row.genotype.normal, row.genotype.reduce)
    ops = [op for cell in cells for block in cell.blocks for op in block.ops]
    combines = [block.combine for cell in cells for block in cell.blocks]
    hparams["blocks"] = len(row.genotype.normal.blocks)
    for op in dict.fromkeys([*start.space.ops, *ops]):
        hparams[f"ops/{op}"] = ops.count(op)
    for method in dict.fromkeys([*start.space.combines, *combines]):
        hparams[f"combine/{method}"] = combines.count(method)
    return hparams


def trial_metrics(row: TrialRow) -> dict[str, float]:
    """A child's HParams metrics: its reward, every metric it measured, its training time and epochs (fewer than a
    whole child's for one stopped early: its ``status`` says ``stopped``)."""
    metrics = {"reward": row.reward, **row.metrics, "seconds": row.seconds, "epochs": row.epochs}
    return {k: float(v) for k, v in metrics.items() if v is not None}


class CurveWriter(SearchObserver):
    """The curves of one training process (a supernet, DARTS) as a TensorBoard run in ``log_dir``.

    The writer opens at the first point, with TensorBoard's purge step there, so a resumed training
    that writes its next phase or epoch again hides what a killed process wrote past it. An error
    is one warning, then the curves stop and the training goes on."""

    def __init__(self, log_dir: "str | Path", description: str) -> None:
        self.log_dir = Path(log_dir)
        self.description = description
        self.writer: Any = None
        self.off = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write ``values`` (name -> number) at ``step``."""
        self._write(lambda writer: [writer.add_scalar(name, value, step) for name, value in values.items()], step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        """Write a matplotlib ``figure`` as the image ``tag`` at ``step`` (and close it)."""
        if self.off:
            import matplotlib.pyplot as plt

            plt.close(figure)
        self._write(lambda writer: writer.add_figure(tag, figure, step), step)

    def _write(self, write: Any, step: int) -> None:
        if self.off:
            return
        try:
            if self.writer is None:
                self.writer = _summary_writer(self.log_dir, purge_step=step)
            write(self.writer)
            self.writer.flush()
        except Exception as err:  # the training goes on without its curves
            self.off = True
            log.warning("%s failed and is switched off (the search goes on): %s: %s", self.description,
                        type(err).__name__, err)

    def close(self) -> None:
        self.off = True  # nothing is written after the search ends
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
