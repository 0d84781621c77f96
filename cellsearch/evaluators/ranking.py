"""Rank agreement between an estimate (a zero-cost score, a one-shot accuracy) and trained accuracy."""
from __future__ import annotations

import math

__all__ = ["kendall_tau", "spearman_rho", "top_k_precision"]


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


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired lists (ties handled); NaN for fewer than two pairs or a constant list."""
    n = len(a)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else float("nan")


def spearman_rho(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks); NaN when undefined."""
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    if n < 2:
        return float("nan")
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def top_k_precision(scores: list[float], truth: list[float], k: int) -> float:
    """Of the ``k`` items the score ranks highest, the fraction among the ``k`` truly best."""
    k = min(k, len(scores))
    if k < 1:
        return float("nan")
    by_score = set(sorted(range(len(scores)), key=lambda i: -scores[i])[:k])
    by_truth = set(sorted(range(len(truth)), key=lambda i: -truth[i])[:k])
    return len(by_score & by_truth) / k
