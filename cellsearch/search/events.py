"""What a running search tells the outside world: observers of the search loop.

:class:`~cellsearch.search.loop.SearchLoop` calls each observer at fixed points of a search: once
when it starts (after a resumed search has caught up with its store), once per finished child
(after the row is committed and the strategy has learned from it), and once at the end. An
observer watches; it changes nothing the search decides, and the search never depends on it: an
observer that raises is reported in one warning and not called again, and the search goes on
(:class:`Observers`). The live view in TensorBoard (:mod:`cellsearch.search.live`) is one.

To write another, subclass :class:`SearchObserver` and override the methods you need; the others
do nothing. New events are added as new methods with no-op defaults, so an observer written today
keeps working.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cellsearch.search.store import TrialRow

if TYPE_CHECKING:  # for type hints only: the loop imports this module
    from cellsearch.search.report import SearchSummary
    from cellsearch.space.genotype import SearchSpace

__all__ = ["Observers", "SearchObserver", "SearchStart"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchStart:
    """What a search is, as it starts (or resumes)."""

    run_dir: Path
    budget: int
    strategy: str                  # the strategy's name (ppo, evolution, ...)
    objective: str                 # the objective's name (accuracy, constrained, pareto)
    metric: str | None             # the cost metric the objective trades against accuracy, if any
    space: "SearchSpace"
    rows: tuple[TrialRow, ...]     # children already in the store, in the order they finished (resumed)


class SearchObserver:
    """Base class of search observers: every method does nothing until overridden."""

    def search_started(self, start: SearchStart) -> None:
        """The search starts, or resumes with ``start.rows`` already done."""

    def trial_finished(self, row: TrialRow, best: TrialRow | None, signals: dict[str, float]) -> None:
        """A child was committed to the store: ``row``; ``best`` is the best child so far (None while
        none succeeded); ``signals`` is what the strategy reports of itself now (``Strategy.signals``)."""

    def search_finished(self, summary: "SearchSummary", rows: Sequence[TrialRow]) -> None:
        """The search reached its budget; ``rows`` are every child in the store, in finishing order."""

    def close(self) -> None:
        """Release files and threads; called once, however the search ended (interrupted included)."""


class Observers:
    """Calls a list of observers in order. An observer that raises is logged once, as a warning naming
    it, the event and the error, and is dropped: the search never stops for an observer."""

    def __init__(self, observers: Sequence[SearchObserver] = ()) -> None:
        self.active: list[SearchObserver] = list(observers)

    def notify(self, event: str, *args: Any) -> None:
        """Call ``observer.<event>(*args)`` on every active observer."""
        for observer in list(self.active):
            try:
                getattr(observer, event)(*args)
            except Exception as err:  # whatever it is, the search goes on
                self.active.remove(observer)
                log.warning("%s failed in %s and is switched off for the rest of this search (the search goes "
                            "on): %s: %s", _name(observer), event, type(err).__name__, str(err).splitlines()[0]
                            if str(err) else "")
                _close_quietly(observer)

    def close(self) -> None:
        """Close every active observer (errors logged as in :meth:`notify`)."""
        self.notify("close")
        self.active = []


def _name(observer: SearchObserver) -> str:
    return getattr(observer, "description", None) or type(observer).__name__


def _close_quietly(observer: SearchObserver) -> None:
    """Close an observer that already failed: a second error about it would say nothing new."""
    try:
        observer.close()
    except Exception as err:
        log.debug("closing %s after its failure: %s", _name(observer), err)
