"""The tabular benchmark: the shipped table loads, lookups are exact or nearest as documented, bad
input fails in one line, and a search with evaluator=table runs through train.py in seconds."""
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cellsearch.validation import ConfigError
from cellsearch.evaluators.surrogate import RidgeSurrogate
from cellsearch.evaluators.table import CellTable, TableEvaluator, TableRow, canonical_actions, ground_truth, load_table
from cellsearch.search.run import build_from_config
from cellsearch.space.genotype import Block, Cell, Genotype, SearchSpace, load_genotype
from cellsearch.space.spaces import space_from_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A table of 40 random cells of a 2-op space with made-up accuracies (lookup logic only)."""
    space = SearchSpace(ops=("identity", "conv_3x3"), num_blocks=2)
    rng = random.Random(0)
    rows, seen = [], set()
    while len(rows) < 40:
        actions = canonical_actions(space.sample(rng), space)
        if actions not in seen:
            seen.add(actions)
            rows.append(TableRow(actions, (rng.random(), rng.random()), (0, 1), rng.randrange(1000), 7, 1.5))
    path = CellTable("small", space, rows).save(tmp_path_factory.mktemp("table") / "small.json.gz")
    return path, load_table(path)


def swapped(genotype: Genotype) -> Genotype:
    """The same cell with each block's two (input, op) pairs written in the other order."""
    def swap(cell: Cell) -> Cell:
        return Cell(tuple(Block(b.inputs[::-1], b.ops[::-1], b.combine) for b in cell.blocks), cell.concat)
    return Genotype(swap(genotype.normal), swap(genotype.reduce))


def test_shipped_table_loads_and_covers_the_preset_space(compose):
    table = load_table("testbed")
    assert len(table) >= 40
    preset = compose("experiment=testbed_table", "run_dir=.")
    assert table.space == space_from_settings(preset.space)
    accuracies = [r.mean_accuracy for r in table.rows]
    assert 0.1 < min(accuracies) < max(accuracies) < 1.0
    assert all(r.params > 0 and r.mult_adds > 0 and r.train_seconds > 0 for r in table.rows)
    assert table.data["name"] == preset.data.name == "testbed"
    recipe = ("cells_per_stage", "channels", "epochs", "batch_size", "lr")  # the preset's child made the rows
    assert {k: table.child[k] for k in recipe} == {k: preset.child[k] for k in recipe}


def test_a_table_cell_returns_its_stored_metrics_in_any_pair_order(small_table):
    path, table = small_table
    evaluator = TableEvaluator(table=str(path), lookup="exact")
    evaluator.check()
    row = table.rows[3]
    genotype = table.space.decode(row.actions)
    for g in (genotype, swapped(genotype)):
        result = evaluator.evaluate(g)
        assert result.ok
        assert result.metrics["val_accuracy"] == pytest.approx(np.mean(row.val_accuracy))
        assert result.metrics["params"] == row.params and result.metrics["table_distance"] == 0


def test_exact_lookup_of_an_unknown_cell_fails_and_nearest_averages_the_closest_rows(small_table):
    path, table = small_table
    rng = random.Random(1)
    while True:
        genotype = table.space.sample(rng)
        if table.exact(genotype) is None:
            break
    missed = TableEvaluator(table=str(path), lookup="exact").evaluate(genotype)
    assert not missed.ok and "not in table 'small'" in missed.error and "lookup=nearest" in missed.error
    result = TableEvaluator(table=str(path)).evaluate(genotype)
    query = np.array(canonical_actions(genotype, table.space))
    distances = [int((np.array(r.actions) != query).sum()) for r in table.rows]
    closest = [r for r, d in zip(table.rows, distances) if d == min(distances)]
    assert result.ok and result.metrics["table_distance"] == min(distances) > 0
    assert result.metrics["val_accuracy"] == pytest.approx(np.mean([r.mean_accuracy for r in closest]))
    far = TableEvaluator(table=str(path), max_distance=min(distances) - 1).evaluate(genotype)
    assert not far.ok and "max_distance" in far.error


def test_cells_outside_the_table_space_and_bad_settings_fail_in_one_line(small_table):
    path, _ = small_table
    result = TableEvaluator(table=str(path)).evaluate(load_genotype("nasnet_a"))
    assert not result.ok and "table 'small' covers ops ['identity', 'conv_3x3']" in result.error
    shipped = r"\['testbed', 'testbed_curves', 'testbed_hierarchical', 'testbed_nasrl'\]"
    with pytest.raises(ConfigError, match=f"not found.*shipped tables: {shipped}"):
        TableEvaluator(table="no_such_table").check()
    with pytest.raises(ConfigError, match="unknown evaluator.lookup 'closest'"):
        TableEvaluator(lookup="closest")
    bad = path.with_name("bad.json.gz")
    bad.write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="cannot read the table"):
        TableEvaluator(table=str(bad)).check()


def test_evaluator_table_config_builds_the_table_evaluator(tmp_path, compose):
    cfg = compose("experiment=testbed_table", f"run_dir={tmp_path}")
    evaluator = build_from_config("evaluator", cfg.evaluator)
    assert isinstance(evaluator, TableEvaluator) and evaluator.lookup == "nearest"
    with pytest.raises(ConfigError, match="max_distance"):
        build_from_config("evaluator", compose("evaluator=table", "evaluator.max_distance=-1", "run_dir=.").evaluator)


def test_a_search_on_the_table_runs_through_train_py_in_seconds(tmp_path, compose):
    from test_train import load_train_module

    train = load_train_module()
    start = time.perf_counter()
    summary = train.run(compose("experiment=testbed_table", "search=evolution", "search.budget=60",
                               "search.population_size=10", "search.sample_size=3", f"run_dir={tmp_path}"))
    assert time.perf_counter() - start < 60  # 100 lookups; the rest is the loop and the store
    assert summary.num_trials == 60 and summary.best.reward > 0.1
    table = load_table("testbed")
    assert summary.best.reward <= max(r.mean_accuracy for r in table.rows) + 1e-9


@pytest.mark.slow
def test_table_builder_composes_its_settings_in_a_fresh_interpreter():
    """The builder composes experiment=testbed_table on its own (the schemas the presets extend are
    registered by the script, not by whatever a test session imported first)."""
    code = "from benchmarks.build_testbed_table import table_settings; space, child, data = table_settings(); print(data['name'], space.num_blocks)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["testbed", "2"]


def test_surrogate_recovers_an_additive_table_and_predicts_held_out_cells():
    """Rows whose accuracy is a sum of per-decision effects: the ridge model's leave-one-out predictions
    match them, and the surrogate lookup scores a cell in the table's space that no row holds."""
    space = SearchSpace(ops=("identity", "conv_3x3", "max_pool_3x3"), num_blocks=2)
    num_choices = tuple(space.layout.num_choices_list)
    rng = np.random.default_rng(0)
    effects = [rng.normal(0, 0.02, n) for n in num_choices]
    sample = random.Random(1)
    cells = {canonical_actions(space.sample(sample), space) for _ in range(300)}
    actions = np.array(sorted(cells))
    accuracy = 0.5 + sum(effects[j][actions[:, j]] for j in range(len(num_choices)))
    held_out = RidgeSurrogate.leave_one_out(actions, accuracy, num_choices, alpha=0.01)
    assert np.abs(held_out - accuracy).max() < 1e-3
    rows = [TableRow(tuple(int(a) for a in act), (float(acc),), (0,), 100, 7, 1.0) for act, acc in zip(actions, accuracy)]
    table = CellTable("additive", space, rows)
    while (new := canonical_actions(space.sample(sample), space)) in cells:
        pass
    truth = 0.5 + sum(effects[j][a] for j, a in enumerate(new))
    predicted = table.predict(space.decode(new))
    assert abs(predicted["val_accuracy"] - truth) < 0.01 and predicted["params"] == pytest.approx(100)


def test_surrogate_predicts_held_out_shipped_cells_better_than_the_nearest_rule():
    table = load_table("testbed")
    actions = np.array([r.actions for r in table.rows])
    accuracy = np.array([r.mean_accuracy for r in table.rows])
    surrogate = RidgeSurrogate.leave_one_out(actions, accuracy, tuple(table.space.layout.num_choices_list))
    nearest = []
    for i in range(len(actions)):
        distance = (actions != actions[i]).sum(1)
        distance[i] = actions.shape[1] + 1
        nearest.append(accuracy[distance == distance.min()].mean())
    surrogate_error, nearest_error = np.abs(surrogate - accuracy).mean(), np.abs(np.array(nearest) - accuracy).mean()
    assert surrogate_error < 0.8 * nearest_error, (surrogate_error, nearest_error)


def test_surrogate_lookup_through_the_evaluator(small_table):
    path, table = small_table
    evaluator = TableEvaluator(str(path), lookup="surrogate", max_distance=0)
    row = table.rows[0]
    result = evaluator.evaluate(table.space.decode(row.actions))
    assert result.ok and set(result.metrics) == set(TableEvaluator.metrics)
    assert result.metrics["table_distance"] == 0 and 0 < result.metrics["val_accuracy"] < 1
    held = {r.actions for r in table.rows}
    rng = random.Random(2)
    while canonical_actions(cell := table.space.sample(rng), table.space) in held:
        pass
    far = evaluator.evaluate(cell)
    assert not far.ok and "more than evaluator.max_distance=0" in far.error
    assert TableEvaluator(str(path), lookup="surrogate").evaluate(cell).ok
    outside = evaluator.evaluate(load_genotype("nasnet_a"))
    assert not outside.ok and "table 'small' covers ops" in outside.error


def test_ground_truth_is_the_cells_with_three_seeds():
    cells = ground_truth("testbed")
    table = load_table("testbed")
    assert len(cells) == sum(len(r.val_accuracy) >= 3 for r in table.rows) == 60
    for genotype, row in cells:
        assert len(row.val_accuracy) >= 3 and table.exact(genotype) is row
    means = [row.mean_accuracy for _, row in cells]
    assert min(means) == pytest.approx(0.3329, abs=1e-3) and max(means) == pytest.approx(0.6123, abs=1e-3)
    assert len(ground_truth("testbed", min_seeds=1)) == len(table)
    with pytest.raises(ConfigError, match="min_seeds"):
        ground_truth("testbed", min_seeds=0)
