"""Thread oversubscription: one child alone, and beside a competing process on the same cores.

Each row trains the same small child (the real Lightning path, :func:`cellsearch.evaluators.child.evaluate_child`)
in a fresh process with ``--threads`` torch/OpenMP threads, once alone and once while a competing
process started here runs ``--competitor-threads`` threads of matrix products. OpenMP's threads wait
for one another at the end of every parallel operator; when the cores are shared, one of them is
often descheduled and the others spin waiting for it, so a child with as many threads as cores
slows down far more than its share. A child with threads = cores it owns // processes (what
``executor.threads_per_worker`` defaults to) only loses its share.

    OMP_NUM_THREADS=1 python benchmarks/bench_contention.py --repeats 3
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from cellsearch.data import DataConfig
from cellsearch.evaluators.child import evaluate_child
data = DataConfig(name="synthetic", synthetic_train_size=320, synthetic_test_size=32, image_size=16, val_size=64,
                  loader="tensor")
child = dict(cells_per_stage=1, channels=8, epochs=1, batch_size=32, logger=None, compile=False)
evaluate_child("nasnet_a", dict(child, epochs=1, limit_train_batches=1), data)  # warm-up: imports, allocator
start = time.perf_counter()
result = evaluate_child("nasnet_a", child, data)
assert result.ok, result.error
print(time.perf_counter() - start)
"""

COMPETITOR = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(256, 256)
while True:
    a = torch.tanh(a @ a)
"""


def env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}


def train_seconds(threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], env=env(threads), capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[-1])


def beside_competitor(threads: int, competitor_threads: int) -> float:
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(competitor_threads)],
                                  env=env(competitor_threads))
    try:
        time.sleep(3.0)  # let it import torch and start working
        return train_seconds(threads)
    finally:
        competitor.kill()
        competitor.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="child threads to compare (default: the cores owned, and cores // 2)")
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the best is kept")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or sorted({cores, max(1, cores // 2)}, reverse=True)
    print(f"cores owned: {cores}; competitor: {args.competitor_threads} threads of 256x256 matmuls")
    print("| child threads | alone s | beside competitor s | slowdown |")
    print("|---|---|---|---|")
    rows = {}
    for t in threads:
        alone = min(train_seconds(t) for _ in range(args.repeats))
        shared = min(beside_competitor(t, args.competitor_threads) for _ in range(args.repeats))
        rows[t] = (alone, shared)
        print(f"| {t} | {alone:.2f} | {shared:.2f} | {shared / alone:.1f}x |", flush=True)
    if len(threads) > 1:
        many, few = threads[0], threads[-1]
        print(f"beside the competitor, {few} thread(s) train {rows[many][1] / rows[few][1]:.1f}x faster than {many}")


if __name__ == "__main__":
    main()
