"""The strategy state files of run directories from before trial store schema 3, read to import them.

Until schema 3 a search kept its strategy's state beside ``trials.db`` in two files:

- ``strategy_state.pt``: a snapshot (``torch.save`` of the strategy's state; from the journal's
  format 2 on without the history of trials, which the journal held);
- ``strategy_state.pt.journal``: events (sequence number, kind, trial id, data) as records of a
  header (payload length, CRC-32 of the payload) and the event as compact JSON. A record cut short
  by a kill has a short payload or a wrong CRC: it and anything after it are left out (its event was
  never acknowledged: the loop saved before it acted).

:class:`~cellsearch.search.store.TrialStore` imports both into its state tables when it upgrades such
a store; :mod:`cellsearch.search.strategy_state` reads them from there.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_SUFFIX", "LEGACY_STATE_FILE", "LegacyState", "encode_record", "read_legacy_state",
           "read_records", "record_crc"]

LEGACY_STATE_FILE = "strategy_state.pt"  # its name in a run directory
JOURNAL_SUFFIX = ".journal"
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload


@dataclass(frozen=True)
class LegacyState:
    """A snapshot's bytes (as written, unread), the journal's whole records, and the files they came from."""

    snapshot: bytes
    events: list[list[Any]]
    files: list[Path]


def encode_record(event: "tuple | list") -> bytes:
    """One journal record: header (length, CRC-32) and the event as compact JSON."""
    payload = json.dumps(event, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def record_crc(event: "tuple | list") -> int:
    """The CRC-32 a journal record of ``event`` carries (format-2 snapshots name their last event's)."""
    return _HEADER.unpack_from(encode_record(event))[1]


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


def read_legacy_state(path: Path) -> LegacyState | None:
    """The snapshot ``path`` and its journal (``path`` + ``.journal``), or None if there is no snapshot."""
    journal = path.with_name(path.name + JOURNAL_SUFFIX)
    if not path.is_file():
        return None
    records, _ = read_records(journal)
    return LegacyState(path.read_bytes(), records, [p for p in (path, journal) if p.is_file()])
