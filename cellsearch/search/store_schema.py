"""The trial store's tables (SQL) and how a store of each older schema is brought up to today's.

:class:`~cellsearch.search.store.TrialStore` creates a new file with schema 1's ``trials`` table and runs
every migration after it, so a new store and an upgraded one are made by the same statements. The
schema versions are listed in :mod:`cellsearch.search.store`.
"""
from __future__ import annotations

SCHEMA_VERSION = 5

TRIALS_V1 = """
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
_STRATEGY_EVENTS = """
CREATE TABLE IF NOT EXISTS strategy_events (
    seq      INTEGER PRIMARY KEY,  -- the strategy's event number, from 0
    kind     TEXT    NOT NULL,     -- ask, tell, withdraw or add_trial
    trial_id INTEGER NOT NULL,
    data     TEXT                  -- JSON: an ask's actions, a tell's reward, an added trial's genotype and reward
)
"""
_STRATEGY_SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS strategy_snapshots (
    id       INTEGER PRIMARY KEY CHECK (id = 0),  -- one row: the latest snapshot replaces the one before
    state    BLOB    NOT NULL                     -- torch.save of the strategy's state without its trials
)
"""
# The trials table as schema 5 has it (what schema 1's table and migration 1 made, with ``stopped`` and ``epochs``).
_TRIALS_V5 = """
CREATE TABLE trials_v5 (
    trial_id     INTEGER NOT NULL UNIQUE,
    genotype     TEXT    NOT NULL,
    reward       REAL,
    val_accuracy REAL,
    params       INTEGER,
    mult_adds    INTEGER,
    seconds      REAL    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('ok', 'failed', 'stopped')),
    error        TEXT    NOT NULL DEFAULT '',
    created_at   TEXT    NOT NULL,
    train_loss   REAL,
    latency_ms   REAL,
    metrics      TEXT    NOT NULL DEFAULT '{}',
    role         TEXT    NOT NULL DEFAULT 'search' CHECK (role IN ('search', 'audit')),
    epochs       INTEGER             -- epochs the child trained; NULL where unknown
)
"""
_V4_COLUMNS = ("trial_id, genotype, reward, val_accuracy, params, mult_adds, seconds, status, error, created_at, "
               "train_loss, latency_ms, metrics, role")
_CURVES = """
CREATE TABLE IF NOT EXISTS curves (
    trial_id     INTEGER NOT NULL,
    epoch        INTEGER NOT NULL,  -- epochs trained: 1 after the first
    val_accuracy REAL    NOT NULL,
    train_loss   REAL,              -- that epoch's mean training loss; NULL when not logged
    seconds      REAL    NOT NULL,  -- wall seconds since the child's training began
    cpu_seconds  REAL    NOT NULL,  -- CPU seconds of the training process since then
    PRIMARY KEY (trial_id, epoch)
)
"""
# MIGRATIONS[v] takes a schema-v database to schema v + 1 (run in one transaction with the version bump).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE trials ADD COLUMN train_loss REAL",
        "ALTER TABLE trials ADD COLUMN latency_ms REAL",
        "ALTER TABLE trials ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE trials ADD COLUMN role TEXT NOT NULL DEFAULT 'search' CHECK (role IN ('search', 'audit'))",
        _SCORES),
    2: (_STRATEGY_EVENTS, _STRATEGY_SNAPSHOTS),  # then the state files beside trials.db are imported
    3: (_CURVES,),
    4: (_TRIALS_V5,
        f"INSERT INTO trials_v5 (rowid, {_V4_COLUMNS}) SELECT rowid, {_V4_COLUMNS} FROM trials",
        "DROP TABLE trials",
        "ALTER TABLE trials_v5 RENAME TO trials",
        "ALTER TABLE curves ADD COLUMN seq INTEGER"),  # the scheduler's report order; NULL: not scheduled
}
