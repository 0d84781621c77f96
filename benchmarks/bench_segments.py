"""What training a child in segments costs (early stopping's fidelity, cellsearch.evaluators.segments).

Trains the testbed child (``experiment=testbed_table``'s child and data, ``child.epochs=9``) of a few of the
table's cells (its first uniformly sampled cells) three ways, in one process with one torch thread, and
prints a markdown table of CPU seconds (the process's, so that other jobs on the machine count little):

- one go: ``evaluate_child`` as a search without a scheduler trains it (validated once, at the end);
- one go validated after every epoch (what a learning curve costs, segments or not);
- in segments to epochs 1, 3 and 9 (``train_segment``, each from the previous one's checkpoint), with the
  checkpoint's size after each, and whether the last segment's result is the one go's bit for bit.

A child stopped at epoch 1 costs the first segment; one that runs to the end costs all three.

    OMP_NUM_THREADS=1 python benchmarks/bench_segments.py --cells 3
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from build_testbed_table import random_cells, table_settings
from cellsearch.evaluators.base import EvalResult, Fidelity
from cellsearch.evaluators.child import evaluate_child
from cellsearch.evaluators.segments import train_segment


def timed(train: Callable[[], EvalResult]) -> tuple[EvalResult, float]:
    """The result and the CPU seconds it took; a failed child stops the benchmark."""
    start = time.process_time()
    result = train()
    if not result.ok:
        raise SystemExit(f"a child failed: {result.error}")
    return result, time.process_time() - start


def measure_cell(genotype: Any, child: dict[str, Any], data: dict[str, Any], segments: list[int],
                 seed: int) -> dict[str, Any]:
    """CPU seconds of the one-go child, the one-go child validated every epoch, and each segment."""
    whole, whole_s = timed(lambda: evaluate_child(genotype, child, data, seed))
    _, curve_s = timed(lambda: evaluate_child(genotype, {**child, "val_every_n_epochs": 1}, data, seed))
    row: dict[str, Any] = {"whole_s": whole_s, "curve_s": curve_s, "segment_s": [], "checkpoint_kb": []}
    checkpoint = None
    for epochs in segments:
        result, seconds = timed(lambda: train_segment(genotype, child, data, Fidelity(epochs, checkpoint), seed))
        checkpoint = result.checkpoint
        row["segment_s"].append(seconds)
        row["checkpoint_kb"].append(len(checkpoint) / 1024 if checkpoint else None)
    row["identical"] = all(result.metrics[key] == whole.metrics[key] for key in ("val_accuracy", "train_loss"))
    row["val_accuracy"] = whole.metrics["val_accuracy"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3, help="the table's first N uniformly sampled cells")
    parser.add_argument("--epochs", type=int, default=9, help="child.epochs")
    parser.add_argument("--segments", type=lambda s: [int(v) for v in s.split(",")], default=[1, 3, 9])
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    args = parser.parse_args()
    if args.segments[-1] != args.epochs:
        parser.error(f"--segments must end at --epochs ({args.epochs})")
    torch.set_num_threads(1)
    space, child, data = table_settings()
    child = {**child, "epochs": args.epochs}
    cells = [space.decode(actions) for actions in random_cells(space, args.cells, 0)]
    train_segment(cells[0], child, data, Fidelity(1), args.seed)  # warm-up: lazy imports and first-call costs
    labels = " | ".join(f"to {e}" for e in args.segments)
    print(f"| cell | val acc | one go s | one go, val every epoch s | {labels} (s) | all segments s | "
          f"stopped at {args.segments[0]} / one go | all segments / one go | checkpoint KB | same result |")
    print("|---" * (8 + len(args.segments)) + "|")
    rows = []
    for k, genotype in enumerate(cells):
        row = measure_cell(genotype, child, data, args.segments, args.seed)
        rows.append(row)
        sizes = " / ".join(f"{kb:.0f}" for kb in row["checkpoint_kb"] if kb is not None)
        print(f"| {k} | {row['val_accuracy']:.3f} | {row['whole_s']:.1f} | {row['curve_s']:.1f} | "
              + " | ".join(f"{s:.1f}" for s in row["segment_s"])
              + f" | {sum(row['segment_s']):.1f} | {row['segment_s'][0] / row['whole_s']:.2f} | "
              f"{sum(row['segment_s']) / row['whole_s']:.2f} | {sizes} | {'yes' if row['identical'] else 'NO'} |",
              flush=True)
    whole = sum(r["whole_s"] for r in rows)
    curve = sum(r["curve_s"] for r in rows)
    first = sum(r["segment_s"][0] for r in rows)
    total = sum(sum(r["segment_s"]) for r in rows)
    print(f"\nover {len(rows)} cells: stopped at epoch {args.segments[0]} costs {first / whole:.2f} of the one-go "
          f"child (1/{args.epochs} = {1 / args.epochs:.2f}); all segments cost {total / whole:.2f} of it and "
          f"{total / curve:.2f} of the one-go child validated every epoch; "
          f"{sum(r['identical'] for r in rows)}/{len(rows)} results identical to the one go")


if __name__ == "__main__":
    main()
