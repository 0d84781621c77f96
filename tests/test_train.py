"""train.py and conf/: every option composes, tiny end-to-end runs on CPU, kill -9 and resume, sweeps,
and one-line errors for bad input.

Children are tiny (N=1, F=4, one epoch on 300 digits, 2 blocks of cheap ops) so a search of a few
children takes seconds on a CPU; the subprocess tests are marked slow.
"""
import importlib
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf

from cellsearch.evaluators.child import as_child_config
from cellsearch.data import as_data_config
from cellsearch.data.splits import load_splits
from cellsearch.space.genotype import SearchSpace, load_genotype
from cellsearch.space.spaces import space_from_settings
from cellsearch.search.loop import BEST_CELL_FILE, BEST_CELL_PLOT, REWARDS_PLOT
from cellsearch.search.run import build_from_config
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.search.store import TrialStore

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def load_train_module():
    """What train.py and the ``cellsearch`` command run: ``run``, ``task_value``, ``error_message``, ..."""
    return importlib.import_module("cellsearch.cli")


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cli(*args, cwd=ROOT, timeout=300, **popen):
    """``python train.py args``; the CPU only, one torch thread (the tests share two cores)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, str(ROOT / "train.py"), *args]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **popen)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def stored(run_dir):
    with TrialStore(Path(run_dir) / "trials.db") as store:
        return [(r.trial_id, r.genotype.to_json(), r.reward, r.created_at) for r in store.rows()]


# --- configuration -------------------------------------------------------------------------------------

def test_the_defaults_are_the_documented_ones(compose):
    cfg = compose()
    assert cfg.search._target_.endswith(".PPO") and cfg.search.lr == 0.01 and cfg.search.update_every == 5
    assert cfg.data.name == "cifar10" and cfg.task.name == "search" and cfg.seed == 0
    assert cfg.executor._target_.endswith("LocalExecutor")
    assert space_from_settings(cfg.space) == SearchSpace()  # the full NASNet space


@pytest.mark.parametrize("name", [n for n in options("search") if n != "darts"])  # darts: tests/test_oneshot.py
def test_every_search_option_builds_its_strategy(name, compose):
    cfg = compose(f"search={name}")
    strategy = build_from_config("search", {k: v for k, v in cfg.search.items() if k not in RUN_OPTIONS},
                                 space=dict(cfg.space), seed=3)
    assert strategy.name == name and cfg.search.budget >= 1 and strategy.space == space_from_settings(cfg.space)
    proposal = strategy.ask()
    assert proposal.trial_id == 0 and strategy.pending() == [proposal]
    strategy.space_with_blocks(len(proposal.genotype.normal.blocks)).validate(proposal.genotype)


def test_every_data_child_and_executor_option_is_valid(tmp_path, compose):
    for name in options("data"):
        root = [f"data.root={tmp_path}"] if "\nroot:" in (CONF / "data" / f"{name}.yaml").read_text() else []
        assert as_data_config(compose(f"data={name}", *root).data).name == name
    for name in options("child"):
        node = compose(f"child={name}", f"run_dir={tmp_path}").child
        child, settings = as_child_config(node), {k: v for k, v in node.items() if k != "_target_"}
        assert {k: getattr(child, k) for k in settings} == settings  # every composed setting reaches the dataclass
    for name in options("executor"):
        node = dict(compose(f"executor={name}").executor)
        target = get_method(node.pop("_target_"))
        inspect.signature(target).bind(evaluator=None, seed=0, **node)  # every key is a parameter


def test_presets_set_only_what_differs_from_the_schema(compose):
    """Each field's default lives in its dataclass; a preset that repeats one would be a second source."""
    import yaml

    from cellsearch.config import SCHEMAS

    for group, schema in SCHEMAS.items():
        defaults = schema.__dataclass_fields__
        assert set(compose()[group]) == set(defaults)  # the composed config (--cfg job) still has every key
        for path in (CONF / group).glob("*.yaml"):
            preset = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}
            assert set(preset) <= set(defaults), path
            repeated = [k for k, v in preset.items()
                        if k != "name" and v == defaults[k].default and "${" not in str(v)]  # name: which preset
            assert not repeated, f"{path.name} repeats the schema's default for {repeated}"


@pytest.mark.parametrize("override, key", [("child.epochs=ten", "child.epochs"), ("data.flip=maybe", "data.flip"),
                                           ("data.val_size=[1]", "data.val_size")])
def test_a_wrong_type_fails_at_composition_naming_the_key(override, key, compose):
    with pytest.raises(Exception) as info:
        compose(override)
    assert f"full_key: {key}" in str(info.value.__cause__)


def test_task_and_experiment_presets_compose_as_documented(tmp_path, compose):
    retrain = compose("task=retrain", "cell=nasnet_a", f"run_dir={tmp_path}")
    assert (retrain.child.cells_per_stage, retrain.child.channels, retrain.child.epochs) == (6, 32, 600)
    assert retrain.child.auxiliary_weight > 0 and retrain.child.drop_path_rate > 0 and retrain.data.cutout == 16
    assert retrain.data.val_size == 0 and retrain.task.name == "retrain"
    paper = compose("experiment=nasnet_paper")
    assert paper.search.budget == 20000 and paper.child.epochs == 20 and paper.child.cells_per_stage == 2
    assert paper.data.name == "cifar10" and paper.search._target_.endswith(".PPO")
    assert paper.search.lr == 0.00035 and paper.search.update_every == 20 and paper.search.tanh_constant is None
    # the task decides the child: the paper preset still retrains the full-size network
    assert compose("experiment=nasnet_paper", "task=retrain").child.epochs == 600
    # and the command line decides over both
    assert compose("experiment=nasnet_paper", "task=retrain", "child.epochs=3").child.epochs == 3
    quick = compose("experiment=quick_cpu", "search=random")
    assert quick.data.name == "digits" and quick.child.accelerator == "cpu" and quick.search.budget == 6


# --- end to end, in this process ------------------------------------------------------------------------

@pytest.mark.slow
def test_search_export_and_load_through_timm(tmp_path, monkeypatch, compose, tiny_search):
    monkeypatch.chdir(tmp_path)  # export.dir=cells is relative to the working directory
    train = load_train_module()
    run_dir = tmp_path / "run"
    summary = train.run(compose(*tiny_search, "search=random", "search.budget=3", f"run_dir={run_dir}"))
    assert summary.num_trials == 3
    assert train.task_value(summary) == max(reward for _, _, reward, _ in stored(run_dir))  # what sweepers optimise
    for name in (BEST_CELL_FILE, BEST_CELL_PLOT, REWARDS_PLOT, "trials.db"):
        assert (run_dir / name).is_file(), name
    assert load_genotype(run_dir / BEST_CELL_FILE) == summary.best.genotype

    export_dir = tmp_path / "export"
    paths = train.run(compose(*tiny_search, "task=export", f"export.run={run_dir}", "export.name=tiny_cell",
                              "export.top_k=2", f"run_dir={export_dir}"))
    assert paths == [export_dir / "tiny_cell.yaml", export_dir / "tiny_cell_2.yaml"]  # into the export's run dir
    exported = load_genotype(paths[0])
    assert exported == summary.best.genotype and exported.name == "tiny_cell"
    assert "trial" in exported.source and "reward" in exported.source
    model = timm.create_model("cellnet_imagenet", genotype=str(paths[0]), cells_per_stage=1, channels=8,
                              num_classes=10)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="export would overwrite"):  # no silent overwrite
        train.run(compose(*tiny_search, "task=export", f"export.run={run_dir}", "export.name=tiny_cell",
                          f"run_dir={export_dir}"))
    train.run(compose(*tiny_search, "task=export", f"export.run={run_dir}", "export.name=tiny_cell",
                      "export.dir=cells", f"run_dir={tmp_path / 'export_2'}"))
    assert load_genotype("tiny_cell") == exported  # found by name in ./cells
    assert timm.create_model("cellnet_cifar", genotype="tiny_cell", cells_per_stage=1, channels=4).genotype == exported


@pytest.mark.slow
def test_retrain_exports_weights_that_timm_loads(tmp_path, compose, tiny_search):
    train = load_train_module()
    cell = tmp_path / "cheap.yaml"
    cell.write_text("normal:\n  blocks:\n    - {inputs: [0, 1], ops: [conv_3x3, identity], combine: add}\n"
                    "reduce:\n  blocks:\n    - {inputs: [0, 1], ops: [max_pool_3x3, conv_1x1], combine: concat}\n")
    cfg = compose(*tiny_search, "task=retrain", f"cell={cell}", "child.cells_per_stage=1", "child.channels=4",
                 "child.epochs=1", "child.accelerator=cpu", "child.devices=1", "child.enable_progress_bar=false",
                 "data.train_subset=300", "data.cutout=4", f"run_dir={tmp_path}")
    assert cfg.child.auxiliary_weight > 0 and cfg.data.cutout > 0  # the retrain recipe, at a tiny size
    result = train.run(cfg)
    correct = result.test_accuracy * len(load_splits(as_data_config(cfg.data)).test)  # a whole number of images
    assert correct == pytest.approx(round(correct)) and train.task_value(result) == result.test_accuracy
    weights = result.weights
    assert (weights / "model.safetensors").is_file()
    model = timm.create_model(f"local-dir:{weights}", pretrained=True).eval()
    assert model.genotype == load_genotype(cell) and model.num_classes == 10
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert model.pretrained_cfg["input_size"] == (1, 8, 8)  # what it was trained on, for timm's data config
    assert len(model.pretrained_cfg["mean"]) == 1


# --- the command line -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_search_then_resume(tmp_path, tiny_search):
    """SIGKILL the search once two children are stored; rerunning with the same run directory ends with
    exactly the budget, keeps the stored children as they were, and trains none of them again."""
    run_dir, budget = tmp_path / "run", 6
    args = [*tiny_search, "search=ppo", f"search.budget={budget}", "search.update_every=2", f"hydra.run.dir={run_dir}"]
    process = cli(*args, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "trials.db").exists():
            with sqlite3.connect(run_dir / "trials.db") as db:
                try:
                    if db.execute("SELECT COUNT(*) FROM trials").fetchone()[0] >= 2:
                        break
                except sqlite3.OperationalError:  # the file exists, its table not yet
                    pass
        time.sleep(0.2)
    assert process.poll() is None, f"the search ended before it could be killed:\n{process.stdout.read()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = stored(run_dir)
    assert 2 <= len(done_before) < budget

    result = cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    after = stored(run_dir)
    assert sorted(t for t, *_ in after) == list(range(budget))  # exactly the budget, each trial once
    assert after[:len(done_before)] == done_before  # stored children untouched (same rows, same times)
    log = (run_dir / "train.log").read_text()
    resumed = log.split(f"resuming {run_dir}: {len(done_before)} of {budget} children done")
    assert len(resumed) == 2, log
    trained_again = [int(line.split("| trial ")[1].split()[0])
                     for line in resumed[1].splitlines() if "| trial " in line]
    assert sorted(trained_again) == sorted(set(range(budget)) - {t for t, *_ in done_before})  # none twice
    assert (run_dir / BEST_CELL_PLOT).is_file() and (run_dir / REWARDS_PLOT).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_sweep_gives_each_job_its_own_run_directory(tmp_path, launcher, tiny_search):
    sweep_dir = tmp_path / "sweep"
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    result = cli("-m", *tiny_search, "search=random,evolution", "seed=0,1", "search.budget=1",
                 f"hydra.sweep.dir={sweep_dir}", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        seen.add((("search=random" in overrides), ("seed=1" in overrides)))
        assert len(stored(job)) == 1 and (job / BEST_CELL_FILE).is_file()
    assert len(seen) == 4


@pytest.mark.slow
def test_optuna_sweeper_maximises_the_returned_best_reward(tmp_path, tiny_search):
    """``main`` returns the search's best reward, so Hydra's Optuna sweeper can tune child.lr on it."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "sweep"
    result = cli("-m", *tiny_search, "search=random", "search.budget=1", "hydra/sweeper=optuna",
                 "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
                 "child.lr=interval(0.01,0.5)", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stdout + result.stderr
    rewards = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        lr = float(OmegaConf.load(job / ".hydra" / "config.yaml").child.lr)
        rewards[lr] = max(reward for _, _, reward, _ in stored(job))
    assert len(rewards) == 3 and all(0.01 <= lr <= 0.5 for lr in rewards)  # three distinct trials
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(rewards.values()))  # the values Optuna read are the rewards
    assert rewards[float(best.best_params["child.lr"])] == pytest.approx(best.best_value)


BAD_INPUT = {
    "unknown group option": (["search=foo"], "unknown option search=foo; choose one of: darts, evolution, ppo"),
    "unknown key": (["child.foo=1"], "unknown config key 'child.foo'"),
    "unparsable override": (["seed=[1"], "cannot read the override 'seed=[1'"),

    "missing dataset": (["data.root=nowhere", "data.download=false"], "cifar10 not found"),
    "missing value": (["task=retrain", "cell=???"], "cell has no value"),
    "no image folder": (["data=imagefolder"], "/train with one sub-folder of images per class"),
    "invalid cell file": (["task=retrain", "cell=bad.yaml"], "bad.yaml: normal cell, block 0 field 'inputs'"),
    "unknown cell": (["task=retrain", "cell=no_such_cell"], "no genotype named 'no_such_cell'"),
    "unknown objective": (["objective=speed"], "unknown option objective=speed; choose one of: accuracy, constrained"),
    "resume nothing": (["resume=nowhere"], "resume=nowhere: no search to resume there"),
}
BAD_INPUT_TO_THE_TINY_SEARCH = {  # each added to the tiny search's overrides, which alone are valid
    "budget 0": (["search.budget=0"], "search.budget must be an integer >= 1, got 0 (set search.budget=...)"),
    "negative channels": (["child.channels=-4"],
                          "child.channels must be an integer >= 1, got -4 (set child.channels=...)"),
    "negative lr": (["child.lr=-0.1"], "child.lr must be a number > 0, got -0.1 (set child.lr=...)"),
    "zero lr": (["child.lr=0"], "child.lr must be a number > 0, got 0"),
    "negative seed": (["seed=-1"], "seed must be an integer >= 0, got -1 (set seed=...)"),
    "flip maybe": (["data.flip=maybe"], "data.flip must be true, false or null, got 'maybe' (set data.flip=...)"),
    "text for a number": (["child.epochs=ten"], "child.epochs must be an integer, got 'ten'"),
    "bad strategy setting": (["search.lr=-1"], "search.lr must be a number > 0, got -1 (set search.lr=...)"),
    "unknown strategy setting": (["+search.foo=1"], "search.foo is not a setting of PPO; it takes ['baseline_decay'"),
    "unknown score": (["prejudge=naswot", "prejudge.score=jacob"],
                      "unknown prejudge.score 'jacob'; choose one of ['naswot', 'synflow'"),
    "no candidates": (["prejudge=snip", "prejudge.candidates=0"], "prejudge.candidates must be an integer >= 1"),
    "target 0": (["objective=constrained", "objective.target=0"], "objective.target must be a positive"),
    "unmeasured metric": (["objective=pareto", "objective.metric=latency_ms"],
                          "objective=pareto needs the metric(s) ['latency_ms']"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted({**BAD_INPUT, **BAD_INPUT_TO_THE_TINY_SEARCH}))
def test_bad_input_exits_with_one_clear_line(tmp_path, case, tiny_search):
    (tmp_path / "bad.yaml").write_text("normal:\n  blocks:\n    - {inputs: [0, 5], ops: [conv_3x3, identity]}\n"
                                       "reduce:\n  blocks:\n    - {inputs: [0, 1], ops: [conv_3x3, identity]}\n")
    if case in BAD_INPUT:
        args, message = BAD_INPUT[case]
    else:
        args, message = BAD_INPUT_TO_THE_TINY_SEARCH[case]
        args = [*tiny_search, *args]
    result = cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
