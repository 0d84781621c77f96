"""Issue 24's bad-input cases: each ends in one line that names the setting (or the file) and the way out."""
import errno
import importlib.util
import logging
import shutil
import subprocess

import pytest

from cellsearch.data import ConfigError, as_data_config, describe_dataset
from cellsearch.evaluators.child import ChildConfig, build_trainer, check_config
from cellsearch.search import atomic
from cellsearch.search.atomic import atomic_write, write_failure
from cellsearch.search.front import published_costs
from cellsearch.search.run import build_from_config, run_search
from cellsearch.search.report import no_success_line
from cellsearch.search.settings import RUN_OPTIONS
from test_train import cli, load_train_module

# After conftest's tiny_search: random search, 100 training images and 3 cheap ops, as this file's searches always
# ran (their children are meant to fail, so smaller is quicker and tests the same).
SMALLER = ("search=random", "child.batch_size=50", "data.train_subset=100", "data.val_subset=50",
           "space.ops=[identity,avg_pool_3x3,conv_1x1]")


def test_published_cells_are_priced_at_any_child_size_without_building_them():
    info = describe_dataset(as_data_config({"name": "digits"}))
    params = published_costs("params", ChildConfig(cells_per_stage=1, channels=100_000), info)
    assert params["nasnet_a"] > 1e12  # six terabytes of weights: counted, never allocated
    assert published_costs("params", ChildConfig(cells_per_stage=1, channels=8), info)["nasnet_a"] == 70242


def test_a_search_in_which_no_child_succeeded_says_why(tmp_path, compose, tiny_search):
    summary = run_search(compose(*tiny_search, *SMALLER, "search.budget=1", "child.lr=1e30", f"run_dir={tmp_path}"))
    assert summary.best is None
    line = no_success_line(summary)
    assert line.startswith("no child succeeded: all 1 failed; the first error (trial 0): ") and "\n" not in line
    assert "diverged (lower child.lr" in line


def test_a_strategy_setting_that_is_not_a_number_names_its_key(compose, tiny_search):
    cfg = compose(*tiny_search, *SMALLER, "search.failure_reward=abc")
    node = {k: v for k, v in cfg.search.items() if k not in RUN_OPTIONS}
    with pytest.raises(ConfigError, match=r"^search.failure_reward must be a number, got 'abc' "
                                          r"\(set search.failure_reward=\.\.\.\)$"):
        build_from_config("search", node, space=cfg.space, seed=0)


@pytest.mark.parametrize("override, line", [
    ("data.flip=maybe", "data.flip must be true, false or null, got 'maybe' (set data.flip=...)"),
    ("child.epochs=1.5", "child.epochs must be an integer, got 1.5 (set child.epochs=...)"),
    ("child.lr=fast", "child.lr must be a number, got 'fast' (set child.lr=...)"),
    ("data.train_subset=all", "data.train_subset must be an integer or null, got 'all' (set data.train_subset=...)"),
])
def test_a_value_of_the_wrong_type_names_what_the_key_takes(override, line, compose):
    with pytest.raises(Exception) as info:
        compose(override)
    assert load_train_module().error_message(info.value) == line


def test_an_accelerator_without_its_package_is_one_line():
    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    with pytest.raises(ConfigError, match=r"invalid trainer settings \(accelerator='tpu'.*torch_xla") as info:
        build_trainer(ChildConfig(accelerator="tpu"))
    assert "\n" not in str(info.value)


def test_a_full_disk_names_the_file_not_the_folder(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "best_cell.yaml", lambda tmp: tmp.write_text("x"))
    message = str(write_failure(info.value, tmp_path))
    assert message.startswith(f"cannot write {tmp_path / 'best_cell.yaml'}: No space left on device;")


def test_a_batch_larger_than_the_training_set_warns(caplog):
    data = as_data_config({"name": "digits", "train_subset": 100})
    with caplog.at_level(logging.WARNING):
        check_config(ChildConfig(batch_size=128, accelerator="cpu"), data)
    warnings = [r.getMessage() for r in caplog.records if "child.batch_size" in r.getMessage()]
    assert warnings == ["child.batch_size=128 is larger than the 100 training images of digits: every step sees "
                        "the whole set, once an epoch; set child.batch_size=100 or less"]
    caplog.clear()
    check_config(ChildConfig(batch_size=100, accelerator="cpu"), data)
    assert not [r for r in caplog.records if "child.batch_size" in r.getMessage()]


@pytest.mark.slow
def test_more_cpu_workers_than_cores_warns(caplog):
    from cellsearch.evaluators import TrainEvaluator
    from cellsearch.search.executors import PoolExecutor
    from cellsearch.search.executors.base import owned_cores

    evaluator = TrainEvaluator(ChildConfig(accelerator="cpu"), as_data_config({"name": "digits"}))
    with caplog.at_level(logging.WARNING):
        PoolExecutor(evaluator, num_workers=owned_cores() + 1, threads_per_worker=1).close()
    assert [r.getMessage() for r in caplog.records if "executor.num_workers" in r.getMessage()] == [
        f"executor.num_workers={owned_cores() + 1} CPU workers on {owned_cores()} core(s): they contend, and each "
        f"child takes much longer; use executor.num_workers={owned_cores()} or fewer"]


@pytest.mark.slow
def test_a_search_of_failed_children_exits_1_with_one_line(tmp_path, tiny_search):
    result = cli(*tiny_search, *SMALLER, "search.budget=2", "child.lr=1e30", f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: no child succeeded: all 2 failed; the first error (trial 0): ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_child_too_large_for_memory_fails_and_the_search_ends_in_one_line(tmp_path, tiny_search):
    result = cli(*tiny_search, *SMALLER, "search.budget=1", "child.channels=100000",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: no child succeeded: all 1 failed; the first error (trial 0): ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_an_immutable_run_directory_is_one_line(tmp_path):
    run_dir = tmp_path / "immutable"
    run_dir.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(run_dir)]).returncode:
        pytest.skip("chattr +i is not available here (it needs root and a file system that supports it)")
    try:
        result = cli("experiment=quick_cpu", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)])
    assert result.returncode == 2
    assert result.stderr == (f"error: cannot write the log file {run_dir / 'train.log'} (Operation not permitted); "
                             f"choose a run directory you can write (hydra.run.dir=...)\n")


def test_a_preset_for_another_space_is_one_line(tmp_path, compose):
    """experiment=quick_cpu sets NASNet's space keys; over space=nasrl they are unknown settings, not a traceback."""
    with pytest.raises(Exception) as info:
        run_search(compose("experiment=quick_cpu", "space=nasrl", f"run_dir={tmp_path / 'run'}"))
    assert load_train_module().error_message(info.value) == (
        "space=nasrl: unknown setting(s) ['num_blocks', 'ops']; space=nasrl takes num_layers, filter_heights, "
        "filter_widths, filters, strides")
    assert not (tmp_path / "run" / "trials.db").exists()
