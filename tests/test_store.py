"""The SQLite trial store: one row per child, committed at once, readable by another connection."""
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from cellsearch.evaluators import EpochPoint, EvalResult
from cellsearch.search.store import SCHEMA_VERSION, ScoreRow, TrialStore
from cellsearch.space.genotype import SearchSpace


class Outcome:
    """An evaluation's result and its reward, as the search loop hands them to the store."""

    def __init__(self, status: str, reward: float | None, val_accuracy: float | None = None,
                 params: int | None = 1000, mult_adds: int | None = 20000, error: str = "") -> None:
        metrics = {"val_accuracy": val_accuracy, "params": params, "mult_adds": mult_adds}
        self.result = EvalResult(status, {k: v for k, v in metrics.items() if v is not None}, 1.5, error)
        self.reward = reward


def add(store: TrialStore, trial_id: int, genotype, outcome: Outcome):
    return store.add(trial_id, genotype, outcome.result, outcome.reward)


def genotypes(n: int, seed: int = 0):
    rng, space = random.Random(seed), SearchSpace(num_blocks=2)
    return [space.sample(rng) for _ in range(n)]


def test_rows_round_trip_and_are_visible_to_another_connection(tmp_path):
    path = tmp_path / "trials.db"
    g = genotypes(3)
    with TrialStore(path) as store:
        add(store, 0, g[0], Outcome("ok", 0.5, 0.5))
        add(store, 2, g[2], Outcome("failed", None, params=None, mult_adds=None, error="ChildDiverged: loss is NaN"))
        add(store, 1, g[1], Outcome("ok", 0.75, 0.75))
        # committed at once: a second connection (another process, sqlite3 CLI) sees every row
        other = sqlite3.connect(path)
        assert other.execute("SELECT trial_id, status FROM trials ORDER BY rowid").fetchall() == [
            (0, "ok"), (2, "failed"), (1, "ok")]
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
    with TrialStore(path) as store:  # reopen: same content, finish order kept
        rows = store.rows()
        assert [r.trial_id for r in rows] == [0, 2, 1]
        assert rows[0].genotype == g[0] and rows[0].reward == 0.5 and rows[0].params == 1000
        assert rows[1].status == "failed" and rows[1].reward is None and "NaN" in rows[1].error
        assert len(store) == 3 and 1 in store and 5 not in store
        assert store.get(5) is None and store.get(1).genotype == g[1]


def test_best_ranks_successful_children_and_merges_repeated_cells(tmp_path):
    g = genotypes(3)
    with TrialStore(tmp_path / "trials.db") as store:
        add(store, 0, g[0], Outcome("ok", 0.6))
        add(store, 1, g[1], Outcome("ok", 0.9))
        add(store, 2, g[1], Outcome("ok", 0.8))  # the same cell again, lower reward
        add(store, 3, g[2], Outcome("failed", None))
        add(store, 4, g[2], Outcome("ok", 0.6))  # ties: the earlier trial ranks first
        assert [r.trial_id for r in store.best(5)] == [1, 0, 4]
        assert [r.trial_id for r in store.best(2, distinct=False)] == [1, 2]


def test_a_child_is_stored_once(tmp_path):
    g = genotypes(1)[0]
    with TrialStore(tmp_path / "trials.db") as store:
        add(store, 7, g, Outcome("ok", 0.5))
        with pytest.raises(ValueError, match="trial 7 is already"):
            add(store, 7, g, Outcome("ok", 0.6))
        with pytest.raises(ValueError, match="status"):
            add(store, 8, g, Outcome("running", None))
        assert len(store) == 1 and store.get(7).reward == 0.5


def stored_run(path, children: int = 200) -> bytes:
    """A closed store of ``children`` rows; returns its bytes."""
    with TrialStore(path) as store:
        for i, g in enumerate(genotypes(children)):
            add(store, i, g, Outcome("ok", 0.5, 0.5))
    return path.read_bytes()


def refusal(path) -> str:
    """The one line TrialStore refuses ``path`` with."""
    with pytest.raises(ValueError) as info:
        TrialStore(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_foreign_emptied_truncated_or_newer_files_are_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    assert "not a cellsearch trial store" in refusal(junk)

    path = tmp_path / "trials.db"
    whole = stored_run(path)
    path.write_bytes(b"")
    assert "is empty (0 bytes)" in refusal(path) and path.stat().st_size == 0  # left as it was, not made anew
    for cut in (len(whole) // 2, len(whole) - 1, 60):
        path.write_bytes(whole[:cut])
        assert f"is truncated ({cut:,}" in refusal(path) and "restore it from a backup" in refusal(path)
    path.write_bytes(whole)
    assert len(TrialStore(path)) == 200  # restored: whole again

    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    message = refusal(newer)
    assert f"newer cellsearch (trial store schema {SCHEMA_VERSION + 1}" in message
    assert message.endswith("resume it with that newer cellsearch (pip install -U cellsearch), or start a new run "
                            "directory")


def test_a_search_directory_without_its_store_is_refused(tmp_path):
    from cellsearch.search.run import open_run_store

    (tmp_path / "search_settings.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=r"holds a search \(search_settings.yaml\) but no trials.db, which kept its "
                                         r"children and strategy state: restore trials.db from a backup"):
        open_run_store(tmp_path)
    assert not (tmp_path / "trials.db").exists()
    with open_run_store(tmp_path / "new") as store:  # a new directory: its store is made
        assert len(store) == 0


def test_writes_in_a_transaction_commit_together(tmp_path):
    g = genotypes(2)
    with TrialStore(tmp_path / "trials.db") as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                add(store, 0, g[0], Outcome("ok", 0.5))
                with store.transaction():  # joins the outer one
                    store.add_events([(0, "tell", 0, 0.5)])
                raise RuntimeError("the process dies")
        assert len(store) == 0 and store.events() == []
        with store.transaction():
            add(store, 0, g[0], Outcome("ok", 0.5))
            store.add_events([(0, "tell", 0, 0.5)])
        assert len(store) == 1 and store.events() == [(0, "tell", 0, 0.5)]


SCHEMA1_RUN = Path(__file__).parent / "fixtures" / "schema1_run"
V1_COLUMNS = "trial_id, genotype, reward, val_accuracy, params, mult_adds, seconds, status, error, created_at"


def test_a_schema_1_store_migrates_with_its_rows_unchanged(tmp_path):
    path = tmp_path / "trials.db"
    shutil.copy(SCHEMA1_RUN / "trials.db", path)
    before = sqlite3.connect(path).execute(f"SELECT {V1_COLUMNS} FROM trials ORDER BY rowid").fetchall()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1 and len(before) == 3
    with TrialStore(path) as store:
        assert [r.trial_id for r in store.rows()] == [0, 1, 2] and store.rows()[0].role == "search"
        add(store, 3, genotypes(1)[0], Outcome("ok", 0.5, 0.5))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert db.execute(f"SELECT {V1_COLUMNS} FROM trials ORDER BY rowid LIMIT 3").fetchall() == before
    assert db.execute("SELECT latency_ms, metrics, role FROM trials WHERE trial_id = 0").fetchone() == (
        None, "{}", "search")
    with TrialStore(path) as store:  # opening a current store again changes nothing
        assert len(store) == 4 and store.curves() == {}  # the old trials have no curve


CURVE = [EpochPoint(1, 0.25, 2.0, 1.5, 2.75), EpochPoint(2, 0.5, None, 3.0, 5.5)]


def test_a_childs_curve_round_trips_and_commits_with_its_row_or_not_at_all(tmp_path):
    path = tmp_path / "trials.db"
    g = genotypes(3)
    with TrialStore(path) as store:
        store.add(0, g[0], EvalResult("ok", {"val_accuracy": 0.5}, 4.0, curve=CURVE), 0.5)
        add(store, 1, g[1], Outcome("ok", 0.75, 0.75))  # an evaluator that does not train: no curve
        twice = [CURVE[0], CURVE[0]]
        with pytest.raises(ValueError, match=r"trial 2: its curve holds an epoch twice \(\[1, 1\]\)"):
            store.add(2, g[2], EvalResult("ok", {"val_accuracy": 0.25}, 4.0, curve=twice), 0.25)
        assert 2 not in store  # the row went with its curve
        with pytest.raises(ValueError, match="already in"):
            store.add(0, g[0], EvalResult("ok", {"val_accuracy": 0.5}, 4.0, curve=CURVE[:1]), 0.5)
    with TrialStore(path) as store:
        assert store.curve(0) == CURVE and store.curve(1) == [] and store.curves() == {0: CURVE}
    assert sqlite3.connect(path).execute("SELECT epoch, val_accuracy, train_loss, seconds, cpu_seconds FROM curves "
                                         "WHERE trial_id = 0 ORDER BY epoch").fetchall() == [
        (1, 0.25, 2.0, 1.5, 2.75), (2, 0.5, None, 3.0, 5.5)]


def test_every_metric_is_kept_and_queryable_with_sql(tmp_path):
    path = tmp_path / "trials.db"
    g = genotypes(1)[0]
    metrics = {"val_accuracy": 0.5, "train_loss": 1.25, "params": 1000, "mult_adds": 20000, "latency_ms": 3.5,
               "naswot": 12.0}
    with TrialStore(path) as store:
        row = store.add(0, g, EvalResult("ok", metrics, 2.0), 0.4, role="audit")
        assert row.metrics == metrics and row.other_metrics == {"naswot": 12.0}
        assert store.get(0).metrics == metrics and store.get(0).role == "audit"
        with pytest.raises(ValueError, match="role"):
            store.add(1, g, EvalResult("ok", metrics, 2.0), 0.4, role="bogus")
    db = sqlite3.connect(path)
    assert db.execute("SELECT trial_id, reward, val_accuracy, params, mult_adds, latency_ms FROM trials").fetchall() \
        == [(0, 0.4, 0.5, 1000, 20000, 3.5)]
    assert db.execute("SELECT json_extract(metrics, '$.naswot') FROM trials").fetchone()[0] == 12.0


def test_scores_round_trip_and_a_repeated_round_replaces_itself(tmp_path):
    g = genotypes(2)
    rows = [ScoreRow(0, 5, 5, g[0], "naswot", 3.0, True, False, 0.1),
            ScoreRow(0, 5, 6, g[1], "naswot", None, False, True, 0.1)]
    with TrialStore(tmp_path / "trials.db") as store:
        store.add_scores(rows)
        store.add_scores(rows)  # a resumed search writes the same round again
        assert store.scores() == rows


SCHEMA4_RUN = Path(__file__).parent / "fixtures" / "run_0.2.0"  # written at store schema 4


def test_a_schema_4_store_migrates_to_5_with_its_rows_and_curves_unchanged(tmp_path):
    path = tmp_path / "trials.db"
    shutil.copy(SCHEMA4_RUN / "trials.db", path)
    old = sqlite3.connect(path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 4
    columns = V1_COLUMNS + ", train_loss, latency_ms, metrics, role"
    before = old.execute(f"SELECT rowid, {columns} FROM trials ORDER BY rowid").fetchall()
    curves = old.execute("SELECT * FROM curves ORDER BY trial_id, epoch").fetchall()
    old.close()
    with TrialStore(path) as store:
        assert [r.epochs for r in store.rows()] == [None] * len(before) and store.scheduler_reports() == []
        g = genotypes(2)
        stopped = store.add(90, g[0], EvalResult("ok", {"val_accuracy": 0.4}, 1.0, curve=CURVE[:1]), 0.4,
                            status="stopped")
        assert stopped.stopped and stopped.ok and stopped.epochs == 1
        store.add(91, g[1], EvalResult("ok", {"val_accuracy": 0.3}, 1.0), 0.3)
        assert store.best(1)[0].trial_id == 91 and not stopped.beats(store.best(1)[0])  # completed ranks first
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert db.execute(f"SELECT rowid, {columns} FROM trials ORDER BY rowid LIMIT {len(before)}").fetchall() == before
    assert db.execute("SELECT trial_id, epoch, val_accuracy, train_loss, seconds, cpu_seconds FROM curves "
                      "WHERE trial_id < 90 ORDER BY trial_id, epoch").fetchall() == curves
    with pytest.raises(sqlite3.IntegrityError):  # the rebuilt table keeps its CHECK on the status
        db.execute("UPDATE trials SET status = 'paused' WHERE trial_id = 90")
