"""Rank statistics: hand-computable cases (perfect, reversed, ties, the junk-filter rule), the bootstrap and
the seed-noise ceiling."""
import math

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from cellsearch.evaluators.ranking import (Interval, bootstrap_difference, bootstrap_interval, junk_filter_rate,
                                           kendall_tau, noise_ceiling, rank_report, spearman_rho, top_fraction_recall)

TRUTH = list(range(20))  # top tenth: cells 18, 19; bottom quarter: cells 0..4


def test_perfect_and_reversed_estimators():
    perfect = rank_report(TRUTH, TRUTH, resamples=50)
    assert {name: i.value for name, i in perfect.items()} == pytest.approx(
        {"kendall_tau": 1, "spearman_rho": 1, "top10_recall": 1, "junk_filter": 1})
    reversed_ = rank_report([-t for t in TRUTH], TRUTH, resamples=50)
    assert {name: i.value for name, i in reversed_.items()} == pytest.approx(
        {"kendall_tau": -1, "spearman_rho": -1, "top10_recall": 0, "junk_filter": 0})


def test_ties_follow_tau_b_and_split_places_evenly():
    # pairs (1,2) and (1,3) concordant, (2,3) tied in a only: 2 / sqrt(2 * 3)
    assert kendall_tau([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b)[0])
    assert spearman_rho(a, b) == pytest.approx(spearmanr(a, b)[0])
    assert kendall_tau([-math.inf, -math.inf, 1.0], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    # a constant score holds each of the 2 top places with chance 2/20: what chance recalls, not everything
    assert top_fraction_recall([0.0] * 20, TRUTH) == pytest.approx(0.1)
    # cells 17..19 tie in the score for 2 places: the two true top cells count 2/3 each
    assert top_fraction_recall(TRUTH[:17] + [17, 17, 17], TRUTH) == pytest.approx(2 / 3)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_junk_filter_threshold_keeps_the_top_tenth():
    # the best cell scores 2.5: keeping it (95% of 2 top cells = both) puts the threshold at 2.5,
    # which rejects cells 0, 1, 2 of the bottom five
    scores = TRUTH[:19] + [2.5]
    assert junk_filter_rate(scores, TRUTH) == pytest.approx(3 / 5)
    # allowed to lose half the top tenth, it drops the best cell and cuts at 18: all the bottom goes
    assert junk_filter_rate(scores, TRUTH, keep=0.5) == pytest.approx(1.0)
    # cells tied with the threshold are kept: cells 0 and 1 score what the best cell scores
    assert junk_filter_rate([2.5, 2.5] + TRUTH[2:19] + [2.5], TRUTH) == pytest.approx(1 / 5)
    assert junk_filter_rate([0.0] * 20, TRUTH) == 0.0


def test_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=60)
    scores = truth + rng.normal(size=60)
    first = bootstrap_interval(kendall_tau, scores, truth, resamples=200, seed=1)
    assert first == bootstrap_interval(kendall_tau, scores, truth, resamples=200, seed=1)
    assert first.low < first.value < first.high and first.high - first.low > 0.05
    assert bootstrap_interval(kendall_tau, truth, truth, resamples=100).low == pytest.approx(1)
    # paired: the perfect estimate beats the noisy one on every resample; the noisy one ties with itself
    gain = bootstrap_difference(kendall_tau, truth, scores, truth, resamples=200)
    assert gain.value == pytest.approx(1 - first.value) and gain.low > 0
    assert bootstrap_difference(kendall_tau, scores, scores, truth, resamples=50) == Interval(0, 0, 0)


def test_noise_ceiling():
    true = np.linspace(0.3, 0.6, 60)
    exact = noise_ceiling(np.stack([true] * 3, axis=1))
    assert exact.simulated == pytest.approx(1) and exact.held_out == pytest.approx(1)
    assert exact.seed_std == pytest.approx(0, abs=1e-12)
    rng = np.random.default_rng(0)
    noisy = noise_ceiling(true[:, None] + rng.normal(0, 0.05, (60, 3)))
    assert 0.3 < noisy.held_out < noisy.simulated < 0.9
    assert noisy.seed_std == pytest.approx(0.05, rel=0.2)
    pure_noise = noise_ceiling(np.full((60, 3), 0.5) + rng.normal(0, 0.05, (60, 3)))  # cells all alike
    assert abs(pure_noise.held_out) < 0.2 and pure_noise.spread_std == 0
    assert pure_noise.ceilings == pytest.approx({"kendall_tau": 0, "spearman_rho": 0, "top10_recall": 0.1,
                                                 "junk_filter": 0})
    # a perfect estimate of noise-free cells: every statistic at its best
    assert exact.ceilings == pytest.approx({"kendall_tau": 1, "spearman_rho": 1, "top10_recall": 1, "junk_filter": 1})
    assert noisy.ceilings["top10_recall"] < 1 and noisy.ceilings["spearman_rho"] > noisy.simulated
    with pytest.raises(ValueError, match="seeds"):
        noise_ceiling([[0.5], [0.6]])
