"""Which cheap estimator ranks the testbed's cells as stand-alone training does? (issue 22's first table)

The truth is the testbed table's cells trained with at least ``--min-seeds`` seeds (their mean
validation accuracy; :func:`cellsearch.evaluators.table.ground_truth`). Every estimator scores the same
cells, untrained, at the table's child size (N, F) on the table's data, as the pre-judger builds them:

- ``params`` and ``mult_adds`` of the child (the zero-cost scores of those names) and their negatives
  (on the shipped table a 3-epoch child favours small cells, so "beats the parameter count" means beats
  the better of the two signs);
- each zero-cost score of :mod:`cellsearch.evaluators.zero_cost` (one fixed minibatch, fixed initial weights);
- ``vote``: the mean rank of the zero-cost scores (params left out); ``vote+size`` adds -params and
  -mult_adds, whose sign was read off this very truth (so that row is optimistic).

Per estimator: Kendall tau, Spearman, top-10% recall and the junk-filter rate (the share of the
truth's bottom quarter rejected at the threshold that keeps 95% of its top tenth), each with a 95%
percentile bootstrap interval over cells (:mod:`cellsearch.evaluators.ranking`), and the CPU seconds
one cell costs (median; one torch thread). The last two columns: how far each estimator's Kendall tau and
junk-filter rate lie above those of the best size baseline (the better of ±params and ±mult_adds), with a
paired bootstrap interval: "beats the parameter count" where it is above 0. The ``noise ceiling`` row
is what a perfect estimate (the noise-free accuracy) would score against the truth, given the truth's own
seed noise (simulated; :func:`cellsearch.evaluators.ranking.noise_ceiling`).
Not here yet: the learned predictor and the one-shot rows.

    OMP_NUM_THREADS=1 python benchmarks/bench_estimators.py              # 60 cells, 1000 resamples
    python benchmarks/bench_estimators.py --resamples 200 --scores naswot synflow
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch

from cellsearch.data import as_data_config
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.ranking import RANK_STATISTICS, bootstrap_difference, kendall_tau, noise_ceiling, rank_report
from cellsearch.evaluators.table import ground_truth, load_table
from cellsearch.evaluators.zero_cost import SCORES, ZeroCostScorer
from cellsearch.progress import INTERVAL, progress_to_stderr, track
from cellsearch.space.genotype import Genotype

Estimate = tuple[list[float], list[float]]  # per cell: the value and the CPU seconds it cost
LABELS = {"kendall_tau": "Kendall tau", "spearman_rho": "Spearman", "top10_recall": "top-10% recall",
          "junk_filter": "bottom 25% rejected (95% of top 10% kept)"}


def score_cells(label: str, cells: list[Genotype], fn: Callable[[Genotype], float | None]) -> Estimate:
    """``fn`` on every cell, timed in CPU seconds of this process; a cell it cannot score ranks last."""
    values, seconds = [], []
    for genotype in track(cells, label, units="cells", heartbeat=INTERVAL):
        start = time.process_time()
        value = fn(genotype)
        seconds.append(time.process_time() - start)
        values.append(-np.inf if value is None else float(value))
    return values, seconds


def vote(estimates: list[list[float]]) -> list[float]:
    """The mean rank of several estimates (higher: better), each ranked with ties sharing their mean rank."""
    ranks = [np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) for v in estimates]
    for rank, values in zip(ranks, estimates):  # ties share their mean rank
        values = np.asarray(values)
        for value in np.unique(values):
            rank[values == value] = rank[values == value].mean()
    return list(np.mean(ranks, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="testbed")
    parser.add_argument("--min-seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the cells")
    parser.add_argument("--seed", type=int, default=0, help="the scores' minibatch and weights, the bootstrap")
    parser.add_argument("--batch-size", type=int, default=64, help="images in the scores' minibatch")
    zero_cost_scores = [s for s in SCORES if s not in ("params", "mult_adds")]  # the size scores have their own rows
    parser.add_argument("--scores", nargs="+", default=zero_cost_scores, choices=zero_cost_scores)
    args = parser.parse_args()
    progress_to_stderr()  # progress lines on stderr: the table on stdout stays clean
    torch.set_num_threads(1)
    started = time.perf_counter()

    table = load_table(args.table)
    truth_cells = ground_truth(args.table, args.min_seeds)
    cells, rows = [g for g, _ in truth_cells], [r for _, r in truth_cells]
    truth = [r.mean_accuracy for r in rows]
    child = as_child_config({**table.child, "accelerator": "cpu", "logger": None})
    data = as_data_config(table.data)

    estimates: dict[str, Estimate] = {}
    for name in ("params", "mult_adds", *args.scores):
        scorer = ZeroCostScorer(name, child, data, seed=args.seed, batch_size=args.batch_size)
        scorer.minibatch()  # loading the data is not the score's cost
        estimates[name] = score_cells(name, cells, lambda g: scorer(g)[0])
    size = ("params", "mult_adds")
    mismatched = [name for name in size if estimates[name][0] != [float(getattr(r, name)) for r in rows]]
    for name in size:  # the other sign costs nothing more
        values, seconds = estimates[name]
        estimates[f"-{name}"] = ([-v for v in values], seconds)
    estimates = {name: estimates[name] for name in ("params", "-params", "mult_adds", "-mult_adds", *args.scores)}
    zero_cost = list(args.scores)

    def combined(names: list[str]) -> Estimate:
        per_cell = [sum(estimates[n][1][i] for n in names) for i in range(len(cells))]
        return vote([estimates[n][0] for n in names]), per_cell

    if len(zero_cost) > 1:
        estimates["vote"] = combined(zero_cost)
    if zero_cost:
        estimates["vote+size"] = combined([*zero_cost, "-params", "-mult_adds"])

    reports = {name: rank_report(values, truth, args.resamples, args.seed)
               for name, (values, _) in track(list(estimates.items()), "bootstrap", units="estimators")}
    ceiling = noise_ceiling([r.val_accuracy[:args.min_seeds] for r in rows], seed=args.seed)
    sized = [n for n in reports if n.lstrip("-") in size]
    baseline = max(sized, key=lambda n: reports[n]["kendall_tau"].value)  # the better sign of the better size
    gains = {name: {stat: bootstrap_difference(RANK_STATISTICS[stat], estimates[name][0], estimates[baseline][0],
                                               truth, args.resamples, seed=args.seed)
                    for stat in ("kendall_tau", "junk_filter")}
             for name in reports if name not in sized}

    n = len(cells)
    print(f"{n} cells of table {table.name!r} with >= {args.min_seeds} seeds: mean accuracy {min(truth):.3f}.."
          f"{max(truth):.3f}; child N={child.cells_per_stage} F={child.channels}, data {data.name}; "
          f"scores on {args.batch_size} images, seed {args.seed}; {args.resamples} bootstrap resamples, 95% "
          f"intervals; torch {torch.__version__}, {torch.get_num_threads()} thread")
    print(f"top tenth = {max(1, int(n * 0.1 + 0.5))} cells, bottom quarter = {max(1, int(n * 0.25 + 0.5))} cells\n")
    header = ["estimator", *(LABELS[name] for name in RANK_STATISTICS), "CPU s/cell (median)",
              f"Kendall tau minus {baseline}'s", f"junk filter minus {baseline}'s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, report in reports.items():
        cells_text = " | ".join(str(report[s]) for s in RANK_STATISTICS)
        gain = " | ".join(str(gains[name][s]) for s in ("kendall_tau", "junk_filter")) if name in gains \
            else "size | size"
        print(f"| {name} | {cells_text} | {statistics.median(estimates[name][1]):.4f} | {gain} |")
    ceilings = " | ".join(f"{ceiling.ceilings[s]:.3f}" for s in RANK_STATISTICS)
    print(f"| noise ceiling (a perfect estimate, simulated) | {ceilings} | | | |")
    print(f"\nseed noise: {ceiling.seed_std:.4f} std within a cell over {ceiling.num_seeds} seeds; the cells' "
          f"noise-free spread {ceiling.spread_std:.4f} std (estimated). Kendall tau of one seed vs the mean of the "
          f"others: {ceiling.held_out:.3f} (averaged over the held-out seed); of seed 0 alone vs the mean of all: "
          f"{kendall_tau([r.val_accuracy[0] for r in rows], truth):.3f}. The intervals resample cells; the "
          f"truth's own seed noise is in the ceiling row, not in them.")
    if mismatched:
        print(f"note: recomputed {', '.join(mismatched)} differ from the table's column")
    print(f"total {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
