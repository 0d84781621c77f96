"""Does the cell matter on the testbed? Spread, seed noise, cost per child, published cells' ranks,
and how well the table's nearest rule predicts a cell it does not hold.

Reads the table builder's rows (benchmarks/build_testbed_table.py), trains what is missing
(resumable: every finished child is appended to a JSON-lines file), and prints markdown tables:

- spread: validation accuracy of the uniformly sampled table cells (seed 0): min, 10th percentile,
  median, 90th percentile, max;
- noise: the first ``--noise-cells`` random table cells trained with seeds 0, 1, 2: std over seeds;
- cost: CPU seconds of one thread per child (what one child costs on an idle core) and wall seconds;
- published cells (NASNet-A, AmoebaNet-A, DARTS V2, PNASNet-5) trained with the same child and data,
  ranked against the random table cells;
- the nearest rule and the surrogate model (``evaluator.lookup=surrogate``): each table cell predicted
  by its nearest other cells, and by the ridge model fitted to all other cells (leave one out);
  Spearman rank correlation with its measured accuracy, and mean absolute error.

    OMP_NUM_THREADS=1 python benchmarks/bench_testbed.py --rows testbed_rows.jsonl --published-rows published.jsonl
"""
from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from build_testbed_table import _append, read_rows, run_jobs, table_settings, train_row
from cellsearch.evaluators.surrogate import RidgeSurrogate
from cellsearch.progress import INTERVAL, progress_to_stderr, track
from cellsearch.space.genotype import load_genotype

PUBLISHED = ("nasnet_a", "amoebanet_a", "darts_v2", "pnasnet_5")


def _published_row(name: str, seed: int, child: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **train_row(load_genotype(name), seed, child, data)}


def train_published(path: Path, seeds: list[int], workers: int, child: dict[str, Any], data: dict[str, Any]) -> None:
    """Train each published cell at each seed not yet in ``path``, appending each result."""
    done = {(r["name"], r["seed"]) for r in read_rows(path)}
    jobs = [(n, s) for s in seeds for n in PUBLISHED if (n, s) not in done]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = pool.map(_published_row, *zip(*jobs), [child] * len(jobs), [data] * len(jobs)) if jobs else ()
        for row in track(rows, "published cells", total=len(jobs), units="children", heartbeat=INTERVAL):
            _append(path, row)
            print(f"{row['name']} seed {row['seed']} acc {row['val_accuracy']} cpu {row['train_seconds']}s", flush=True)


def _percentiles(values: list[float]) -> str:
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return " | ".join(f"{v:.3f}" for v in q)


def nearest_rule_check(cells: dict[tuple[int, ...], float]) -> tuple[float, float, float]:
    """Leave-one-out: each cell predicted by the mean of its nearest other cells (Hamming distance over the
    action encoding). Returns the Spearman correlation, the mean absolute error and the mean distance."""
    keys = list(cells)
    matrix = np.array(keys)
    accuracy = np.array([cells[k] for k in keys])
    predicted, distances = [], []
    for i in range(len(keys)):
        d = (matrix != matrix[i]).sum(axis=1)
        d[i] = d.max() + 1
        nearest = d == d.min()
        predicted.append(accuracy[nearest].mean())
        distances.append(d.min())
    rho = spearmanr(predicted, accuracy).statistic
    return float(rho), float(np.abs(np.array(predicted) - accuracy).mean()), float(np.mean(distances))


def surrogate_check(cells: dict[tuple[int, ...], float], num_choices: tuple[int, ...]) -> tuple[float, float]:
    """Leave-one-out: each cell predicted by the table's ridge surrogate fitted to all other cells.
    Returns the Spearman correlation and the mean absolute error."""
    accuracy = np.array(list(cells.values()))
    predicted = RidgeSurrogate.leave_one_out(np.array(list(cells)), accuracy, num_choices)
    return float(spearmanr(predicted, accuracy).statistic), float(np.abs(predicted - accuracy).mean())


def report(rows: list[dict[str, Any]], published: list[dict[str, Any]], num_choices: tuple[int, ...]) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    random_cells = [r for r in ok if r["origin"] == "random" and r["seed"] == 0]
    accs = [r["val_accuracy"] for r in random_cells]
    print(f"\n### Spread: {len(accs)} uniformly sampled cells (seed 0)\n")
    print("| cells | min | p10 | median | p90 | max | p90 - p10 | max - min |\n|---|---|---|---|---|---|---|---|")
    print(f"| {len(accs)} | {_percentiles(accs)} | {np.percentile(accs, 90) - np.percentile(accs, 10):.3f} | "
          f"{max(accs) - min(accs):.3f} |")

    by_cell: dict[tuple[int, ...], dict[int, float]] = {}
    for r in ok:
        by_cell.setdefault(tuple(r["actions"]), {})[r["seed"]] = r["val_accuracy"]
    noisy = [(k, v) for k, v in by_cell.items() if len(v) >= 3]
    print(f"\n### Seed noise: {len(noisy)} cells x seeds\n")
    print("| cell | seeds | accuracies | mean | std |\n|---|---|---|---|---|")
    stds = []
    for i, (_, runs) in enumerate(noisy):
        values = [runs[s] for s in sorted(runs)]
        stds.append(float(np.std(values, ddof=1)))
        print(f"| {i} | {sorted(runs)} | {', '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} | "
              f"{stds[-1]:.4f} |")
    if stds:
        print(f"\nmean std over seeds: {np.mean(stds):.4f} (max {max(stds):.4f})")

    print("\n### Cost per child\n")
    print("| children | CPU s median | CPU s p90 | wall s median | wall s p90 |\n|---|---|---|---|---|")
    cpu, wall = [r["train_seconds"] for r in ok], [r["wall_seconds"] for r in ok]
    print(f"| {len(ok)} | {np.median(cpu):.1f} | {np.percentile(cpu, 90):.1f} | {np.median(wall):.1f} | "
          f"{np.percentile(wall, 90):.1f} |")

    if published:
        print("\n### Published cells (same child and data)\n")
        print("| cell | seeds | val accuracy | better than (random cells) | CPU s |\n|---|---|---|---|---|")
        for name in PUBLISHED:
            runs = [r for r in published if r["name"] == name and r["status"] == "ok"]
            if not runs:
                continue
            mean = float(np.mean([r["val_accuracy"] for r in runs]))
            beaten = float(np.mean([a < mean for a in accs]))
            print(f"| {name} | {len(runs)} | {mean:.3f} | {beaten:.0%} | "
                  f"{np.mean([r['train_seconds'] for r in runs]):.1f} |")

    means = {k: float(np.mean(list(v.values()))) for k, v in by_cell.items()}
    rho, mae, dist = nearest_rule_check(means)
    print(f"\n### Nearest rule, leave one out over {len(means)} table cells\n")
    print(f"Spearman {rho:.3f}, mean absolute error {mae:.3f}, mean distance to the nearest cell {dist:.1f} "
          f"decisions (of {len(next(iter(means)))})")
    rho, mae = surrogate_check(means, num_choices)
    print(f"\n### Surrogate model (evaluator.lookup=surrogate), leave one out over {len(means)} table cells\n")
    print(f"Spearman {rho:.3f}, mean absolute error {mae:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, required=True, help="the table builder's JSON-lines rows")
    parser.add_argument("--published-rows", type=Path, required=True, help="JSON-lines file for published cells")
    parser.add_argument("--noise-cells", type=int, default=3)
    parser.add_argument("--published-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    space, child, data = table_settings()
    if not args.report_only:
        first = [r["actions"] for r in read_rows(args.rows) if r["origin"] == "random" and r["seed"] == 0]
        run_jobs(space, first[:args.noise_cells], "random", args.rows, [1, 2], args.workers, child, data)
        train_published(args.published_rows, args.published_seeds, args.workers, child, data)
    report(read_rows(args.rows), read_rows(args.published_rows), tuple(space.layout.num_choices_list))


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
