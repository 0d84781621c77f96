"""The trial store: one SQLite file per search run with one row per evaluated child.

A row is committed before the strategy learns the child's reward, so a search killed at any moment
(``kill -9`` included) keeps every finished child and resumes from here. The database runs in WAL
mode, so it can be read (``sqlite3 trials.db 'select * from trials'``) while a search writes it.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellsearch.space.genotype import Genotype
from cellsearch.validation import ConfigError

if TYPE_CHECKING:  # for type hints only
    from cellsearch.evaluators.base import EvalResult

SCHEMA_VERSION = 1
TRIALS_FILE = "trials.db"  # its name in a run directory
STATUSES: tuple[str, ...] = ("ok", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    trial_id     INTEGER NOT NULL UNIQUE,
    genotype     TEXT    NOT NULL,
    reward       REAL,
    val_accuracy REAL,
    params       INTEGER,
    mult_adds    INTEGER,
    seconds      REAL    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    error        TEXT    NOT NULL DEFAULT '',
    created_at   TEXT    NOT NULL
)
"""
_COLUMNS = ("trial_id", "genotype", "reward", "val_accuracy", "params", "mult_adds", "seconds", "status",
            "error", "created_at")


@dataclass(frozen=True)
class TrialRow:
    """One evaluated child as stored."""

    trial_id: int
    genotype: Genotype
    reward: float | None
    val_accuracy: float | None
    params: int | None
    mult_adds: int | None
    seconds: float
    status: str
    error: str
    created_at: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class TrialStore:
    """SQLite table ``trials`` in ``path`` (created if missing); every write is its own transaction."""

    def __init__(self, path: "str | Path") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path} was written by a newer cellsearch (trial store schema {version}; "
                                 f"this version reads schema {SCHEMA_VERSION})")
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path} is not a cellsearch trial store: {err}") from None

    # --- writing ----------------------------------------------------------------------------------
    def add(self, trial_id: int, genotype: Genotype, result: EvalResult, reward: float | None) -> TrialRow:
        """Commit the result of child ``trial_id`` and its reward (None when it failed); a trial is stored
        once (ValueError if it exists)."""
        if result.status not in STATUSES:
            raise ValueError(f"trial {trial_id}: status must be one of {list(STATUSES)}, got {result.status!r}")
        row = TrialRow(
            trial_id=int(trial_id),
            genotype=genotype,
            reward=_float_or_none(reward),
            val_accuracy=_float_or_none(result.metric("val_accuracy")),
            params=_int_or_none(result.metric("params")),
            mult_adds=_int_or_none(result.metric("mult_adds")),
            seconds=float(result.seconds),
            status=result.status,
            error=result.error or "",
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )
        values: list[Any] = [getattr(row, c) for c in _COLUMNS]
        values[1] = genotype.to_json()
        try:
            self._db.execute(f"INSERT INTO trials ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                             values)
        except sqlite3.IntegrityError:
            raise ValueError(f"trial {trial_id} is already in {self.path}; a child is stored once") from None
        return row

    # --- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def __contains__(self, trial_id: object) -> bool:
        return self.get(trial_id) is not None  # type: ignore[arg-type]

    def get(self, trial_id: int) -> TrialRow | None:
        """The row of ``trial_id``, or None if that child has not finished."""
        found = self._select("WHERE trial_id = ?", (int(trial_id),))
        return found[0] if found else None

    def rows(self) -> list[TrialRow]:
        """All rows in the order the children finished (rowid: insertion order)."""
        return self._select("ORDER BY rowid")

    def best(self, k: int = 1, distinct: bool = True) -> list[TrialRow]:
        """The ``k`` successful trials with the highest reward (ties: earlier trial first); with
        ``distinct`` a genotype evaluated several times counts once, with its best reward."""
        ranked = self._select("WHERE status = 'ok' AND reward IS NOT NULL ORDER BY reward DESC, trial_id")
        if not distinct:
            return ranked[:k]
        seen: set[str] = set()
        unique = []
        for row in ranked:
            key = row.genotype.key()
            if key not in seen:
                seen.add(key)
                unique.append(row)
            if len(unique) == k:
                break
        return unique

    def _select(self, clause: str, params: tuple = ()) -> list[TrialRow]:
        cursor = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM trials {clause}", params)
        rows = []
        for values in cursor.fetchall():
            data = dict(zip(_COLUMNS, values))
            data["genotype"] = Genotype.from_json(data["genotype"])
            rows.append(TrialRow(**data))
        return rows

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)
