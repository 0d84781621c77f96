"""Learning curves on reward landscapes: a curve ends at the landscape's reward, fidelity returns its prefix and
continues from a checkpoint, crossing curves cross, and bad input fails in one line."""
import random

import pytest

from cellsearch.evaluators.base import Fidelity
from cellsearch.evaluators.landscape import LandscapeEvaluator
from cellsearch.evaluators.landscape_curves import LandscapeCurves
from cellsearch.evaluators.landscapes import Landscape
from cellsearch.search.run import build_from_config
from cellsearch.space.genotype import SearchSpace
from cellsearch.validation import ConfigError

SPACE = SearchSpace(num_blocks=3)


def cells(count: int, seed: int = 0):
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(count)]


@pytest.mark.parametrize("shape", ["saturating", "crossing"])
def test_a_segmented_child_ends_where_a_whole_one_does(shape):
    evaluator = LandscapeEvaluator(SPACE, "epistatic", seed=1, noise=0.2, curve=shape, epochs=9)
    without_curves = LandscapeEvaluator(SPACE, "epistatic", seed=1, noise=0.2)
    assert evaluator.max_epochs == 9 and without_curves.max_epochs is None
    genotype = cells(1)[0]
    whole = evaluator.evaluate(genotype, trial_id=4, seed=2)
    assert whole.metrics == without_curves.evaluate(genotype, trial_id=4, seed=2).metrics  # same reward as before
    assert [p.epoch for p in whole.curve] == list(range(1, 10)) and whole.checkpoint is None
    first = evaluator.evaluate(genotype, 4, 2, fidelity=Fidelity(3))
    assert first.curve == whole.curve[:3] and first.metrics["val_accuracy"] == whole.curve[2].val_accuracy
    rest = evaluator.evaluate(genotype, 4, 2, fidelity=Fidelity(9, first.checkpoint))
    assert rest.curve == whole.curve and rest.checkpoint is None and len(first.checkpoint) < 100


def test_saturating_curves_rank_early_like_at_the_end_and_crossing_curves_cross():
    landscape = Landscape(SPACE, "additive", seed=0, noise=0.0)
    genotypes = cells(200)
    saturating, crossing = LandscapeCurves(landscape, "saturating", 9), LandscapeCurves(landscape, "crossing", 9)
    for g in genotypes[:20]:
        curve = saturating.curve(g)
        assert curve[-1] == landscape.reward(g) and curve == sorted(curve)  # no noise: rising to the reward
    # a crossing pair: the better cell (at the end) is behind after the first epoch
    curves = [crossing.curve(g) for g in genotypes]
    crossed = [(a, b) for a in curves for b in curves if a[-1] > b[-1] + 0.1 and a[0] < b[0]]
    assert crossed
    # the best cell learns slowest; saturating learning times do not follow the reward
    best = max(genotypes, key=landscape.reward)
    assert crossing.tau(best) == max(crossing.tau(g) for g in genotypes[:50] + [best]) > 5
    behind = sum(a[0] < b[0] for a, b in zip(curves, curves[1:]) if a[-1] > b[-1])
    assert behind > 0.5 * sum(a[-1] > b[-1] for a, b in zip(curves, curves[1:]))  # epoch 1 ranks worse than chance
    same = [saturating.curve(g) for g in genotypes]
    agree = sum((a[0] < b[0]) == (a[-1] < b[-1]) for a, b in zip(same, same[1:]))
    assert agree > 0.75 * (len(same) - 1)


def test_bad_curve_settings_and_fidelities_fail_in_one_line(compose):
    genotype = cells(1)[0]
    with pytest.raises(ConfigError, match="^evaluator.curve: unknown curve shape 'linear'"):
        LandscapeEvaluator(SPACE, curve="linear", epochs=9).check()
    with pytest.raises(ConfigError, match="^evaluator.epochs: must be an integer >= 1 or null"):
        LandscapeEvaluator(SPACE, epochs=0).check()
    with pytest.raises(ConfigError, match=r"^Fidelity\(epochs=10\) is outside the landscape's curves of 1..9 epochs"):
        LandscapeEvaluator(SPACE, epochs=9).evaluate(genotype, fidelity=Fidelity(10))
    with pytest.raises(ConfigError, match="has no learning curves.*set evaluator.epochs"):
        LandscapeEvaluator(SPACE).evaluate(genotype, fidelity=Fidelity(1))
    other = LandscapeEvaluator(SPACE, epochs=9).evaluate(cells(2, seed=5)[1], fidelity=Fidelity(2)).checkpoint
    with pytest.raises(ConfigError, match="not one this landscape returned for this cell"):
        LandscapeEvaluator(SPACE, epochs=9).evaluate(genotype, fidelity=Fidelity(3, other))
    cfg = compose("evaluator=landscape", "evaluator.curve=crossing", "run_dir=.")
    evaluator = build_from_config("evaluator", cfg.evaluator, space=SPACE)
    assert evaluator.max_epochs == cfg.child.epochs and evaluator.curve == "crossing"
