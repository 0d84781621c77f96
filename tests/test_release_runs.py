"""Run directories written by every release that changed the store or the settings (tests/fixtures/README.md)
resume with today's code: by ``resume=<dir>`` to a larger budget, with the rows they held unchanged, and
by rerunning the command that made them."""
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

import cellsearch
from cellsearch.search.run import run_search
from cellsearch.search.store import SCHEMA_VERSION, TrialStore
from cellsearch.search.settings import SETTINGS_FILE, VERSION_FILE, ResumeError, check_settings, search_settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
RELEASE_RUNS = sorted(p.parent for p in FIXTURES.glob(f"*/{SETTINGS_FILE}"))


def copy_run(run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / run.name
    shutil.copytree(run, run_dir)
    return run_dir


def stored_rows(db_path: Path, columns: list[str]) -> list[tuple]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(f"SELECT {', '.join(columns)} FROM trials ORDER BY trial_id").fetchall()
    finally:
        db.close()


def test_every_release_that_changed_the_store_or_the_settings_has_a_fixture():
    assert len(RELEASE_RUNS) >= 7 and all((run / "trials.db").is_file() for run in RELEASE_RUNS)


def stored_curves(db_path: Path) -> dict:
    """The curves a fixture holds as written (none before store schema 4), read without migrating it."""
    db = sqlite3.connect(db_path)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'curves'").fetchone():
            return {}
        curves: dict = {}
        for trial_id, epoch, accuracy in db.execute("SELECT trial_id, epoch, val_accuracy FROM curves"):
            curves.setdefault(trial_id, []).append((epoch, accuracy))
        return {k: sorted(v) for k, v in curves.items()}
    finally:
        db.close()


def fixture_contents(run_dir: Path) -> tuple[list[str], list[tuple], dict]:
    """The trials columns, rows and curves of a copied fixture, read before today's code opens it."""
    db = sqlite3.connect(run_dir / "trials.db")
    columns = [row[1] for row in db.execute("PRAGMA table_info(trials)")]
    db.close()
    return columns, stored_rows(run_dir / "trials.db", columns), stored_curves(run_dir / "trials.db")


def curves_of(store: TrialStore) -> dict:
    return {k: sorted((p.epoch, p.val_accuracy) for p in v) for k, v in store.curves().items()}


@pytest.mark.parametrize("run", RELEASE_RUNS, ids=lambda p: p.name)
def test_a_release_runs_store_migrates_with_its_rows_and_curves_unchanged(run, tmp_path):
    """Stores from before schema 4 migrate with an empty curves table; later ones keep their curves."""
    run_dir = copy_run(run, tmp_path)
    columns, before, curves = fixture_contents(run_dir)
    with TrialStore(run_dir / "trials.db") as store:
        assert curves_of(store) == curves
    assert stored_rows(run_dir / "trials.db", columns) == before
    assert sqlite3.connect(run_dir / "trials.db").execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize("run", RELEASE_RUNS, ids=lambda p: p.name)
def test_rerunning_the_command_that_made_a_release_run_keeps_its_settings(run, tmp_path, compose):
    """The way the issue found it: the same command on today's code ("child.ema_decay: '<unset>' -> 0.0").
    A default changed since (PPO's lr) is a changed setting and refused; a setting added since never is."""
    run_dir = copy_run(run, tmp_path)
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    cfg = compose(*[o for o in overrides if not o.startswith("hydra.")], f"run_dir={run_dir}")
    try:
        check_settings(run_dir, search_settings(cfg))
    except ResumeError as err:
        assert "'<unset>'" not in str(err)
        return
    assert (run_dir / VERSION_FILE).read_text().strip() == cellsearch.__version__


@pytest.mark.slow
@pytest.mark.parametrize("run", RELEASE_RUNS, ids=lambda p: p.name)
def test_a_release_run_resumes_to_a_larger_budget_with_its_rows_unchanged(run, tmp_path, resume):
    run_dir = copy_run(run, tmp_path)
    columns, before, curves = fixture_contents(run_dir)
    summary = run_search(resume(run_dir, f"search.budget={len(before) + 1}"))
    assert summary.num_trials == len(before) + 1 and summary.num_trained == 1
    after = stored_rows(run_dir / "trials.db", columns)
    assert after[:len(before)] == before and after[-1][columns.index("trial_id")] == len(before)
    with TrialStore(run_dir / "trials.db") as store:  # the old children's curves as they were; the new one has one
        new = [len(before)] if after[-1][columns.index("status")] == "ok" else []
        assert sorted(store.curves()) == sorted([*curves, *new])
        assert {k: v for k, v in curves_of(store).items() if k in curves} == curves
    assert (run_dir / VERSION_FILE).read_text().strip() == cellsearch.__version__
