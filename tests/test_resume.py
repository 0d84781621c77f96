"""resume=<run dir>: a search resumes with the settings stored in its directory, schema-1 ones included."""
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from cellsearch.search.run import run_search
from cellsearch.search.settings import ResumeError, check_settings, fill_added_settings, search_settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA1_RUN = ROOT / "tests" / "fixtures" / "schema1_run"
V1_COLUMNS = "trial_id, genotype, reward, val_accuracy, params, mult_adds, seconds, status, error, created_at"


@pytest.mark.slow
def test_a_schema_1_run_resumes_to_a_larger_budget_with_its_rows_unchanged(tmp_path, resume):
    run_dir = tmp_path / "run"
    shutil.copytree(SCHEMA1_RUN, run_dir)
    before = sqlite3.connect(run_dir / "trials.db").execute(f"SELECT {V1_COLUMNS} FROM trials").fetchall()
    cfg = resume(run_dir, "search.budget=4")
    # the stored settings, not the defaults (PPO on CIFAR-10), with the new budget and the current module paths
    assert cfg.search._target_.endswith("RegularizedEvolution") and cfg.data.name == "digits"
    assert cfg.child.epochs == 1 and cfg.space.num_blocks == 3 and cfg.search.budget == 4
    assert cfg.executor._target_ == "cellsearch.search.executors.LocalExecutor" and cfg.run_dir == str(run_dir)
    summary = run_search(cfg)
    assert summary.num_trials == 4 and summary.num_trained == 1
    db = sqlite3.connect(run_dir / "trials.db")
    assert db.execute(f"SELECT {V1_COLUMNS} FROM trials ORDER BY rowid LIMIT 3").fetchall() == before
    new = db.execute("SELECT trial_id, val_accuracy, params, mult_adds, train_loss, role FROM trials "
                     "WHERE trial_id = 3").fetchone()
    assert new[0] == 3 and new[5] == "search"
    assert new[1] * 100 == pytest.approx(round(new[1] * 100)) and new[4] > 0  # of data.val_subset=100 images; a loss
    # its strategy state was imported into trials.db; the old file is kept, renamed, and no longer read
    assert db.execute("SELECT COUNT(*) FROM strategy_events WHERE kind = 'tell'").fetchone()[0] >= 1
    assert not (run_dir / "strategy_state.pt").exists() and (run_dir / "strategy_state.pt.migrated").is_file()
    # the settings file is left as the old release wrote it; the whole configuration is kept beside it
    assert "evaluator" not in yaml.safe_load((run_dir / "search_settings.yaml").read_text())
    assert yaml.safe_load((run_dir / "run_config.yaml").read_text())["search"]["budget"] == 4
    assert resume(run_dir).search.budget == 4  # next time, the budget it was last given


def test_a_changed_setting_is_refused_and_an_added_one_at_its_old_value_is_not(tmp_path, resume):
    run_dir = tmp_path / "run"
    shutil.copytree(SCHEMA1_RUN, run_dir)
    with pytest.raises(ResumeError, match=r"child.epochs: 1 -> 2"):
        run_search(resume(run_dir, "child.epochs=2"))
    with pytest.raises(ResumeError, match="objective"):
        run_search(resume(run_dir, "objective=constrained"))
    settings = yaml.safe_load((run_dir / "search_settings.yaml").read_text())
    check_settings(run_dir, {**settings, "evaluator": {"_target_": "cellsearch.evaluators.TrainEvaluator",
                                                       "latency": False}, "prejudge": None,
                             "objective": {"_target_": "cellsearch.search.objectives.AccuracyObjective"}})
    with pytest.raises(ResumeError, match="evaluator.latency: False -> True"):
        check_settings(run_dir, {**settings, "evaluator": {"_target_": "cellsearch.evaluators.TrainEvaluator",
                                                           "latency": True}})


def test_added_settings_fill_only_the_option_they_belong_to():
    assert fill_added_settings({"seed": 0})["evaluator.latency"] is False
    table = {"evaluator._target_": "cellsearch.evaluators.TableEvaluator", "evaluator.path": "t.csv"}
    assert "evaluator.latency" not in fill_added_settings(table)


def test_resume_of_a_directory_without_a_search_is_refused(tmp_path, resume):
    with pytest.raises(ValueError, match="no search to resume"):
        resume(tmp_path)


def test_a_ppo_run_from_before_imitation_resumes_without_it(tmp_path, resume):
    """0.1.0's PPO had no imitation term and no advantage scaling: resumed, it still has neither."""
    run_dir = tmp_path / "run"
    shutil.copytree(SCHEMA1_RUN, run_dir)
    ppo = yaml.safe_load((ROOT / "tests" / "fixtures" / "schema1_search_options.yaml").read_text())["ppo"]
    for name in ("search_settings.yaml", ".hydra/config.yaml"):  # as if the 0.1.0 run had used search=ppo
        stored = yaml.safe_load((run_dir / name).read_text())
        stored["search"] = {**ppo, **({"budget": 3} if name.startswith(".hydra") else {})}
        (run_dir / name).write_text(yaml.safe_dump(stored))
    cfg = resume(run_dir, "search.budget=4")
    assert cfg.search.imitation_weight == 0.0 and cfg.search.normalize_advantages is False
    assert cfg.search.lr == 0.00035  # its own settings, not today's defaults
    check_settings(run_dir, search_settings(cfg))
