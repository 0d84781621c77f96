"""Which cheap estimator ranks the testbed's cells as stand-alone training does? (issue 22's table)

The truth is the table's cells trained with at least ``--min-seeds`` seeds, their mean validation
accuracy (:func:`cellsearch.evaluators.table.ground_truth`); by default the ``testbed_curves`` table:
100 uniformly random cells of the testbed space, 3 seeds each, 9 epochs. ``--table`` takes a shipped
name or a path. Every estimator scores the same cells, untrained, at the table's child size (N, F) on the
table's data, as the pre-judger builds them:

- ``params`` and ``mult_adds`` of the child and their negatives ("beats the parameter count" means beats
  the better of the two signs);
- each zero-cost score of :mod:`cellsearch.evaluators.zero_cost` (one fixed minibatch, fixed initial weights);
- votes (:func:`cellsearch.evaluators.vote.mean_rank`): the configured one (conf/prejudge/vote.yaml) and the
  best of every vote of two or three scores, each with either sign, on these cells (chosen on the truth
  itself, so that row is optimistic; the 2-fold check below the table says by how much);
- ``predictor@n`` (:class:`cellsearch.evaluators.predictor.LearnedPredictor`, the settings of
  conf/prejudge/predictor.yaml): 5-fold cross-validation; each fold's cells are scored by a predictor fitted
  to ``n`` cells drawn from the other folds (so n is at most 4/5 of the table), as a search that has
  trained n children would;
- one-shot estimates (:func:`oneshot_rows`): a supernet trained by each recipe of ``--oneshot``
  (``benchmarks/bench_oneshot.py``'s ``RECIPES``; default: 1x, 3x, 10x the compute of a child and the
  evaluator's defaults), every cell scored on it; its CPU seconds are shared out over the cells.

Per estimator: Kendall tau, Spearman, top-10% recall and the junk-filter rate (the share of the truth's
bottom quarter rejected at the threshold that keeps 95% of its top tenth), each with a 95% percentile
bootstrap interval over cells (:mod:`cellsearch.evaluators.ranking`), and the CPU seconds one cell costs
(median; one torch thread; a vote adds its components'; a predictor's fitting is printed below the table).
The last two columns: how far each estimator's Kendall tau and junk-filter rate lie above those of the
best size baseline, with a paired bootstrap interval: "beats the parameter count" where it is above 0. The
``noise ceiling`` row is what a perfect estimate would score given the truth's own seed noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_estimators.py --plot /tmp/estimators.png
    python benchmarks/bench_estimators.py --table path/to/table.json.gz --resamples 200 --scores naswot synflow
"""
from __future__ import annotations

import argparse
import itertools
import sys
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from cellsearch.data import as_data_config
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.predictor import LearnedPredictor
from cellsearch.evaluators.ranking import RANK_STATISTICS, bootstrap_difference, kendall_tau, noise_ceiling, rank_report
from cellsearch.evaluators.table import CellTable, TableRow, ground_truth, load_table
from cellsearch.evaluators.vote import mean_rank
from cellsearch.evaluators.zero_cost import SCORES, ZeroCostScorer
from cellsearch.progress import INTERVAL, progress_to_stderr, track
from cellsearch.space.genotype import Genotype

CONF = Path(__file__).resolve().parents[1] / "conf" / "prejudge"
Estimate = tuple[list[float], list[float]]  # per cell: the value (higher: better) and the CPU seconds it cost
LABELS = {"kendall_tau": "Kendall tau", "spearman_rho": "Spearman", "top10_recall": "top-10% recall",
          "junk_filter": "bottom 25% rejected (95% of top 10% kept)"}
SIZE = ("params", "-params", "mult_adds", "-mult_adds")
FOLDS = 5
# The one-shot rows by default: the supernet trained as long as 1, 3 and 10 children and scored as it is, and the
# evaluator as it ships (a 1-epoch warm-up, each path fine-tuned 20 steps and scored by likelihood);
# bench_oneshot.py has the others.
ONESHOT_RECIPES = ("1x", "3x", "10x", "the evaluator's defaults")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_oneshot, imported by oneshot_rows


@dataclass
class Truth:
    """The cells to rank, their rows and mean accuracy, and the table's child and data settings."""

    table: CellTable
    cells: list[Genotype]
    rows: list[TableRow]
    accuracy: list[float]
    child: Any
    data: Any


def oneshot_rows(truth: Truth, recipes: list[str], seed: int) -> dict[str, Estimate]:
    """One-shot estimates of ``truth.cells``, one row per supernet recipe of ``bench_oneshot.RECIPES`` named in
    ``recipes``: name -> (value per cell, CPU seconds per cell: the supernet's training and scoring, shared out
    over the cells), in ``truth.cells``' order."""
    if not recipes:
        return {}
    import bench_oneshot  # beside this file; heavy (the supernet), so only when one-shot rows are asked for

    child = {**truth.table.child, "accelerator": "cpu", "logger": None, "enable_progress_bar": False}
    rows = {}
    for recipe in bench_oneshot.recipes_named(recipes, "--oneshot"):
        values, seconds = bench_oneshot.oneshot_estimates(truth.cells, child, dict(truth.table.data),
                                                         truth.table.space, recipe, seed)
        rows[f"one-shot {recipe.name}"] = (values, [seconds / len(truth.cells)] * len(truth.cells))
    return rows


def score_cells(label: str, cells: list[Genotype], fn: Callable[[Genotype], float | None]) -> Estimate:
    """``fn`` on every cell, timed in CPU seconds of this process; a cell it cannot score ranks last."""
    values, seconds = [], []
    for genotype in track(cells, label, units="cells", heartbeat=INTERVAL):
        start = time.process_time()
        value = fn(genotype)
        seconds.append(time.process_time() - start)
        values.append(-np.inf if value is None else float(value))
    return values, seconds


def zero_cost_rows(truth: Truth, scores: list[str], seed: int, batch_size: int) -> dict[str, Estimate]:
    """The size baselines (both signs) and each zero-cost score."""
    estimates: dict[str, Estimate] = {}
    for name in ("params", "mult_adds", *scores):
        scorer = ZeroCostScorer(name, truth.child, truth.data, seed=seed, batch_size=batch_size)
        scorer.minibatch()  # loading the data is not the score's cost
        estimates[name] = score_cells(name, truth.cells, lambda g: scorer(g).value)
    for name in ("params", "mult_adds"):  # the other sign costs nothing more
        values, seconds = estimates[name]
        estimates[f"-{name}"] = ([-v for v in values], seconds)
    return {name: estimates[name] for name in (*SIZE, *scores)}


def vote_of(estimates: dict[str, Estimate], names: list[str]) -> Estimate:
    per_cell = [sum(estimates[n][1][i] for n in names) for i in range(len(estimates[names[0]][0]))]
    return mean_rank([estimates[n][0] for n in names]), per_cell


def all_votes(names: list[str]) -> list[tuple[str, ...]]:
    """Every vote of two or three of ``names`` that does not hold a score with both signs."""
    return [combo for size in (2, 3) for combo in itertools.combinations(names, size)
            if len({n.lstrip("-") for n in combo}) == size]


def vote_rows(truth: Truth, estimates: dict[str, Estimate], seed: int) -> tuple[dict[str, Estimate], str]:
    """The configured vote, the best vote on all cells (optimistic), and a line on how that choice holds up
    out of sample (each half of the cells picks its best vote; its tau on the other half)."""
    configured = list(yaml.safe_load((CONF / "vote.yaml").read_text())["vote"])
    signed = dict(estimates)  # the zero-cost scores with either sign, as the size scores have (-naswot: lowest first)
    signed.update({f"-{n}": ([-v for v in values], seconds) for n, (values, seconds) in estimates.items() if n in SCORES})
    estimates = signed
    combos = all_votes([n for n in estimates if n.lstrip("-") in SCORES])
    accuracy = np.asarray(truth.accuracy)

    def tau(combo: tuple[str, ...], cells: np.ndarray) -> float:
        return kendall_tau(mean_rank([np.asarray(estimates[n][0])[cells] for n in combo]), accuracy[cells])

    best = max(combos, key=lambda c: tau(c, np.arange(len(accuracy))))
    halves = np.array_split(np.random.default_rng(seed).permutation(len(accuracy)), 2)
    held_out = []
    for pick, test in (halves, halves[::-1]):
        chosen = max(combos, key=lambda c: tau(c, pick))
        held_out.append(f"{'+'.join(chosen)} picked on one half: tau {tau(chosen, test):.3f} on the other")
    rows = {f"vote {'+'.join(configured)} (conf/prejudge/vote.yaml)": vote_of(estimates, configured)} \
        if all(n in estimates for n in configured) else {}
    rows[f"vote {'+'.join(best)} (best of {len(combos)} votes on these cells)"] = vote_of(estimates, list(best))
    return rows, "; ".join(held_out)


def predictor_rows(truth: Truth, children: list[int], seed: int) -> tuple[dict[str, Estimate], str]:
    """The learned predictor after each number of trained ``children``, out of fold (see the docstring); a
    number more than the other folds hold is left out."""
    settings = dict(yaml.safe_load((CONF / "predictor.yaml").read_text())["predictor"])
    settings.pop("min_children")
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(truth.cells)), FOLDS)
    rows, fits = {}, []
    for n in children:
        values, seconds, fit_seconds = [0.0] * len(truth.cells), [0.0] * len(truth.cells), []
        for k, fold in enumerate(track(folds, f"predictor@{n}", units="folds")):
            others = np.concatenate([f for j, f in enumerate(folds) if j != k])
            if n > len(others):
                break
            train = rng.choice(others, size=n, replace=False)
            predictor = LearnedPredictor(**settings, seed=seed + k)
            start = time.process_time()
            predictor.fit(truth.table.space, [truth.cells[i] for i in train], [truth.accuracy[i] for i in train])
            fit_seconds.append(time.process_time() - start)
            for i in fold:
                start = time.process_time()
                values[i] = float(predictor.predict([truth.cells[i]])[0])
                seconds[i] = time.process_time() - start
        else:
            rows[f"predictor@{n} ({FOLDS}-fold)"] = (values, seconds)
            fits.append(f"{statistics.median(fit_seconds):.1f} s at n={n}")
    return rows, f"predictor fitting (median CPU s per fit): {', '.join(fits) or 'none: too few cells'}; settings {settings}"


def plot(path: Path, estimates: dict[str, Estimate], names: list[str], truth: Truth) -> None:
    """Estimate against truth for ``names``, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = np.asarray(estimates[name][0])
        finite = np.isfinite(values)
        ax.scatter(values[finite], np.asarray(truth.accuracy)[finite], s=14)
        ax.set_xlabel(f"{name} (estimate)")
        ax.set_ylabel(f"mean val accuracy ({len(truth.rows[0].val_accuracy)} seeds)")
        ax.set_title(f"Kendall tau {kendall_tau(values, truth.accuracy):.3f}, {len(values)} cells", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="testbed_curves", help="a shipped table's name or a table file")
    parser.add_argument("--min-seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the cells")
    parser.add_argument("--seed", type=int, default=0, help="the scores' minibatch and weights, the folds, the bootstrap")
    parser.add_argument("--batch-size", type=int, default=64, help="images in the scores' minibatch")
    zero_cost_scores = [s for s in SCORES if s not in ("params", "mult_adds")]  # the size scores have their own rows
    parser.add_argument("--scores", nargs="+", default=zero_cost_scores, choices=zero_cost_scores)
    parser.add_argument("--children", type=int, nargs="+", default=[20, 50, 80],
                        help="the learned predictor's rows: trained children it learns from")
    parser.add_argument("--plot", type=Path, default=None, help="write estimate against truth for the best two here")
    parser.add_argument("--oneshot", nargs="*", default=list(ONESHOT_RECIPES),
                        help="one-shot rows: recipes of bench_oneshot.RECIPES (none: --oneshot with no names)")
    args = parser.parse_args(argv)
    progress_to_stderr()  # progress lines on stderr: the table on stdout stays clean
    torch.set_num_threads(1)
    started = time.perf_counter()

    table = load_table(args.table)
    truth_cells = ground_truth(args.table, args.min_seeds)
    truth = Truth(table, [g for g, _ in truth_cells], [r for _, r in truth_cells],
                  [r.mean_accuracy for _, r in truth_cells],
                  as_child_config({**table.child, "accelerator": "cpu", "logger": None}), as_data_config(table.data))

    estimates = zero_cost_rows(truth, args.scores, args.seed, args.batch_size)
    mismatched = [n for n in ("params", "mult_adds") if estimates[n][0] != [float(getattr(r, n)) for r in truth.rows]]
    votes, vote_check = vote_rows(truth, estimates, args.seed) if len(args.scores) > 1 else ({}, "")
    predictors, fitting = predictor_rows(truth, args.children, args.seed)
    estimates.update({**votes, **predictors, **oneshot_rows(truth, args.oneshot, args.seed)})

    reports = {name: rank_report(values, truth.accuracy, args.resamples, args.seed)
               for name, (values, _) in track(list(estimates.items()), "bootstrap", units="estimators")}
    # The seed noise needs two seeds per cell: with --min-seeds 1 (every cell of a one-seed table) there is none.
    ceiling = noise_ceiling([r.val_accuracy[:args.min_seeds] for r in truth.rows], seed=args.seed) \
        if args.min_seeds >= 2 else None
    baseline = max(SIZE, key=lambda n: reports[n]["kendall_tau"].value)  # the better sign of the better size
    gains = {name: {stat: bootstrap_difference(RANK_STATISTICS[stat], estimates[name][0], estimates[baseline][0],
                                               truth.accuracy, args.resamples, seed=args.seed)
                    for stat in ("kendall_tau", "junk_filter")}
             for name in reports if name not in SIZE}

    n, child, data = len(truth.cells), truth.child, truth.data
    print(f"{n} cells of table {args.table} with >= {args.min_seeds} seeds: mean accuracy {min(truth.accuracy):.3f}.."
          f"{max(truth.accuracy):.3f}; child N={child.cells_per_stage} F={child.channels} epochs={child.epochs}, data "
          f"{data.name}; scores on {args.batch_size} images, seed {args.seed}; {args.resamples} bootstrap resamples, "
          f"95% intervals; torch {torch.__version__}, {torch.get_num_threads()} thread")
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
    if ceiling is not None:
        ceilings = " | ".join(f"{ceiling.ceilings[s]:.3f}" for s in RANK_STATISTICS)
        print(f"| noise ceiling (a perfect estimate, simulated) | {ceilings} | | | |")
    beating = [name for name in gains if gains[name]["kendall_tau"].low > 0]
    print(f"\nbeat {baseline} (Kendall tau gain's interval above 0): {', '.join(beating) or 'none'}")
    if ceiling is not None:
        print(f"seed noise: {ceiling.seed_std:.4f} std within a cell over {ceiling.num_seeds} seeds; the cells' "
              f"noise-free spread {ceiling.spread_std:.4f} std (estimated). Kendall tau of one seed vs the mean of "
              f"the others: {ceiling.held_out:.3f} (averaged over the held-out seed); of seed 0 alone vs the mean of "
              f"all: {kendall_tau([r.val_accuracy[0] for r in truth.rows], truth.accuracy):.3f}. The intervals "
              f"resample cells; the truth's own seed noise is in the ceiling row, not in them.")
    else:
        print("one seed per cell: no noise ceiling (the truth's seed noise is unknown here)")
    if vote_check:
        print(f"vote chosen out of sample (2-fold): {vote_check}")
    print(fitting)
    if mismatched:
        print(f"note: recomputed {', '.join(mismatched)} differ from the table's column")
    if args.plot is not None:
        best = sorted((name for name in reports), key=lambda name: -reports[name]["kendall_tau"].value)[:2]
        plot(args.plot, estimates, best, truth)
        print(f"plot of {' and '.join(best)} against the truth: {args.plot}")
    print(f"total {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
