"""A run directory survives a full disk and damaged files: one clear line, nothing finished lost, resumable."""
from __future__ import annotations

import errno
import sqlite3
import time

import pytest
import torch
import yaml

import cellsearch.search.atomic as atomic
from cellsearch.search.atomic import RunDirWriteError, atomic_write
from cellsearch.evaluators import EvalResult, TrainEvaluator
from cellsearch.search.executors import LocalExecutor
from cellsearch.search.loop import BEST_CELL_FILE, SearchLoop
from cellsearch.search.settings import ResumeError
from cellsearch.search.store import TrialStore
from cellsearch.space.genotype import GenotypeError, SearchSpace, load_genotype
from cellsearch.strategies import RandomSearch
from test_executors import CHILD, DATA
from test_train import cli, load_train_module, stored

train = load_train_module()
LANDSCAPE = "evaluator=landscape"  # rewards without training, for tests of what the search does around children


@pytest.fixture
def search(compose, tiny_search):
    """``search(run_dir, budget, *overrides)``: a tiny PPO search run as train.py runs it."""
    def search(run_dir, budget, *extra):
        return train.run(compose(*tiny_search, "search=ppo", f"search.budget={budget}", f"run_dir={run_dir}", *extra))
    return search


def test_atomic_write_leaves_the_old_file_and_no_tmp_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "state.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, lambda tmp: tmp.write_bytes(b"new, half written"))
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_full_disk_damaged_state_and_emptied_store_then_resume(tmp_path, monkeypatch, search):
    run_dir = tmp_path / "run"
    search(run_dir, 2, LANDSCAPE)  # cells scored, not trained: the run directory is what is under test
    first = stored(run_dir)

    # A full disk while the search writes: one line, no temporary file left, the run resumes as it was.
    real_fsync, calls = atomic.os.fsync, []

    def fills_up(fd):
        calls.append(fd)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fills_up)
    with pytest.raises(RunDirWriteError, match=r"No space left on device; the search stopped .* run the same command"):
        search(run_dir, 3, LANDSCAPE)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert not list(run_dir.glob("**/*.tmp")) and stored(run_dir)[:2] == first
    search(run_dir, 3, LANDSCAPE)
    assert [t for t, *_ in stored(run_dir)] == [0, 1, 2] and stored(run_dir)[:2] == first

    # A damaged strategy state: an error naming the store and the way out; rebuild_state replays its children.
    store_path = run_dir / "trials.db"
    with sqlite3.connect(store_path) as db:
        db.execute("UPDATE strategy_snapshots SET state = substr(state, 1, 100)")
    with pytest.raises(ResumeError, match=rf"strategy state in {store_path} .*truncated or damaged.*"
                                          rf"search.rebuild_state=true"):
        search(run_dir, 4, LANDSCAPE)
    with sqlite3.connect(store_path) as db:
        db.execute("UPDATE strategy_snapshots SET state = x''")
    with pytest.raises(ResumeError, match="it is empty"):
        search(run_dir, 4, LANDSCAPE)
    search(run_dir, 4, LANDSCAPE, "search.rebuild_state=true")
    rows = stored(run_dir)
    assert [t for t, *_ in rows] == [0, 1, 2, 3] and rows[:2] == first

    # A corrupt best_cell.yaml is rewritten from the store when the run resumes.
    (run_dir / BEST_CELL_FILE).write_text("normal: [unclosed\n")
    summary = search(run_dir, 4, LANDSCAPE)
    assert load_genotype(run_dir / BEST_CELL_FILE) == summary.best.genotype

    # An emptied trials.db beside an intact strategy state: refused, nothing dropped silently.
    with sqlite3.connect(run_dir / "trials.db") as db:
        db.execute("DELETE FROM trials")
    with pytest.raises(ResumeError, match=r"learned from 4 finished children that .* does not hold"):
        search(run_dir, 5, LANDSCAPE)
    assert stored(run_dir) == []


def set_version(path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


def test_a_missing_emptied_truncated_or_newer_trials_db_ends_in_one_line(tmp_path, search):
    run_dir = tmp_path / "run"
    search(run_dir, 2, LANDSCAPE)
    store_path = run_dir / "trials.db"
    whole = store_path.read_bytes()
    damages = {
        "holds a search (search_settings.yaml) but no trials.db": lambda: store_path.unlink(),
        "is empty (0 bytes)": lambda: store_path.write_bytes(b""),
        "is truncated": lambda: store_path.write_bytes(whole[:len(whole) // 2]),
        "was written by a newer cellsearch": lambda: set_version(store_path, 99),
    }
    for found, damage in damages.items():
        store_path.write_bytes(whole)
        damage()
        with pytest.raises(train.USER_ERRORS) as refused:
            search(run_dir, 3, LANDSCAPE)
        message = train.error_message(refused.value)
        assert found in message and "start a new run directory" in message and "\n" not in message, message
    store_path.write_bytes(whole)
    assert len(stored(run_dir)) == 2


@pytest.mark.slow
def test_pool_search_with_a_child_timeout_ends_with_children_failed_for_time(tmp_path, tiny_search):
    """Children that need minutes are stopped at 3 s and stored as failed; as no child succeeded, the search
    ends with status 1 and says so in one line; resume retrains none."""
    run_dir = tmp_path / "run"
    args = [*tiny_search, "search=ppo", "search.budget=2", "child.epochs=5000", "executor=pool",
            "executor.num_workers=1", "executor.child_timeout=3", f"hydra.run.dir={run_dir}"]
    result = cli(*args, timeout=600)
    no_success = "error: no child succeeded: all 2 failed; the first error (trial 0): timed out after 3 s"
    assert result.returncode == 1 and no_success in result.stderr, result.stdout + result.stderr
    with sqlite3.connect(run_dir / "trials.db") as db:
        rows = db.execute("SELECT status, error FROM trials").fetchall()
    assert len(rows) == 2 and all(status == "failed" and error.startswith("timed out after 3 s")
                                  for status, error in rows), rows
    again = cli(*args, timeout=600)
    assert again.returncode == 1 and "0 trained in this run" in again.stdout + again.stderr


def test_best_cell_and_ranking_agree_on_ties(tmp_path):
    """Equal rewards, finished out of trial order (several workers): best_cell.yaml and the ranking both
    name the earlier trial."""
    strategy = RandomSearch(SearchSpace(num_blocks=2), seed=0)
    proposals = [strategy.ask() for _ in range(3)]
    with TrialStore(tmp_path / "trials.db") as store, LocalExecutor(TrainEvaluator(CHILD, DATA)) as executor:
        loop = SearchLoop(strategy, executor, store, tmp_path, budget=3)
        for p in (proposals[2], proposals[0], proposals[1]):
            loop._record(p.trial_id, p.genotype, EvalResult("ok", {"val_accuracy": 0.5}, 1.0))
        assert loop.best.trial_id == store.best(1)[0].trial_id == 0
    assert yaml.safe_load((tmp_path / BEST_CELL_FILE).read_text())["source"].endswith("trial 0, reward 0.5000")


# --- a fuzz of bad input: one clear line, nothing finished lost ------------------------------------------

FUZZ_KEYS = ("child.channels", "child.epochs", "child.lr", "child.batch_size", "child.limit_train_batches",
             "data.image_size", "data.val_size", "search.budget", "space.num_blocks", "executor.child_timeout",
             "executor.threads_per_worker", "export.top_k", "cell")
FUZZ_VALUES = ("-1", "0", "abc", "[1]", "{a: 1}", "1.5", "''", "null")


@pytest.fixture
def one_line_or_ok(compose, tiny_search):
    """``one_line_or_ok(overrides, run_dir)`` runs a tiny random search with ``overrides``: a refusal must be
    a user error whose message is one non-empty line (returned); None if it ran."""
    def one_line_or_ok(overrides, run_dir):
        try:
            train.run(compose(*tiny_search, "search=random", f"run_dir={run_dir}", *overrides))
        except train.USER_ERRORS as err:
            message = train.error_message(err)
            assert message and "\n" not in message and "Traceback" not in message, (overrides, message)
            return message
        return None
    return one_line_or_ok


@pytest.mark.slow
def test_fuzz_bad_overrides_and_damaged_files(tmp_path, search, one_line_or_ok):
    import random

    rng = random.Random(0)
    refused = 0
    for i in range(8):  # bad overrides on a new run directory
        override = f"{rng.choice(FUZZ_KEYS)}={rng.choice(FUZZ_VALUES)}"
        refused += one_line_or_ok(["search.budget=1", override], tmp_path / f"new{i}") is not None
    assert refused >= 5

    run_dir = tmp_path / "run"
    search(run_dir, 2)
    finished = stored(run_dir)
    damages = {
        "empty": lambda data: b"",
        "truncated": lambda data: data[: rng.randrange(1, max(2, len(data)))],
        "not UTF-8": lambda data: b"\xff\xfe" + data,
    }
    for name in ("search_settings.yaml", BEST_CELL_FILE, "trials.db"):
        path = run_dir / name
        original = path.read_bytes()
        for damage in damages.values():
            path.write_bytes(damage(original))
            for wal in ("trials.db-wal", "trials.db-shm"):
                (run_dir / wal).unlink(missing_ok=True)
            one_line_or_ok(["search=ppo", "search.budget=2"], run_dir)
            path.write_bytes(original)
            assert not list(run_dir.glob("*.tmp"))
    assert stored(run_dir) == finished  # no damaged file lost a finished trial
    (run_dir / BEST_CELL_FILE).write_bytes(b"\xff" * 10)
    summary = search(run_dir, 2)  # still usable; and the damaged best cell is rewritten
    assert load_genotype(run_dir / BEST_CELL_FILE) == summary.best.genotype


def test_genotype_files_refused_by_size_and_encoding(tmp_path):
    big, binary = tmp_path / "big.yaml", tmp_path / "latin1.yaml"
    big.write_bytes(b"# " + b"x" * 50_000_000)
    binary.write_bytes("normal: caf\xe9".encode("latin-1"))
    start = time.monotonic()
    with pytest.raises(GenotypeError, match=rf"{big}: 50,000,002 bytes is far more than any genotype file"):
        load_genotype(big)
    assert time.monotonic() - start < 1
    with pytest.raises(GenotypeError, match=rf"{binary}: not a UTF-8 text file"):
        load_genotype(binary)


def test_truncated_checkpoint_is_one_line_naming_it(tmp_path):
    from cellsearch.weights import load_lightning_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"{path}: not a readable checkpoint \(truncated or not a torch file"):
        load_lightning_checkpoint(path)


@pytest.mark.slow
def test_run_dir_that_is_a_file_on_the_command_line(tmp_path, tiny_search):
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", tmp_path / "file" / "run"):
        result = cli(*tiny_search, f"hydra.run.dir={where}", cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: cannot create or write") and "Traceback" not in result.stderr
