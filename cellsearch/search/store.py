"""The trial store: one SQLite file per search run with one row per evaluated child.

A row is committed before the strategy learns the child's reward, so a search killed at any moment
(``kill -9`` included) keeps every finished child and resumes from here. The database runs in WAL
mode, so it can be read while a search writes it::

    sqlite3 trials.db 'select trial_id, reward, val_accuracy, params, mult_adds, latency_ms from trials'

Every metric of every trial is kept: the standard ones (:data:`METRIC_COLUMNS`) as columns, any
other in the ``metrics`` column (a JSON object). ``role`` is ``search`` for a child the strategy
proposed and learned from, ``audit`` for a candidate the pre-judger passed over and that was trained
anyway to check it. The ``scores`` table holds every zero-cost score the pre-judger computed.

Schema versions (``PRAGMA user_version``), each reached from the one before by the migrations of
:mod:`cellsearch.search.store_schema` when a run directory is opened, so old run directories resume with
their rows unchanged:

1. ``trials`` with reward, val_accuracy, params, mult_adds (cellsearch before the evaluator seam)
2. adds ``train_loss``, ``latency_ms``, ``metrics`` and ``role`` to ``trials``, and the ``scores`` table
3. adds the strategy's state (:mod:`cellsearch.search.strategy_state`): ``strategy_events`` (every ask,
   tell, withdrawal and added trial, in order) and ``strategy_snapshots`` (its latest snapshot). A run
   directory of schema 2 kept that state in ``strategy_state.pt`` and ``strategy_state.pt.journal``
   beside ``trials.db``: the upgrade imports both in the same transaction and then renames them
   ``*.migrated`` (kept, no longer read), so a search reads one file and nothing needs reconciling.
4. adds the ``curves`` table: a trained child's learning curve, one row per validated epoch
   (:class:`~cellsearch.evaluators.base.EpochPoint`), written with the child's row. Trials of older
   stores have no curve.
5. early stopping (:mod:`cellsearch.search.fidelity`): ``trials.status`` may be ``stopped`` (a child a
   scheduler, or the search's epoch budget, ended below its full epochs; it has metrics and a reward),
   ``trials.epochs`` holds the epochs a child trained (NULL where unknown: older rows, evaluators without
   a curve), and ``curves.seq`` numbers the points reported to the scheduler in the order it saw them
   (NULL for points of children trained without one). A scheduled child's points are committed segment by
   segment, before its row; replaying them by ``seq`` rebuilds the scheduler exactly. SQLite cannot change
   a CHECK constraint, so the upgrade copies ``trials`` into a new table (same rowids: same order) and
   renames it, in the one transaction of every upgrade.

The best cell (:meth:`TrialStore.best`, :meth:`TrialRow.beats`) is the completed child (status ``ok``)
with the highest reward; a stopped child's reward was measured after fewer epochs, so it is named only
when no child completed.

The curves can be read while a search runs, e.g. the best trial's::

    sqlite3 trials.db 'select epoch, val_accuracy, seconds from curves where trial_id =
                       (select trial_id from trials order by reward desc limit 1) order by epoch'

Bad files end in one line that says what was found and how to recover: an empty (0 bytes) or
truncated file, one that is not SQLite, or one written by a newer cellsearch.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellsearch.evaluators.base import EpochPoint
from cellsearch.search.legacy_state import LEGACY_STATE_FILE, read_legacy_state
from cellsearch.search.store_schema import MIGRATIONS, SCHEMA_VERSION, TRIALS_V1
from cellsearch.space.genotype import Genotype
from cellsearch.space.spaces import genotype_from_json
from cellsearch.validation import ConfigError

if TYPE_CHECKING:  # for type hints only
    from cellsearch.evaluators.base import EvalResult

TRIALS_FILE = "trials.db"  # its name in a run directory
STATUSES: tuple[str, ...] = ("ok", "failed", "stopped")
ROLES: tuple[str, ...] = ("search", "audit")
# Standard metrics kept as columns (with their SQL types); any other metric goes into the JSON column.
METRIC_COLUMNS: dict[str, str] = {"val_accuracy": "REAL", "train_loss": "REAL", "params": "INTEGER",
                                  "mult_adds": "INTEGER", "latency_ms": "REAL"}

_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of every SQLite file
_CURVE_COLUMNS = ("epoch", "val_accuracy", "train_loss", "seconds", "cpu_seconds")
_COLUMNS = ("trial_id", "genotype", "reward", "val_accuracy", "params", "mult_adds", "seconds", "status",
            "error", "created_at", "train_loss", "latency_ms", "metrics", "role", "epochs")


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
    epochs: int | None = None  # epochs it trained (None where unknown)

    @property
    def ok(self) -> bool:
        """Evaluated without failing: completed, or stopped early (it has metrics and a reward)."""
        return self.status in ("ok", "stopped")

    @property
    def stopped(self) -> bool:
        """Ended below its full epochs by early stopping (a scheduler, or the search's epoch budget)."""
        return self.status == "stopped"

    @property
    def metrics(self) -> dict[str, float]:
        """Every metric measured for this trial, by name."""
        standard = {name: getattr(self, name) for name in METRIC_COLUMNS}
        return {**{k: v for k, v in standard.items() if v is not None}, **self.other_metrics}

    def beats(self, best: "TrialRow | None") -> bool:
        """Whether this trial ranks above ``best`` (None: nothing yet), as :meth:`TrialStore.best` ranks
        trials: completed before stopped, then a higher reward, ties going to the earlier trial."""
        return self.ok and self.reward is not None and (best is None or self._rank() < best._rank())

    def _rank(self) -> tuple[bool, float, int]:
        return self.stopped, -self.reward, self.trial_id


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
    """SQLite tables in ``path`` (created if missing): ``trials``, ``curves``, ``scores`` and the strategy's state.
    Every write is its own transaction unless it runs inside :meth:`transaction`."""

    def __init__(self, path: "str | Path") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_file()
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            imported = self._migrate()
            damage = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path} is not a cellsearch trial store ({err}): restore it from a backup, or "
                              f"start a new run directory") from None
        if damage != "ok":
            self._db.close()
            raise ConfigError(f"{self.path} is damaged ({damage}): restore it from a backup, or start a new run "
                              f"directory")
        for old in imported:  # committed: the old files are kept for reference, no longer read
            old.rename(old.with_name(old.name + ".migrated"))

    def _check_file(self) -> None:
        """Refuse an emptied or truncated file before SQLite reads it (it would take the first for a new store)."""
        if not self.path.is_file():
            return
        size = self.path.stat().st_size
        if size == 0:
            raise ConfigError(f"{self.path} is empty (0 bytes), so the children it held are gone: restore it from a "
                              f"backup, or start a new run directory")
        with open(self.path, "rb") as f:
            header = f.read(100)
        if not header.startswith(_SQLITE_MAGIC):
            return  # not SQLite: refused when it is opened
        page_size = int.from_bytes(header[16:18], "big") if len(header) == 100 else 0
        expected = (65536 if page_size == 1 else page_size) * int.from_bytes(header[28:32], "big")
        current = len(header) == 100 and header[24:28] == header[92:96]  # the page count is valid (SQLite's rule)
        if len(header) < 100 or (current and size < expected):
            of = f" of {expected:,}" if len(header) == 100 else ""
            raise ConfigError(f"{self.path} is truncated ({size:,}{of} bytes): restore it from a backup, or start a "
                              f"new run directory")

    def _migrate(self) -> list[Path]:
        """Create the tables in a new file, or bring an older schema up to SCHEMA_VERSION, in one transaction
        (read inside it, so two processes opening a new file at once do not both create it). Returns the
        state files imported from beside a schema-2 ``trials.db``."""
        imported: list[Path] = []
        with self.transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path} was written by a newer cellsearch (trial store schema {version}; "
                                  f"this release reads schemas up to {SCHEMA_VERSION}): resume it with that newer "
                                  f"cellsearch (pip install -U cellsearch), or start a new run directory")
            upgrade = bool(self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'trials'").fetchone())
            if not upgrade:
                self._db.execute(TRIALS_V1)
                version = 1
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                if version == 2 and upgrade and self.path.name == TRIALS_FILE:
                    imported = self._import_legacy_state()
                version += 1
            self._db.execute(f"PRAGMA user_version = {version}")
        return imported

    def _import_legacy_state(self) -> list[Path]:
        """Copy a search's state files (schema 2 and before) into the state tables; return those files."""
        legacy = read_legacy_state(self.path.with_name(LEGACY_STATE_FILE))
        if legacy is None:
            return []
        self._db.execute("INSERT INTO strategy_snapshots (id, state) VALUES (0, ?)", (legacy.snapshot,))
        self._db.executemany("INSERT OR REPLACE INTO strategy_events (seq, kind, trial_id, data) VALUES (?, ?, ?, ?)",
                             [(seq, kind, trial_id, json.dumps(data, separators=(",", ":")))
                              for seq, kind, trial_id, data in legacy.events])
        return legacy.files

    def transaction(self) -> "_Transaction":
        """``with store.transaction():`` the writes inside commit together or not at all (nested: joins)."""
        return _Transaction(self._db)

    # --- writing ----------------------------------------------------------------------------------
    def add(self, trial_id: int, genotype: Genotype, result: EvalResult, reward: float | None,
            role: str = "search", status: str | None = None, epochs: int | None = None,
            segmented: bool = False) -> TrialRow:
        """Commit the result of child ``trial_id`` (every metric and its learning curve, together) and its reward
        (None when it failed); a trial is stored once (ValueError if it exists).

        Args:
            status: the row's status when it is not the result's (``stopped``).
            epochs: the epochs it trained; None: its curve's last epoch (None without a curve).
            segmented: its curve was committed segment by segment (:meth:`add_points`) and is kept as it is.
        """
        status = result.status if status is None else status
        if status not in STATUSES:
            raise ValueError(f"trial {trial_id}: status must be one of {list(STATUSES)}, got {status!r}")
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
            status=status,
            error=result.error or "",
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            other_metrics={k: float(v) for k, v in result.metrics.items() if k not in METRIC_COLUMNS},
            role=role,
            epochs=epochs if epochs is not None else (int(result.curve[-1].epoch) if result.curve else None),
            **standard,
        )
        values: list[Any] = [getattr(row, c) for c in _COLUMNS if c != "metrics"]
        values[1] = genotype.to_json()
        values.insert(_COLUMNS.index("metrics"), json.dumps(row.other_metrics, sort_keys=True))
        with self.transaction():
            try:
                self._db.execute(f"INSERT INTO trials ({', '.join(_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_COLUMNS))})", values)
            except sqlite3.IntegrityError:
                raise ValueError(f"trial {trial_id} is already in {self.path}; a child is stored once") from None
            if not segmented:
                # a curve left without its row (rows deleted by hand) is replaced with this child's
                self._db.execute("DELETE FROM curves WHERE trial_id = ?", (row.trial_id,))
                self._insert_points(row.trial_id, result.curve, None)
        return row

    def add_points(self, trial_id: int, points: list[EpochPoint], first_seq: int) -> None:
        """Commit one segment's learning-curve points of a scheduled child, numbered ``first_seq``, ``first_seq + 1``
        ... in the order its scheduler saw them (:meth:`scheduler_reports` replays them)."""
        self._insert_points(int(trial_id), points, first_seq)

    def _insert_points(self, trial_id: int, points: list[EpochPoint], first_seq: int | None) -> None:
        with self.transaction():
            try:
                self._db.executemany(
                    f"INSERT INTO curves (trial_id, {', '.join(_CURVE_COLUMNS)}, seq) VALUES "
                    f"(?, {', '.join('?' * len(_CURVE_COLUMNS))}, ?)",
                    [(trial_id, int(p.epoch), float(p.val_accuracy), _float_or_none(p.train_loss), float(p.seconds),
                      float(p.cpu_seconds), None if first_seq is None else first_seq + i) for i, p in enumerate(points)])
            except sqlite3.IntegrityError:  # the row goes too: the transaction rolls back
                raise ValueError(f"trial {trial_id}: its curve holds an epoch twice "
                                 f"({[p.epoch for p in points]})") from None

    def scheduler_reports(self) -> list[tuple[int, int, float]]:
        """Every ``(trial_id, epoch, val_accuracy)`` reported to the search's scheduler, in the order it saw them."""
        cursor = self._db.execute("SELECT trial_id, epoch, val_accuracy FROM curves WHERE seq IS NOT NULL ORDER BY seq")
        return [(int(t), int(e), float(v)) for t, e, v in cursor.fetchall()]

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
        """The ``k`` successful trials with the highest reward (ties: earlier trial first), the completed ones before
        the stopped ones (see the module's docstring); with ``distinct`` a genotype evaluated several times counts
        once, with its best row."""
        ranked = self._select("WHERE status IN ('ok', 'stopped') AND reward IS NOT NULL "
                              "ORDER BY status = 'stopped', reward DESC, trial_id")
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
            data["genotype"] = genotype_from_json(data["genotype"])
            data["other_metrics"] = json.loads(data.pop("metrics"))
            rows.append(TrialRow(**data))
        return rows

    def curve(self, trial_id: int) -> list[EpochPoint]:
        """The learning curve of ``trial_id`` by epoch (empty for a child that trained no epochs, or before schema 4)."""
        cursor = self._db.execute(f"SELECT {', '.join(_CURVE_COLUMNS)} FROM curves WHERE trial_id = ? ORDER BY epoch",
                                  (int(trial_id),))
        return [EpochPoint(*values) for values in cursor.fetchall()]

    def curves(self) -> dict[int, list[EpochPoint]]:
        """Every stored learning curve by trial id (trials without one are left out), each by epoch."""
        found: dict[int, list[EpochPoint]] = {}
        cursor = self._db.execute(f"SELECT trial_id, {', '.join(_CURVE_COLUMNS)} FROM curves ORDER BY trial_id, epoch")
        for trial_id, *values in cursor.fetchall():
            found.setdefault(trial_id, []).append(EpochPoint(*values))
        return found

    # --- pre-judger scores ------------------------------------------------------------------------
    def add_scores(self, rows: list[ScoreRow]) -> None:
        """Commit one round's scores at once; a round written again (a resumed search re-asks the same
        candidates) replaces its rows, so the table never holds a round twice."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (round, trial_id, candidate_id, genotype, score, value, chosen, audit, "
                "seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.round, r.trial_id, r.candidate_id, r.genotype.to_json(), r.score, _float_or_none(r.value),
                  int(r.chosen), int(r.audit), float(r.seconds)) for r in rows])

    def scores(self) -> list[ScoreRow]:
        """Every stored score, by round and candidate."""
        cursor = self._db.execute("SELECT round, trial_id, candidate_id, genotype, score, value, chosen, audit, "
                                  "seconds FROM scores ORDER BY round, candidate_id, score")
        return [ScoreRow(r[0], r[1], r[2], genotype_from_json(r[3]), r[4], r[5], bool(r[6]), bool(r[7]), r[8])
                for r in cursor.fetchall()]

    # --- the strategy's state (its format: cellsearch.search.strategy_state) --------------------------
    def add_events(self, events: list[tuple]) -> None:
        """Append strategy events (sequence number, kind, trial id, JSON-able data)."""
        self._db.executemany("INSERT INTO strategy_events (seq, kind, trial_id, data) VALUES (?, ?, ?, ?)",
                             [(seq, kind, trial_id, json.dumps(data, separators=(",", ":")))
                              for seq, kind, trial_id, data in events])

    def events(self, since: int = 0) -> list[tuple]:
        """The strategy events from number ``since`` on, in order, as :meth:`add_events` took them."""
        cursor = self._db.execute("SELECT seq, kind, trial_id, data FROM strategy_events WHERE seq >= ? ORDER BY seq",
                                  (since,))
        return [(seq, kind, trial_id, json.loads(data)) for seq, kind, trial_id, data in cursor.fetchall()]

    def drop_events_before(self, seq: int) -> None:
        """Delete the strategy events numbered below ``seq`` (a snapshot that holds them replaces them)."""
        self._db.execute("DELETE FROM strategy_events WHERE seq < ?", (seq,))

    def put_snapshot(self, state: bytes) -> None:
        """Store the strategy's snapshot, replacing the one before."""
        self._db.execute("INSERT OR REPLACE INTO strategy_snapshots (id, state) VALUES (0, ?)", (state,))

    def snapshot(self) -> bytes | None:
        """The strategy's latest snapshot, or None if none was saved."""
        found = self._db.execute("SELECT state FROM strategy_snapshots WHERE id = 0").fetchone()
        return None if found is None else bytes(found[0])

    def clear_strategy_state(self) -> None:
        """Delete the strategy's events and snapshot (before it is rebuilt from the trials)."""
        with self.transaction():
            self._db.execute("DELETE FROM strategy_events")
            self._db.execute("DELETE FROM strategy_snapshots")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TrialStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """Commits on success, rolls back on an exception (the connection runs in autocommit mode); inside
    a transaction already open, it joins it and the outer one commits."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outer = False

    def __enter__(self) -> sqlite3.Connection:
        self._outer = not self._db.in_transaction
        if self._outer:
            self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._outer:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)
