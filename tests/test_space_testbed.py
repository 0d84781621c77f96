"""The testbed for the other search spaces: the presets compose with their default strategies, and a table
of another space's genotypes round-trips through its file and answers lookups as NASNet's tables do."""
from __future__ import annotations

import random

import numpy as np
import pytest

from cellsearch.evaluators.table import CellTable, TableEvaluator, TableRow, canonical_actions, load_table
from cellsearch.search.run import build_from_config
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.space.spaces import space_from_settings
from cellsearch.strategies import STRATEGIES as STRATEGY_CLASSES
from cellsearch.validation import ConfigError

PRESETS = {"testbed_nasrl": ("nasrl", "ppo"), "testbed_hierarchical": ("hierarchical", "evolution")}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_pick_the_testbed_and_the_space_whose_landscapes_score_it(compose, preset):
    cfg = compose(f"experiment={preset}", "run_dir=.")
    name, strategy = PRESETS[preset]
    assert cfg.data.name == "testbed" and cfg.child.channels == 8 and cfg.child.epochs == 3
    assert cfg.search._target_.rsplit(".", 1)[-1] == STRATEGY_CLASSES[strategy].__name__
    space = space_from_settings(cfg.space)
    assert space.name == name
    landscape = build_from_config("evaluator", compose(f"experiment={preset}", "evaluator=landscape",
                                                       "evaluator.family=structure", "run_dir=.").evaluator,
                                  space=space)
    landscape.check()
    assert landscape.evaluate(space.sample(random.Random(0))).ok


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_runs_its_default_strategy_over_its_space(compose, preset):
    cfg = compose(f"experiment={preset}", "run_dir=.")
    space = space_from_settings(cfg.space)
    search = build_from_config("search", {k: v for k, v in cfg.search.items() if k not in RUN_OPTIONS},
                               space=space, seed=0)
    for _ in range(3):
        proposal = search.ask()
        space.validate(proposal.genotype)
        search.tell(proposal.trial_id, 0.5)
    assert search.num_asked == 3


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_table_covers_its_preset_and_a_search_over_it_runs(compose, preset, tmp_path):
    from test_train import load_train_module

    table = load_table(preset)
    cfg = compose(f"experiment={preset}", "run_dir=.")
    assert table.space == space_from_settings(cfg.space) and len(table) >= 40
    recipe = ("cells_per_stage", "channels", "epochs", "batch_size", "lr")  # the preset's child made the rows
    assert {k: table.child[k] for k in recipe} == {k: cfg.child[k] for k in recipe}
    assert table.data["name"] == "testbed" and all(len(r.seeds) >= 2 and r.train_seconds > 0 for r in table.rows)
    summary = load_train_module().run(compose(f"experiment={preset}", "evaluator=table", f"evaluator.table={preset}",
                                              "search.budget=10", "live.tensorboard=false", f"run_dir={tmp_path}"))
    assert summary.num_trials == 10
    assert 0 < summary.best.reward <= max(r.mean_accuracy for r in table.rows) + 1e-9


@pytest.fixture(scope="module", params=list(PRESETS))
def small_table(request, compose, tmp_path_factory):
    """A table of 30 random genotypes of a preset's space with made-up accuracies (file and lookup logic)."""
    space = space_from_settings(compose(f"experiment={request.param}", "run_dir=.").space)
    rng = random.Random(0)
    rows, seen = [], set()
    while len(rows) < 30:
        actions = canonical_actions(space.sample(rng), space)
        if actions not in seen:
            seen.add(actions)
            rows.append(TableRow(actions, (rng.random(), rng.random()), (0, 1), rng.randrange(1000), 7, 1.5))
    path = CellTable("small", space, rows).save(tmp_path_factory.mktemp("table") / "small.json.gz")
    return path, space, rows


def test_a_table_of_another_space_round_trips_and_answers_lookups(small_table):
    path, space, rows = small_table
    table = load_table(path)
    assert table.space == space and [r.actions for r in table.rows] == [r.actions for r in rows]
    assert CellTable.from_dict(table.to_dict()).to_dict() == table.to_dict()
    genotype = space.decode(rows[4].actions)
    exact = TableEvaluator(str(path), lookup="exact", space=space).evaluate(genotype)
    assert exact.ok and exact.metrics["val_accuracy"] == pytest.approx(np.mean(rows[4].val_accuracy))
    rng = random.Random(5)
    other = next(g for g in iter(lambda: space.sample(rng), None) if table.exact(g) is None)
    nearest = TableEvaluator(str(path), space=space).evaluate(other)
    assert nearest.ok and nearest.metrics["table_distance"] > 0
    surrogate = TableEvaluator(str(path), lookup="surrogate", space=space).evaluate(other)
    assert surrogate.ok and 0 < surrogate.metrics["val_accuracy"] < 1


def test_a_table_refuses_another_space_in_one_line(small_table):
    path, space, _ = small_table
    with pytest.raises(ConfigError, match=f"holds genotypes of space={space.name}, this search's space is "
                                          f"space=nasnet; use a table of that space"):
        TableEvaluator(str(path), space={"name": "nasnet"}).check()
    with pytest.raises(ConfigError, match=f"'testbed' holds genotypes of space=nasnet, this search's space is "
                                          f"space={space.name}"):
        TableEvaluator("testbed", space=space).check()
    nasnet_genotype = space_from_settings({"name": "nasnet"}).sample(random.Random(0))
    failed = TableEvaluator(str(path)).evaluate(nasnet_genotype)
    assert not failed.ok and f"table 'small' covers space={space.name}" in failed.error
    assert f"experiment=testbed_{space.name}" in failed.error and "\n" not in failed.error


def test_the_table_builder_packs_rows_of_another_space(compose, tmp_path):
    from benchmark_modules import load_benchmark

    build = load_benchmark("build_testbed_table")
    cfg = compose("experiment=testbed_nasrl", "run_dir=.")
    space = space_from_settings(cfg.space)
    cells = build.random_cells(space, 3, seed=0)
    assert len({tuple(c) for c in cells}) == 3
    rows = tmp_path / "rows.jsonl"
    for k, actions in enumerate(cells):
        for seed in (0, 1):
            build._append(rows, {"actions": actions, "origin": "random", "seed": seed, "status": "ok",
                                 "val_accuracy": 0.3 + 0.1 * k + 0.02 * seed, "params": 100, "mult_adds": 1000,
                                 "train_seconds": 2.0 + seed, "wall_seconds": 3.0, "error": ""})
    table = build.pack(rows, tmp_path / "t.json.gz", space, dict(cfg.child), dict(cfg.data), "3 random", "t")
    loaded = load_table(tmp_path / "t.json.gz")
    assert loaded.space == space and [r.actions for r in loaded.rows] == [tuple(c) for c in cells]
    assert [r.mean_accuracy for r in loaded.rows] == pytest.approx([0.31, 0.41, 0.51])
    summary = build.summarise(table)
    assert "3 genotypes of space=nasrl; seed-mean val accuracy 0.310 to 0.510" in summary
    assert "CPU seconds per child (one thread): median 2.5" in summary and "std over seeds 0.014" in summary
