"""The trial store: one SQLite file per search run with one row per evaluated child.

A row is committed before the strategy learns the child's reward, so a search killed at any moment
(``kill -9`` included) keeps every finished child and resumes from here. The database runs in WAL
mode, so it can be read while a search writes it::

    sqlite3 trials.db 'select trial_id, reward, val_accuracy, params, mult_adds, latency_ms from trials'

Every metric of every trial is kept: the standard ones (:data:`METRIC_COLUMNS`) as columns, any
other in the ``metrics`` column (a JSON object). ``role`` is ``search`` for a child the strategy
proposed and learned from, ``audit`` for a candidate the pre-judger passed over and that was trained
anyway to check it. The ``scores`` table holds every zero-cost score the pre-judger computed.

Schema versions (``PRAGMA user_version``), each reached from the one before by :data:`MIGRATIONS`
when a run directory is opened, so old run directories resume with their rows unchanged:

1. ``trials`` with reward, val_accuracy, params, mult_adds (cellsearch before the evaluator seam)
2. adds ``train_loss``, ``latency_ms``, ``metrics`` and ``role`` to ``trials``, and the ``scores`` table
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellsearch.space.genotype import Genotype
from cellsearch.validation import ConfigError

if TYPE_CHECKING:  # for type hints only
    from cellsearch.evaluators.base import EvalResult

SCHEMA_VERSION = 2
TRIALS_FILE = "trials.db"  # its name in a run directory
STATUSES: tuple[str, ...] = ("ok", "failed")
ROLES: tuple[str, ...] = ("search", "audit")
# Standard metrics kept as columns (with their SQL types); any other metric goes into the JSON column.
METRIC_COLUMNS: dict[str, str] = {"val_accuracy": "REAL", "train_loss": "REAL", "params": "INTEGER",
                                  "mult_adds": "INTEGER", "latency_ms": "REAL"}

_TRIALS_V1 = """
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
_SCORES = """
CREATE TABLE IF NOT EXISTS scores (
    round        INTEGER NOT NULL,           -- pre-judging round (one per evaluated proposal)
    trial_id     INTEGER NOT NULL,           -- the trial the round chose (evaluated in full)
    candidate_id INTEGER NOT NULL,           -- this candidate's proposal id (= trial_id when chosen)
    genotype     TEXT    NOT NULL,
    score        TEXT    NOT NULL,           -- the zero-cost score's name
    value        REAL,                       -- NULL when the score could not be computed
    chosen       INTEGER NOT NULL,           -- 1 for the candidate the round evaluated
    audit        INTEGER NOT NULL DEFAULT 0, -- 1 for a passed-over candidate trained anyway
    seconds      REAL    NOT NULL,
    UNIQUE (candidate_id, score)
)
"""
# MIGRATIONS[v] takes a schema-v database to schema v + 1 (run in one transaction with the version bump).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE trials ADD COLUMN train_loss REAL",
        "ALTER TABLE trials ADD COLUMN latency_ms REAL",
        "ALTER TABLE trials ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE trials ADD COLUMN role TEXT NOT NULL DEFAULT 'search' CHECK (role IN ('search', 'audit'))",
        _SCORES),
}
_COLUMNS = ("trial_id", "genotype", "reward", "val_accuracy", "params", "mult_adds", "seconds", "status",
            "error", "created_at", "train_loss", "latency_ms", "metrics", "role")


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
    train_loss: float | None = None
    latency_ms: float | None = None
    other_metrics: dict[str, float] = field(default_factory=dict)  # the ``metrics`` column
    role: str = "search"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def metrics(self) -> dict[str, float]:
        """Every metric measured for this trial, by name."""
        standard = {name: getattr(self, name) for name in METRIC_COLUMNS}
        return {**{k: v for k, v in standard.items() if v is not None}, **self.other_metrics}


@dataclass(frozen=True)
class ScoreRow:
    """One zero-cost score of one pre-judged candidate."""

    round: int
    trial_id: int
    candidate_id: int
    genotype: Genotype
    score: str
    value: float | None
    chosen: bool
    audit: bool
    seconds: float


class TrialStore:
    """SQLite table ``trials`` in ``path`` (created if missing); every write is its own transaction."""

    def __init__(self, path: "str | Path") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path} is not a cellsearch trial store: {err}") from None

    def _migrate(self) -> None:
        """Create the tables in a new file, or bring an older schema up to SCHEMA_VERSION, in one transaction
        (read inside it, so two processes opening a new file at once do not both create it)."""
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path} was written by a newer cellsearch (trial store schema {version}; "
                                 f"this version reads schemas up to {SCHEMA_VERSION}): upgrade cellsearch to "
                                 f"resume it")
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'trials'").fetchone():
                self._db.execute(_TRIALS_V1)
                version = 1
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                version += 1
            self._db.execute(f"PRAGMA user_version = {version}")

    def _transaction(self) -> "_Transaction":
        self._db.execute("BEGIN IMMEDIATE")
        return _Transaction(self._db)

    # --- writing ----------------------------------------------------------------------------------
    def add(self, trial_id: int, genotype: Genotype, result: EvalResult, reward: float | None,
            role: str = "search") -> TrialRow:
        """Commit the result of child ``trial_id`` (every metric) and its reward (None when it failed);
        a trial is stored once (ValueError if it exists)."""
        if result.status not in STATUSES:
            raise ValueError(f"trial {trial_id}: status must be one of {list(STATUSES)}, got {result.status!r}")
        if role not in ROLES:
            raise ValueError(f"trial {trial_id}: role must be one of {list(ROLES)}, got {role!r}")
        standard = {name: result.metric(name) for name in METRIC_COLUMNS}
        standard = {name: None if v is None else (int(v) if METRIC_COLUMNS[name] == "INTEGER" else float(v))
                    for name, v in standard.items()}
        row = TrialRow(
            trial_id=int(trial_id),
            genotype=genotype,
            reward=_float_or_none(reward),
            seconds=float(result.seconds),
            status=result.status,
            error=result.error or "",
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            other_metrics={k: float(v) for k, v in result.metrics.items() if k not in METRIC_COLUMNS},
            role=role,
            **standard,
        )
        values: list[Any] = [getattr(row, c) for c in _COLUMNS if c != "metrics"]
        values[1] = genotype.to_json()
        values.insert(_COLUMNS.index("metrics"), json.dumps(row.other_metrics, sort_keys=True))
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
            data["other_metrics"] = json.loads(data.pop("metrics"))
            rows.append(TrialRow(**data))
        return rows

    # --- pre-judger scores ------------------------------------------------------------------------
    def add_scores(self, rows: list[ScoreRow]) -> None:
        """Commit one round's scores at once; a round written again (a resumed search re-asks the same
        candidates) replaces its rows, so the table never holds a round twice."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (round, trial_id, candidate_id, genotype, score, value, chosen, audit, "
                "seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.round, r.trial_id, r.candidate_id, r.genotype.to_json(), r.score, _float_or_none(r.value),
                  int(r.chosen), int(r.audit), float(r.seconds)) for r in rows])

    def scores(self) -> list[ScoreRow]:
        """Every stored score, by round and candidate."""
        cursor = self._db.execute("SELECT round, trial_id, candidate_id, genotype, score, value, chosen, audit, "
                                  "seconds FROM scores ORDER BY round, candidate_id, score")
        return [ScoreRow(r[0], r[1], r[2], Genotype.from_json(r[3]), r[4], r[5], bool(r[6]), bool(r[7]), r[8])
                for r in cursor.fetchall()]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """Commits on success, rolls back on an exception (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
