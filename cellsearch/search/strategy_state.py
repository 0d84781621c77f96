"""A strategy's state in the trial store: every event it saw, and a snapshot of the rest now and then.

Saving a whole strategy after every child costs time that grows with the search (its history of
trials, an evolution population, a controller and its optimizer). Instead, :class:`StrategyState`
writes into ``trials.db`` (the tables are :mod:`cellsearch.search.store`'s):

- ``strategy_events``: every event of the search (ask, tell, withdraw, add_trial), one small row
  each, appended at every save and never rewritten: the history of trials;
- ``strategy_snapshots``: everything else, ``strategy.state_dict(include_trials=False)``, replaced
  at the first save and then once every ``snapshot_every`` events. Its size does not grow with the
  search, so neither does the cost of a save.

A save joins the store's open transaction, so the search loop commits a child's row and the tell
it leads to together (an ask commits on its own): the trials and the strategy's state are one
source of truth and never need reconciling on resume.

Loading rebuilds the history from the events up to the snapshot (without running the strategy),
restores the snapshot, and replays the events after it: a strategy is deterministic given its seed
and the events it saw, so it reaches the exact state of the process that wrote them, and each
replayed ask must propose the stored cell again.

State imported from a run directory of an older release (:mod:`cellsearch.search.legacy_state`):
a format-2 snapshot names the CRC of the last event it covers, which is checked against the
imported journal; a format-1 snapshot holds the history itself, and its first load writes a
snapshot whose history is frozen at that point (``history["start"]``), with events from there on.
"""
from __future__ import annotations

import io
from typing import Any

import torch

from cellsearch.search.legacy_state import record_crc
from cellsearch.search.store import TrialStore
from cellsearch.strategies.base import Strategy

__all__ = ["SNAPSHOT_EVERY", "StrategyState", "StrategyStateError"]

SNAPSHOT_EVERY = 1000  # events (an ask and a tell per child): bounds both save cost and replay time


class StrategyStateError(ValueError):
    """A stored strategy state that cannot be read or does not fit the strategy."""


class StrategyState:
    """Saves and restores one strategy in the state tables of ``store``."""

    def __init__(self, store: TrialStore, snapshot_every: int = SNAPSHOT_EVERY) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        self.store = store
        self.snapshot_every = int(snapshot_every)
        self._since_snapshot: int | None = None  # events saved since the snapshot; None = no snapshot yet
        # The history before the first stored event (a converted format-1 state), and that event's number.
        self._history: dict[str, Any] = {"start": 0, "trials": None}

    @property
    def where(self) -> str:
        return f"the strategy state in {self.store.path}"

    def exists(self) -> bool:
        """Whether a strategy state was saved in the store."""
        return self.store.snapshot() is not None

    def save(self, strategy: Strategy) -> None:
        """Store the strategy's events since the last save, and a snapshot now and then, in the store's open
        transaction (or in one of their own)."""
        with self.store.transaction():
            events = strategy.take_events()
            self.store.add_events(events)
            if self._since_snapshot is None or self._since_snapshot + len(events) >= self.snapshot_every:
                self._write_snapshot(strategy)
            else:
                self._since_snapshot += len(events)

    def snapshot(self, strategy: Strategy) -> None:
        """Store what is new and a snapshot now."""
        with self.store.transaction():
            self.store.add_events(strategy.take_events())
            self._write_snapshot(strategy)

    def clear(self) -> None:
        """Forget the stored state (the strategy is then rebuilt from the trials)."""
        self.store.clear_strategy_state()
        self._since_snapshot, self._history = None, {"start": 0, "trials": None}

    def _write_snapshot(self, strategy: Strategy) -> None:
        state = strategy.state_dict(include_trials=False)
        state["history"] = dict(self._history)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.store.put_snapshot(buffer.getvalue())
        self._since_snapshot = 0

    def load(self, strategy: Strategy) -> int:
        """Restore ``strategy`` from the snapshot and the events; return the events replayed after the snapshot."""
        blob = self.store.snapshot()
        if blob is None:
            raise StrategyStateError(f"{self.where} is missing")
        try:
            state = torch.load(io.BytesIO(blob), weights_only=True)
        except Exception as err:  # a damaged or foreign snapshot: say why in a few words
            reason = "it is empty" if not blob else str(err).strip().splitlines()[0].split(". ")[0]
            raise StrategyStateError(f"cannot read {self.where} ({reason}): its snapshot is truncated or "
                                     f"damaged") from None
        history = state.pop("history", None)
        start = int(history["start"]) if history is not None else 0
        events = self.store.events(start)
        covered = int(state.get("events", 0))
        if history is not None:
            before = [e for e in events if e[0] < covered]
            if [e[0] for e in before] != list(range(start, covered)) or (
                    before and "last_crc" in history and record_crc(before[-1]) != history["last_crc"]):
                raise StrategyStateError(f"{self.where} does not hold the events {start}..{covered - 1} its snapshot "
                                         f"was saved after; its journal belongs to another search or was cut short")
        try:
            if history is not None:
                strategy.restore_history(history["trials"], [e[1:] for e in before])
            strategy.load_state_dict(state)
        except (KeyError, ValueError) as err:
            raise StrategyStateError(f"cannot resume from {self.where}: {err}") from None
        replayed = self._replay(strategy, events)
        strategy.take_events()
        if history is None:  # format 1: the snapshot held the history; freeze it and store events from here on
            self._history = {"start": strategy.num_events, "trials": strategy.state_dict()["trials"]}
            with self.store.transaction():
                self.store.drop_events_before(strategy.num_events)
                self._write_snapshot(strategy)
        else:
            self._history = {"start": start, "trials": history["trials"]}
            self._since_snapshot = replayed
        return replayed

    def _replay(self, strategy: Strategy, events: list[tuple]) -> int:
        """Apply the events the snapshot does not cover; return how many."""
        replayed = 0
        for sequence, *event in events:
            if sequence < strategy.num_events:
                continue  # history, or stored before the snapshot that now covers it
            if sequence != strategy.num_events:
                raise StrategyStateError(f"{self.where} skips from event {strategy.num_events} to {sequence}")
            try:
                strategy.replay(event)
            except (KeyError, ValueError) as err:
                raise StrategyStateError(f"cannot replay {self.where}: {err}") from None
            replayed += 1
        return replayed
