"""What a search reports: one progress line per child, the summary table, the plots at the end."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cellsearch.progress import format_seconds
from cellsearch.search.estimates import is_estimate, reward_text
from cellsearch.search.front import front_lines, front_rows
from cellsearch.search.plots import plot_genotype, plot_pareto, plot_rewards
from cellsearch.search.store import TRIALS_FILE, TrialRow, TrialStore
from cellsearch.space.profile import format_count
from cellsearch.validation import ConfigError

log = logging.getLogger("cellsearch.search.loop")

BEST_CELL_FILE = "best_cell.yaml"
REWARDS_PLOT = "rewards.png"
PARETO_PLOT = "pareto.png"
BEST_CELL_PLOT = "best_cell.png"


@dataclass
class SearchSummary:
    """What a call of :meth:`SearchLoop.run` did."""

    run_dir: Path
    budget: int
    num_trials: int       # children in the store at the end
    num_trained: int      # children trained by this call (the rest came from the store)
    seconds: float        # wall time of this call
    best: TrialRow | None


def no_success_line(summary: SearchSummary) -> str | None:
    """None if a child of the search succeeded; else one line with how many failed and the first error."""
    if summary.best is not None:
        return None
    with TrialStore(summary.run_dir / TRIALS_FILE) as store:
        failed = sorted((r for r in store.rows() if not r.ok), key=lambda r: r.trial_id)
    if not failed:
        return f"no child succeeded: {summary.run_dir / TRIALS_FILE} holds no children"
    first = failed[0].error.strip().splitlines()[0] if failed[0].error.strip() else "no reason given"
    return (f"no child succeeded: all {len(failed)} failed; the first error (trial {failed[0].trial_id}): {first}; "
            f"the children are in {summary.run_dir / TRIALS_FILE}")


class Progress:
    """Counts finished children; one log line per child: count, reward, best so far, time per child, ETA.
    One-shot searches score cells on a supernet instead of training children: their lines count cells and
    say "one-shot estimate" and "unscored" (a path that failed), so that a low estimate does not read as a
    failed child."""

    def __init__(self, budget: int, num_done: int, start: float, max_epochs: int | None = None) -> None:
        self.budget = budget
        self.max_epochs = max_epochs  # a whole child's epochs, when children may be stopped early
        self.num_done = num_done
        self.num_trained = 0
        self.start = start

    def record(self, row: TrialRow, best: TrialRow | None) -> str:
        """Count ``row`` and return its progress line."""
        self.num_done += 1
        self.num_trained += 1
        per_child = (time.perf_counter() - self.start) / self.num_trained
        estimate = is_estimate(row)
        reason = row.error.splitlines()[0] if row.error else "no reason given"
        outcome = reward_text(row) if row.ok and row.reward is not None else \
            f"{'unscored' if estimate else 'FAILED'} ({reason})"
        if row.stopped:
            accuracy = "-" if row.val_accuracy is None else f"{row.val_accuracy:.4f}"
            outcome = f"stopped at epoch {row.epochs} of {self.max_epochs}, val {accuracy}, {outcome}"
        best_text = f"best {reward_text(best).split()[-1]} (trial {best.trial_id})" if best else "best -"
        eta = format_seconds(per_child * (self.budget - self.num_done))
        width = len(str(self.budget))
        unit, work = ("cell", "score") if estimate else ("child", "train")
        return (f"{unit} {self.num_done:>{width}}/{self.budget} | trial {row.trial_id:>{width}} {outcome} | "
                f"{best_text} | {per_child:.1f} s/{unit} ({work} {row.seconds:.1f} s) | ETA {eta}")


def summary_table(rows: list[TrialRow]) -> str:
    """Ranked rows (the best cells) as a text table; one-shot rows head their columns as estimates; an
    ``epochs`` column when some children were stopped early."""
    estimates = any(is_estimate(r) for r in rows)
    with_epochs = any(r.stopped for r in rows)
    reward, accuracy_name, seconds = ("estimate", "est_acc", "score s") if estimates else ("reward", "val_acc", "train s")
    header = (f"{'rank':>4}  {'trial':>5}  {reward:>8}  {accuracy_name:>7}  {'params':>9}  {'mult-adds':>10}  "
              f"{seconds:>7}" + (f"  {'epochs':>6}" if with_epochs else ""))
    lines = [header, "-" * len(header)]
    for rank, r in enumerate(rows, 1):
        accuracy = "-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}"
        epochs = f"  {'-' if r.epochs is None else r.epochs:>6}{' stopped' if r.stopped else ''}" if with_epochs else ""
        lines.append(f"{rank:>4}  {r.trial_id:>5}  {r.reward:>8.4f}  {accuracy:>7}  {format_count(r.params):>9}  "
                     f"{format_count(r.mult_adds):>10}  {r.seconds:>7.1f}{epochs}")
    return "\n".join(lines)


def report(summary: SearchSummary, rows: list[TrialRow], top: list[TrialRow], title: str = "",
           metric: str | None = None, published: dict[str, float] | None = None, notes: list[str] = ()) -> None:
    """Log the summary, the table of the best cells and the front over accuracy and ``metric``; draw the
    reward curve, the best cell and ``pareto.png`` (with the ``published`` cells' costs)."""
    run_dir = summary.run_dir
    plot_rewards(rows, run_dir / REWARDS_PLOT, title=f"{title}: {len(rows)} children" if title else "")
    front_text = []
    if metric is not None:
        front = front_rows(rows, metric)
        plot_pareto(rows, front, metric, published or {}, run_dir / PARETO_PLOT, title=title)
        front_text = front_lines(rows, metric, published or {}) + [f"front plot: {run_dir / PARETO_PLOT}"]
    failed = sum(not r.ok for r in rows)
    stopped = sum(r.stopped for r in rows)
    if any(is_estimate(r) for r in rows):  # a one-shot search scored cells on its supernet, it trained none
        done = (f"{summary.num_trials}/{summary.budget} cells scored on the supernet (one-shot estimates, "
                f"{failed} unscored), {summary.num_trained} in this run")
    else:
        done = (f"{summary.num_trials}/{summary.budget} children ({failed} failed"
                f"{f', {stopped} stopped early' if stopped else ''}), {summary.num_trained} trained in this run")
    lines = [f"search done: {done} in {format_seconds(summary.seconds)}"]
    if summary.best is not None:
        try:
            plot_genotype(summary.best.genotype, run_dir / BEST_CELL_PLOT,
                          title=f"best cell: trial {summary.best.trial_id}, {reward_text(summary.best)}")
            diagram = f"diagram {run_dir / BEST_CELL_PLOT}"
        except ConfigError as err:  # a space without a diagram module: the search's results stand without it
            diagram = f"no diagram: {err}"
        lines += [summary_table(top), f"best cell: {run_dir / BEST_CELL_FILE} ({diagram})"]
    else:
        lines.append("no child succeeded: see the error column of trials.db")
    lines += front_text + list(notes)
    lines.append(f"trials: {run_dir / TRIALS_FILE}, reward curve: {run_dir / REWARDS_PLOT}")
    log.info("\n".join(lines))
