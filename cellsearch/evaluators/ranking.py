"""Rank agreement between an estimate (a zero-cost score, a one-shot accuracy) and trained accuracy.

The point statistics take two paired lists, the estimate and the truth (higher is better in both):

- :func:`kendall_tau` (tau-b, ties handled) and :func:`spearman_rho`;
- :func:`top_k_precision`: of the ``k`` cells the estimate ranks highest, the share among the ``k`` best;
- :func:`top_fraction_recall`: of the truth's top ``fraction`` (a tenth by default), the share that is in
  the estimate's top ``fraction``;
- :func:`junk_filter_rate`: what a pre-judger is for. The estimate rejects every cell below a threshold,
  set as high as it can go while it keeps at least ``keep`` (95%) of the truth's top tenth; the rate is
  the share of the truth's bottom quarter it rejects.

Ties at a cut-off (the k-th place of the top tenth, the bottom quarter's edge) are split evenly: a cell
among ``t`` tied cells that fill ``s`` remaining places counts as ``s / t`` of a member, the expectation
over breaking the tie at random. So a constant estimate scores what chance scores, not a perfect recall.

:func:`rank_report` gives each statistic with a percentile bootstrap interval over cells (seeded),
:func:`bootstrap_difference` the paired interval of how much one estimate beats another, and
:func:`noise_ceiling` the best Kendall tau that the truth's own seed noise allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Interval", "NoiseCeiling", "RANK_STATISTICS", "bootstrap_difference", "bootstrap_interval",
           "junk_filter_rate", "kendall_tau", "noise_ceiling", "rank_report", "spearman_rho", "top_fraction_recall",
           "top_k_precision"]

Values = Sequence[float]


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0  # ties share their mean rank
        i = j + 1
    return ranks


def _signs(values: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) for every pair, by comparison (so that -inf ties with -inf instead of giving NaN)."""
    column, row = values[:, None], values[None, :]
    return (column > row).astype(np.int8) - (column < row).astype(np.int8)


def kendall_tau(a: Values, b: Values) -> float:
    """Kendall's tau-b of two paired lists (ties handled); NaN for fewer than two pairs or a constant list."""
    sa, sb = _signs(np.asarray(a, dtype=float)), _signs(np.asarray(b, dtype=float))
    # Both sign matrices are antisymmetric with a zero diagonal: every pair counts twice, which cancels.
    denominator = math.sqrt(float(np.count_nonzero(sa)) * float(np.count_nonzero(sb)))
    return float((sa * sb).sum(dtype=np.int64)) / denominator if denominator else float("nan")


def spearman_rho(a: Values, b: Values) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks); NaN when undefined."""
    ra, rb = _ranks(list(a)), _ranks(list(b))
    n = len(ra)
    if n < 2:
        return float("nan")
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def top_k_precision(scores: Values, truth: Values, k: int) -> float:
    """Of the ``k`` items the score ranks highest, the fraction among the ``k`` truly best."""
    k = min(k, len(scores))
    if k < 1:
        return float("nan")
    by_score = set(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])
    by_truth = set(sorted(range(len(truth)), key=lambda i: -truth[i])[:k])
    return len(by_score & by_truth) / k


def _share(fraction: float, n: int) -> int:
    """How many of ``n`` cells a ``fraction`` of them is: rounded, at least one."""
    return max(1, int(math.floor(fraction * n + 0.5)))


def _top_membership(values: np.ndarray, k: int) -> np.ndarray:
    """Each cell's share in the top ``k`` of ``values``: 1 above the k-th value, 0 below it, and the places
    left split evenly among the cells tied at it."""
    kth = np.sort(values)[::-1][k - 1]
    above, tied = values > kth, values == kth
    membership = above.astype(float)
    membership[tied] = (k - above.sum()) / tied.sum()
    return membership


def top_fraction_recall(scores: Values, truth: Values, fraction: float = 0.1) -> float:
    """Of the truth's top ``fraction`` of cells, the share in the score's top ``fraction`` (ties split evenly)."""
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    if len(s) < 1:
        return float("nan")
    k = _share(fraction, len(s))
    return float((_top_membership(s, k) * _top_membership(t, k)).sum() / k)


def junk_filter_rate(scores: Values, truth: Values, keep: float = 0.95, top: float = 0.1,
                     bottom: float = 0.25) -> float:
    """The share of the truth's bottom ``bottom`` of cells that the score rejects at the highest threshold that
    still keeps at least ``keep`` of the truth's top ``top`` (cells tied with the threshold are kept)."""
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    if len(s) < 2:
        return float("nan")
    best = _top_membership(t, _share(top, len(t)))
    worst = _top_membership(-t, _share(bottom, len(t)))
    # Reject the top cells from the lowest score up, while the share lost stays within 1 - keep; a score that
    # several top cells share is rejected for all of them or for none. The threshold is the lowest score kept.
    levels = np.unique(s[best > 0])
    allowed, threshold = (1.0 - keep) * best.sum() + 1e-12, levels[0]
    for level, above in zip(levels, [*levels[1:], math.inf]):
        if best[s <= level].sum() > allowed:
            break
        threshold = above
    rejected = s < threshold
    return float((worst * rejected).sum() / worst.sum())


RANK_STATISTICS: dict[str, Callable[[Values, Values], float]] = {
    "kendall_tau": kendall_tau, "spearman_rho": spearman_rho, "top10_recall": top_fraction_recall,
    "junk_filter": junk_filter_rate}


@dataclass(frozen=True)
class Interval:
    """A statistic on all cells and its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _bootstrap(statistic: Callable[[np.ndarray], float], n: int, resamples: int, level: float,
               seed: int) -> Interval:
    """``statistic`` of the index array of all ``n`` cells, with the percentile interval over ``resamples``
    index arrays drawn with replacement (seeded); resamples where it is undefined (NaN) are left out."""
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = np.array([statistic(d) for d in draws])
    values = values[~np.isnan(values)]
    value = statistic(np.arange(n))
    if len(values) == 0:
        return Interval(value, float("nan"), float("nan"))
    low, high = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return Interval(value, float(low), float(high))


def bootstrap_interval(statistic: Callable[[Values, Values], float], scores: Values, truth: Values,
                       resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """``statistic(scores, truth)`` with the percentile interval of ``resamples`` resamplings of the cells
    (drawn with replacement; a seeded generator, so the same input gives the same interval). Resamples where
    the statistic is undefined (NaN) are left out."""
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    return _bootstrap(lambda d: statistic(s[d], t[d]), len(s), resamples, level, seed)


def bootstrap_difference(statistic: Callable[[Values, Values], float], scores: Values, baseline: Values,
                         truth: Values, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """How much better ``scores`` does than ``baseline`` on ``statistic`` against ``truth``, with a paired
    percentile bootstrap interval (both on the same resampled cells): "beats the baseline" when it is above 0."""
    s, b, t = (np.asarray(v, dtype=float) for v in (scores, baseline, truth))
    return _bootstrap(lambda d: statistic(s[d], t[d]) - statistic(b[d], t[d]), len(s), resamples, level, seed)


def rank_report(scores: Values, truth: Values, resamples: int = 1000, seed: int = 0) -> dict[str, Interval]:
    """Every statistic of RANK_STATISTICS with its 95% bootstrap interval (the same resamples for each)."""
    return {name: bootstrap_interval(f, scores, truth, resamples, seed=seed) for name, f in RANK_STATISTICS.items()}


@dataclass(frozen=True)
class NoiseCeiling:
    """How well the seed-averaged truth can be ranked at all.

    ``simulated``: the expected Kendall tau of a perfect estimate (the noise-free accuracy) against the mean
    of the seeds, under Gaussian seed noise of the pooled within-cell spread: the ceiling (0 when the means
    spread no more than the noise alone would make them; with few cells its own sampling error is a few
    hundredths to a tenth). ``ceilings``: the same for every statistic of RANK_STATISTICS (what a perfect
    estimate's top-10% recall and junk-filter rate come to). ``held_out``: tau between one seed's accuracy and
    the mean of the other seeds, averaged over which seed is held out; measured without a model, and below
    the ceiling (both sides carry noise), so it is a floor for it.
    """

    ceilings: dict[str, float]
    held_out: float
    seed_std: float     # pooled within-cell standard deviation over seeds
    spread_std: float   # standard deviation of the cells' noise-free accuracy (estimated)
    num_cells: int
    num_seeds: int

    @property
    def simulated(self) -> float:
        return self.ceilings["kendall_tau"]


def noise_ceiling(seed_accuracies: Sequence[Sequence[float]], simulations: int = 200, seed: int = 0) -> NoiseCeiling:
    """The best rank statistics that seed noise allows against the mean over seeds (see :class:`NoiseCeiling`).

    Args:
        seed_accuracies: per cell, its accuracy at each of the same number (at least 2) of training seeds.
        simulations: draws of the noise for the simulated ceiling.
        seed: seeds those draws.
    """
    acc = np.asarray(seed_accuracies, dtype=float)
    if acc.ndim != 2 or acc.shape[1] < 2 or acc.shape[0] < 2:
        raise ValueError(f"need at least 2 cells with the same number (>= 2) of seeds each, got shape {acc.shape}")
    cells, seeds = acc.shape
    means = acc.mean(axis=1)
    seed_var = float(acc.var(axis=1, ddof=1).mean())
    # var(mean over seeds) = var(true accuracy) + seed_var / seeds: what is left is the cells' real spread.
    spread_var = max(float(means.var(ddof=1)) - seed_var / seeds, 0.0)
    held_out = float(np.mean([kendall_tau(acc[:, s], np.delete(acc, s, axis=1).mean(axis=1)) for s in range(seeds)]))
    if spread_var == 0:  # no real differences left to rank: a perfect estimate does what chance does
        true = np.zeros(cells)
    else:  # true accuracies: the observed means shrunk to the grand mean so that their spread is the real one
        true = means.mean() + math.sqrt(spread_var / float(means.var(ddof=1))) * (means - means.mean())
    rng = np.random.default_rng(seed)
    draws = [true + rng.normal(0, math.sqrt(seed_var / seeds), cells) for _ in range(simulations)]
    # A constant truth has no tau (NaN): it counts as 0, what chance scores.
    ceilings = {name: float(np.mean([np.nan_to_num(f(true, mean)) for mean in draws]))
                for name, f in RANK_STATISTICS.items()}
    return NoiseCeiling(ceilings, held_out, math.sqrt(seed_var), math.sqrt(spread_var), cells, seeds)
