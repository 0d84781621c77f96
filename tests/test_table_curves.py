"""Tables with learning curves (format 2) and fidelity in the lookup evaluators: a table round-trips with its
curves, format-1 tables still load, a lookup under a Fidelity returns the curve's prefix and a checkpoint to
go on along the same run, and bad fidelity input fails in one line."""
import gzip
import json
import random

import numpy as np
import pytest

from cellsearch.evaluators.base import Fidelity
from cellsearch.evaluators.table import CellTable, TableEvaluator, TableRow, canonical_actions, load_table, table_path
from cellsearch.search.run import build_from_config
from cellsearch.space.genotype import SearchSpace
from cellsearch.space.spaces import space_from_settings
from cellsearch.validation import ConfigError

EPOCHS = 4


def made_up_row(space: SearchSpace, rng: random.Random, seeds=(0, 1, 2)) -> TableRow:
    """A cell with rising made-up curves, one per seed, whose last points are its accuracies."""
    actions = canonical_actions(space.sample(rng), space)
    curves = tuple(tuple(sorted(round(rng.random(), 6) for _ in range(EPOCHS))) for _ in seeds)
    cpu = tuple(tuple(round(1.5 * (e + 1) + 0.1 * s, 2) for e in range(EPOCHS)) for s in seeds)
    return TableRow(actions, tuple(c[-1] for c in curves), tuple(seeds), rng.randrange(1, 1000), 7,
                    float(np.mean([c[-1] for c in cpu])), "random", curves, cpu)


@pytest.fixture(scope="module")
def curves_table(tmp_path_factory):
    """A table of 30 distinct random cells of a 2-op space with curves of 4 epochs."""
    space = SearchSpace(ops=("identity", "conv_3x3"), num_blocks=2)
    rng, rows, seen = random.Random(0), [], set()
    while len(rows) < 30:
        row = made_up_row(space, rng)
        if row.actions not in seen:
            seen.add(row.actions)
            rows.append(row)
    table = CellTable("curvy", space, rows, child={"epochs": EPOCHS, "val_every_n_epochs": 1})
    return table.save(tmp_path_factory.mktemp("table") / "curvy.json.gz")


def test_format_2_round_trips_with_its_curves_and_format_1_still_loads(curves_table, tmp_path):
    data = json.loads(gzip.decompress(curves_table.read_bytes()))
    assert data["format"] == 2 and data["columns"][-2:] == ["curves", "curve_cpu_seconds"]
    table = load_table(curves_table)
    assert table.curve_epochs == EPOCHS
    again = CellTable.from_dict(table.to_dict())
    assert again.rows == table.rows and again.save(tmp_path / "again.json.gz").read_bytes() == curves_table.read_bytes()
    shipped = load_table("testbed")  # format 1: no curves, no fidelity
    assert shipped.curve_epochs is None and all(not r.curves for r in shipped.rows)
    saved = CellTable.from_dict(shipped.to_dict()).save(tmp_path / "testbed.json.gz")  # written as format 1, unchanged
    assert saved.read_bytes() == table_path("testbed").read_bytes()
    assert TableEvaluator("testbed").max_epochs is None and TableEvaluator(str(curves_table)).max_epochs == EPOCHS
    row = next(r for r in shipped.rows if len(r.seeds) == 3)  # runs=one reads one seed of a format-1 table too
    one = TableEvaluator("testbed", lookup="exact", runs="one").evaluate(shipped.space.decode(row.actions), 5, 0)
    assert one.metrics["val_accuracy"] in row.val_accuracy and not one.curve


def test_a_table_with_curves_for_some_rows_only_is_refused(curves_table):
    data = json.loads(gzip.decompress(curves_table.read_bytes()))
    data["rows"][3][7] = data["rows"][3][7][:2]  # two curves for three seeds
    with pytest.raises(ValueError, match="one curve of child.epochs=4 accuracies and one of CPU seconds per seed"):
        CellTable.from_dict(data)


def test_fidelity_returns_the_curve_prefix_and_continues_from_the_checkpoint(curves_table):
    table = load_table(curves_table)
    row = table.rows[5]
    genotype = table.space.decode(row.actions)
    mean = TableEvaluator(str(curves_table), lookup="exact")
    whole = mean.evaluate(genotype, trial_id=7, seed=1)
    assert whole.metrics["val_accuracy"] == pytest.approx(row.mean_accuracy)
    assert [p.val_accuracy for p in whole.curve] == pytest.approx(list(row.mean_curve)) and whole.checkpoint is None
    first = mean.evaluate(genotype, 7, 1, fidelity=Fidelity(epochs=2))
    assert [p.epoch for p in first.curve] == [1, 2] and first.metrics["val_accuracy"] == pytest.approx(row.mean_curve[1])
    assert first.metrics["train_seconds"] == pytest.approx(np.mean([c[1] for c in row.curve_cpu_seconds]))
    assert first.checkpoint is not None and len(first.checkpoint) < 200  # a few bytes saying where it is
    rest = mean.evaluate(genotype, 7, 1, fidelity=Fidelity(epochs=EPOCHS, checkpoint=first.checkpoint))
    assert [p.val_accuracy for p in rest.curve] == [p.val_accuracy for p in whole.curve] and rest.checkpoint is None
    # runs=one: one training run, the same for the same (seed, trial) and kept by the checkpoint
    one = TableEvaluator(str(curves_table), lookup="exact", runs="one")
    picked = {tuple(p.val_accuracy for p in one.evaluate(genotype, t, 0).curve) for t in range(20)}
    assert picked <= set(row.curves) and len(picked) > 1
    head = one.evaluate(genotype, 3, 0, fidelity=Fidelity(1))
    tail = one.evaluate(genotype, 3, 0, fidelity=Fidelity(EPOCHS, head.checkpoint))
    assert tuple(p.val_accuracy for p in tail.curve) == tuple(p.val_accuracy for p in one.evaluate(genotype, 3, 0).curve)
    assert tail.metrics["val_accuracy"] in row.val_accuracy


def test_surrogate_lookup_predicts_a_curve_per_epoch(curves_table):
    table = load_table(curves_table)
    genotype = table.space.decode(table.rows[0].actions)
    result = TableEvaluator(str(curves_table), lookup="surrogate").evaluate(genotype, fidelity=Fidelity(3))
    assert result.ok and [p.epoch for p in result.curve] == [1, 2, 3] and result.checkpoint is not None
    assert result.metrics["val_accuracy"] == result.curve[-1].val_accuracy


def test_bad_fidelity_input_fails_in_one_line(curves_table):
    table = load_table(curves_table)
    genotype = table.space.decode(table.rows[0].actions)
    evaluator = TableEvaluator(str(curves_table))
    with pytest.raises(ConfigError, match=r"^Fidelity\(epochs=5\) is outside table 'curvy''s curves of 1..4 epochs"):
        evaluator.evaluate(genotype, fidelity=Fidelity(5))
    with pytest.raises(ConfigError, match=r"^table 'testbed' has no learning curves.*with curves: \['testbed_curves'\]"):
        TableEvaluator("testbed").evaluate(load_table("testbed").space.sample(random.Random(0)), fidelity=Fidelity(1))
    other = table.space.decode(table.rows[1].actions)
    checkpoint = evaluator.evaluate(other, fidelity=Fidelity(2)).checkpoint
    with pytest.raises(ConfigError, match="is not one table 'curvy' returned for this cell"):
        evaluator.evaluate(genotype, fidelity=Fidelity(3, checkpoint))
    with pytest.raises(ConfigError, match=r"does not go past its checkpoint's epoch 2"):
        evaluator.evaluate(other, fidelity=Fidelity(2, checkpoint))
    with pytest.raises(ConfigError, match="unknown evaluator.runs 'median'"):
        TableEvaluator(runs="median")


def test_shipped_curves_table_and_its_preset(compose):
    table = load_table("testbed_curves")
    preset = compose("experiment=testbed_curves", "run_dir=.")
    assert table.space == space_from_settings(preset.space) == load_table("testbed").space
    assert table.curve_epochs == preset.child.epochs == 9 and table.child["val_every_n_epochs"] == 1
    recipe = ("cells_per_stage", "channels", "batch_size", "lr")
    assert {k: table.child[k] for k in recipe} == {k: preset.child[k] for k in recipe}
    assert all(len(r.seeds) == len(r.curves) and r.curves[0][-1] == pytest.approx(r.val_accuracy[0], abs=1e-6)
               for r in table.rows)
    evaluator = build_from_config("evaluator", preset.evaluator)
    assert isinstance(evaluator, TableEvaluator) and evaluator.runs == "one" and evaluator.max_epochs == 9
