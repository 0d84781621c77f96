"""Everything after the strategy works for every search space (space=nasnet|nasrl|hierarchical): the trial store,
best_cell.yaml and exports keep any space's genotype, the predictor encodes it, the live view describes it, the
executors can send it to another process; and the tools built for NASNet cells (DARTS, the one-shot supernet, NASNet's tables) refuse another space in one line.

A space whose genotype module has not landed yet is skipped, naming the module."""
import importlib
import pickle
import random

import pytest

from cellsearch.evaluators.base import EvalResult
from cellsearch.evaluators.predictor import LearnedPredictor, encode
from cellsearch.search.events import SearchStart
from cellsearch.search.export import export_cells
from cellsearch.search.live import trial_hparams
from cellsearch.search.loop import write_best_cell
from cellsearch.search.store import TRIALS_FILE, TrialStore
from cellsearch.space.genotype import load_genotype
from cellsearch.space.spaces import SPACE_CLASSES, genotype_from_json, space_from_settings
from cellsearch.validation import ConfigError

OTHER_SPACES = [name for name in SPACE_CLASSES if name != "nasnet"]


def _space(name: str):
    """The space ``name`` with its default settings (skipped, naming the module, while it has not landed)."""
    pytest.importorskip(SPACE_CLASSES[name].split(":")[0], reason=f"space={name}'s genotype module has not landed")
    return space_from_settings({"name": name})


def _genotypes(space, count: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(count)]


def _store_with(run_dir, genotypes) -> list:
    with TrialStore(run_dir / TRIALS_FILE) as store:
        for i, genotype in enumerate(genotypes):
            store.add(i, genotype, EvalResult("ok", {"val_accuracy": 0.5 + 0.01 * i}, 1.0), 0.5 + 0.01 * i)
        return store.rows()


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_store_and_best_cell_keep_any_space(name, tmp_path):
    genotypes = _genotypes(_space(name), 3)
    rows = _store_with(tmp_path, genotypes)
    assert [r.genotype for r in sorted(rows, key=lambda r: r.trial_id)] == genotypes
    assert all(type(r.genotype) is type(genotypes[0]) for r in rows)
    path = write_best_cell(rows[-1], tmp_path)
    loaded = load_genotype(path)
    assert loaded == rows[-1].genotype and type(loaded).space == name
    assert f"trial {rows[-1].trial_id}" in loaded.source


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_export_writes_any_space_yaml(name, tmp_path):
    genotypes = _genotypes(_space(name), 4, seed=1)
    _store_with(tmp_path, genotypes)
    paths = export_cells(tmp_path, "found", top_k=2, out_dir=tmp_path / "cells")
    assert [p.name for p in paths] == ["found.yaml", "found_2.yaml"]
    best = load_genotype(paths[0])
    assert best == genotypes[3] and best.name == "found" and "rank 1 of 2" in best.source
    assert load_genotype(paths[1]) == genotypes[2]


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_genotypes_cross_process_boundaries(name):
    """The pool and Ray executors pickle genotypes; the trial store keeps their JSON."""
    for genotype in _genotypes(_space(name), 3, seed=2):
        assert pickle.loads(pickle.dumps(genotype)) == genotype
        assert genotype_from_json(genotype.to_json()) == genotype


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_predictor_encodes_and_learns_any_space(name):
    space = _space(name)
    genotypes = _genotypes(space, 12, seed=3)
    features = encode(space, genotypes)
    onehot = sum(space.layout.num_choices_list)
    # NASNet adds its op counts per cell type; another space is encoded by its flat decisions alone.
    assert features.shape == (12, onehot + (2 * len(space.ops) if name == "nasnet" else 0))
    assert (features[:, :onehot].sum(axis=1) == space.layout.size).all()
    predictor = LearnedPredictor(members=2, hidden=8, epochs=20, min_children=10, seed=0)
    assert predictor.prepare(space, [(g, 0.1 * (i % 5)) for i, g in enumerate(genotypes)]) == ""
    scored = predictor(_genotypes(space, 1, seed=4)[0])
    assert scored.value is not None and scored.error == ""


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_live_view_hyperparameters_fit_the_space(name, tmp_path):
    space = _space(name)
    rows = _store_with(tmp_path, _genotypes(space, 2, seed=5))
    start = SearchStart(tmp_path, 2, "random", "accuracy", None, space, ())
    hparams = trial_hparams(rows[0], start)
    assert hparams["strategy"] == "random" and hparams["trial_id"] == rows[0].trial_id
    if name == "nasnet":
        assert sum(v for k, v in hparams.items() if k.startswith("ops/")) == 4 * space.num_blocks
    else:
        decisions = {k: v for k, v in hparams.items() if k.startswith("decision/")}
        assert list(decisions.values()) == space.encode(rows[0].genotype)
        assert not any(k.startswith(("ops/", "combine/")) for k in hparams)


def _one_line_refusal(name: str, build) -> str:
    with pytest.raises(ConfigError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and f"space={name}" in message
    return message


@pytest.mark.parametrize("name", OTHER_SPACES)
def test_nasnet_only_tools_refuse_another_space_in_one_line(name):
    space = _space(name)
    from cellsearch.evaluators.oneshot import OneShotEvaluator
    from cellsearch.evaluators.table import TableEvaluator
    from cellsearch.search.darts import check_relaxable

    assert _one_line_refusal(name, lambda: check_relaxable(space)).startswith("DARTS relaxes NASNet cells")
    assert "supernet" in _one_line_refusal(
        name, lambda: OneShotEvaluator(child={}, data={"name": "synthetic"}, space=space.settings()))
    assert "evaluator.table 'testbed'" in _one_line_refusal(name, lambda: TableEvaluator("testbed", space=space).check())


def test_nasnet_tools_still_take_nasnet():
    from cellsearch.evaluators.oneshot import OneShotEvaluator
    from cellsearch.evaluators.table import TableEvaluator
    from cellsearch.search.darts import check_relaxable

    space = _space("nasnet")
    check_relaxable(space)
    OneShotEvaluator(child={}, data={"name": "synthetic"}, space=space)
    TableEvaluator("testbed", space=space).check()


@pytest.mark.parametrize("name", list(SPACE_CLASSES))
def test_every_space_has_a_diagram_that_draws_and_describes(name):
    """The genotype figure and ``describe`` go through cellsearch.space.<space>_diagram."""
    import matplotlib.pyplot as plt

    from cellsearch.search.plots import genotype_figure

    space = _space(name)
    pytest.importorskip(f"cellsearch.space.{name}_diagram", reason=f"space={name}'s diagram module has not landed")
    genotype = _genotypes(space, 1, seed=6)[0]
    figure = genotype_figure(genotype, "a title")
    assert figure.axes
    plt.close(figure)
    text = importlib.import_module(f"cellsearch.space.{name}_diagram").describe(genotype)
    assert isinstance(text, str) and text.strip()


def test_a_space_without_a_diagram_module_is_refused_in_one_line():
    """What the report and the live view fall back on (a line instead of best_cell.png) for such a space."""
    from cellsearch.space.support import diagram_module

    assert diagram_module("nasnet").__name__ == "cellsearch.space.nasnet_diagram"
    with pytest.raises(ConfigError, match=r"^space=no_such_space has no diagram module yet") as caught:
        diagram_module("no_such_space")
    assert "\n" not in str(caught.value)
