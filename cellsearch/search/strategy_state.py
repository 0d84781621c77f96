"""A strategy's state on disk: an append-only journal of every event plus periodic snapshots.

Saving a whole strategy after every child costs time that grows with the search (its history of
trials, an evolution population, a controller and its optimizer). Instead, :class:`StrategyStateFiles`
writes

- ``strategy_state.pt.journal``: every event of the search (ask, tell, withdraw, add_trial), one
  small record each, appended and flushed at every save and never rewritten: the history of trials;
- ``strategy_state.pt``: a snapshot of everything else, ``strategy.state_dict(include_trials=False)``
  (atomically replaced), taken at the first save and then once every ``snapshot_every`` events. Its
  size does not grow with the search, so neither does the cost of a save.

Loading rebuilds the history from the journal's records up to the snapshot, restores the snapshot,
and replays the records after it: a strategy is deterministic given its seed and the events it
saw, so it reaches the exact state of the process that wrote them, and each replayed ask must
propose the journaled cell again. Each record carries its length and a CRC, so a record cut short
by a kill is recognised and dropped (its event had not been acknowledged: the loop saves before it
acts), and the journal is truncated to its last whole record before new ones are appended.

Snapshots written before the journal kept every event (format 1) hold the history themselves and
load as before; the first save after such a load writes a snapshot whose history is frozen at
that point (``history_start``) and starts the append-only journal there.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import torch

from cellsearch.search.atomic import atomic_write
from cellsearch.strategies.base import Strategy

JOURNAL_SUFFIX = ".journal"
SNAPSHOT_EVERY = 1000  # events (an ask and a tell per child): bounds both save cost and replay time
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload


class StateFileError(ValueError):
    """A snapshot or journal that cannot be read or does not fit the strategy."""


def encode_record(event: tuple) -> bytes:
    """One journal record: header (length, CRC-32) and the event as compact JSON."""
    payload = json.dumps(event, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path) -> tuple[list[list[Any]], int]:
    """The whole records of a journal and the byte offset where they end (a torn tail is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, offset = [], 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            records.append(json.loads(payload))
        except ValueError:
            break
        offset += _HEADER.size + length
    return records, offset


class StrategyStateFiles:
    """Saves and restores one strategy in ``path`` (the snapshot) and ``path + '.journal'``."""

    def __init__(self, path: "str | Path", snapshot_every: int = SNAPSHOT_EVERY) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + JOURNAL_SUFFIX)
        self.snapshot_every = int(snapshot_every)
        self._journal = None  # open append handle, positioned after the last whole record
        self._since_snapshot: int | None = None  # events journaled since the snapshot; None = no snapshot yet
        # The history before the journal's first event (a converted format-1 state), and that event's number.
        self._history: dict[str, Any] = {"start": 0, "trials": None}
        self._last_crc = 0  # CRC of the last journaled record: the snapshot names it, so a foreign journal is caught

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, strategy: Strategy) -> None:
        """Persist what ``strategy`` did since the last save: journal records, and a snapshot now and then."""
        count = self._journal_events(strategy)
        if self._since_snapshot is None or self._since_snapshot + count >= self.snapshot_every:
            self._write_snapshot(strategy)
        else:
            self._since_snapshot += count

    def snapshot(self, strategy: Strategy) -> None:
        """Journal what is new and write a snapshot now."""
        self._journal_events(strategy)
        self._write_snapshot(strategy)

    def _journal_events(self, strategy: Strategy) -> int:
        """Append the strategy's new events to the journal; return how many."""
        if self._journal is None:
            # A new search (or one rebuilt from its trial store) starts a new journal; after close(), go on.
            self._reset_journal(0 if self._since_snapshot is None else self.journal_path.stat().st_size)
        events = strategy.take_events()
        if events:
            records = [encode_record(e) for e in events]
            self._append(b"".join(records))
            self._last_crc = _HEADER.unpack_from(records[-1])[1]
        return len(events)

    def _write_snapshot(self, strategy: Strategy) -> None:
        state = strategy.state_dict(include_trials=False)
        state["history"] = {**self._history, "last_crc": self._last_crc}
        buffer = io.BytesIO()  # serialised first: a full disk then raises OSError, not torch's "unexpected pos"
        torch.save(state, buffer)
        atomic_write(self.path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        self._since_snapshot = 0

    def load(self, strategy: Strategy) -> int:
        """Restore ``strategy`` from the journal and the snapshot; return the events replayed after the snapshot."""
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which one, and why in a few words
            reason = "the file is empty" if self.path.stat().st_size == 0 else \
                str(err).strip().splitlines()[0].split(". ")[0]
            raise StateFileError(f"cannot read the strategy state {self.path} ({reason}): it is truncated or "
                                 f"damaged") from None
        records, end = read_records(self.journal_path)
        history = state.pop("history", None)
        covered = int(state.get("events", 0))
        if history is not None:
            start = int(history["start"])
            before = [r for r in records if start <= r[0] < covered]
            if [r[0] for r in before] != list(range(start, covered)) or (
                    before and zlib.crc32(encode_record(before[-1])[_HEADER.size:]) != history["last_crc"]):
                raise StateFileError(f"{self.journal_path} does not hold the events {start}..{covered - 1} that "
                                     f"{self.path} was saved after; it belongs to another search or was cut short")
        try:
            if history is not None:
                strategy.restore_history(history["trials"], [r[1:] for r in before])
            strategy.load_state_dict(state)
        except (KeyError, ValueError) as err:
            raise StateFileError(f"cannot resume from {self.path}: {err}") from None
        replayed = 0
        for record in records:
            sequence, event = record[0], record[1:]
            if sequence < strategy.num_events:
                continue  # history, or written before the snapshot that now covers it
            if sequence != strategy.num_events:
                raise StateFileError(f"{self.journal_path} skips from event {strategy.num_events} to {sequence}; "
                                     f"it does not belong to {self.path}")
            try:
                strategy.replay(event)
            except (KeyError, ValueError) as err:
                raise StateFileError(f"cannot replay {self.journal_path} onto {self.path}: {err}") from None
            replayed += 1
        strategy.take_events()
        if history is None:  # format 1: the snapshot held the history; freeze it and journal from here on
            self._history = {"start": strategy.num_events, "trials": strategy.state_dict()["trials"]}
            self._last_crc = 0
            self._write_snapshot(strategy)  # first: a kill before the journal is emptied loses nothing
            self._reset_journal(0)
        else:
            self._history = {"start": int(history["start"]), "trials": history["trials"]}
            self._reset_journal(end)
            self._last_crc = zlib.crc32(encode_record(records[-1])[_HEADER.size:]) if records else 0
            self._since_snapshot = replayed
        return replayed

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _reset_journal(self, size: int) -> None:
        """Keep the journal's first ``size`` bytes (0 = empty it) and append after them."""
        self.close()
        with open(self.journal_path, "ab") as f:
            f.truncate(size)
        self._journal = open(self.journal_path, "ab")

    def _append(self, data: bytes) -> None:
        # A flushed write is in the operating system's hands: it survives kill -9 of this process.
        self._journal.write(data)
        self._journal.flush()
