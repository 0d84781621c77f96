"""Do zero-cost scores predict trained accuracy better than the parameter count? (the pre-judger's question)

Samples ``--cells`` random cells, trains each as a search child would be (stand-alone Lightning
training, the same child settings for all), scores each untrained with every zero-cost score (one
fixed minibatch, fixed initial weights), and prints per score the Spearman and Kendall rank
correlation with trained accuracy, the seconds one score costs (median), and whether the score beats
``params``, the baseline. The trained accuracies are the reference measured in the same run.

Default task: experiment=quick_cpu's (digits, N=1, F=8, 3 epochs, 3 blocks of 7 cheap ops), where
the cells this project ships for CPUs differ most in accuracy at a cost a CPU can pay.

    OMP_NUM_THREADS=1 python benchmarks/bench_prejudge.py                  # 30 cells
    python benchmarks/bench_prejudge.py --cells 60 --epochs 5 --seed 1
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from cellsearch.evaluators.child import ChildConfig, evaluate_child
from cellsearch.evaluators.zero_cost import SCORES, ZeroCostScorer, kendall_tau, spearman_rho, top_k_precision
from cellsearch.space.genotype import SearchSpace

QUICK_CPU_OPS = ("identity", "conv_1x3_3x1", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3", "conv_1x1", "conv_3x3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--batch-size", type=int, default=64, help="images in the scores' minibatch")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = SearchSpace(ops=QUICK_CPU_OPS, num_blocks=3)
    rng = random.Random(args.seed)
    cells = [space.sample(rng) for _ in range(args.cells)]
    child = ChildConfig(cells_per_stage=1, channels=8, epochs=args.epochs, batch_size=64, accelerator="cpu",
                        logger=None)
    data = {"name": args.data}

    accuracies, train_seconds = [], []
    for i, genotype in enumerate(cells):
        result = evaluate_child(genotype, child, data, seed=args.seed)
        if not result.ok:
            raise SystemExit(f"cell {i} failed to train: {result.error}")
        accuracies.append(result.metric("val_accuracy"))
        train_seconds.append(result.seconds)
        print(f"trained {i + 1}/{len(cells)}: val_accuracy {accuracies[-1]:.4f} in {result.seconds:.1f} s", flush=True)

    rows = []
    for name in SCORES:
        scorer = ZeroCostScorer(name, child, data, seed=args.seed, batch_size=args.batch_size)
        scorer.minibatch()  # loading the data is not the score's cost
        values, seconds, _ = zip(*(scorer(g) for g in cells))
        values = [float("-inf") if v is None else v for v in values]
        rows.append((name, spearman_rho(values, accuracies), kendall_tau(values, accuracies),
                     top_k_precision(values, accuracies, args.top_k), statistics.median(seconds)))

    baseline = next(r for r in rows if r[0] == "params")
    print(f"\n{args.cells} cells, {args.data}, N=1 F=8 {args.epochs} epochs; accuracy {min(accuracies):.3f}.."
          f"{max(accuracies):.3f}; training {statistics.median(train_seconds):.1f} s/cell (median), "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    header = f"| score | Spearman | Kendall tau | top-{args.top_k} precision | s/score (median) | vs params (Kendall) |"
    print(header)
    print("|" + "---|" * 6)
    for name, rho, tau, precision, sec in rows:
        verdict = "baseline" if name == "params" else ("beats" if tau > baseline[2] else "loses")
        print(f"| {name} | {rho:.3f} | {tau:.3f} | {precision:.2f} | {sec:.3f} | {verdict} |")
    print(f"\nscore cost vs training: params {baseline[4]:.3f} s, training {statistics.median(train_seconds):.1f} s "
          f"per cell (median) = {statistics.median(train_seconds) / max(max(r[4] for r in rows), 1e-9):.0f}x the "
          f"dearest score")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
