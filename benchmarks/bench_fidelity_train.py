"""Early stopping with real training: the same search on the testbed with and without a scheduler.

Runs ``python train.py experiment=testbed_table evaluator=train child.epochs=9`` (stand-alone Lightning
training of the testbed child, 9 epochs) once per scheduler, with random search and one seed, so every
run proposes the same cells and the runs differ only in how long each child trains. Prints, per
scheduler: children, how many stopped early, child-epochs trained, CPU seconds of the whole run (the
search process and its worker processes), wall seconds, and the best completed cell with its accuracy.

    OMP_NUM_THREADS=1 python benchmarks/bench_fidelity_train.py --budget 27 --schedulers none asha hyperband

CPU seconds are the figure to compare: wall times on a shared machine move with its load.
"""
from __future__ import annotations

import argparse
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(scheduler: str, budget: int, seed: int, workers: int, run_dir: Path) -> dict[str, float]:
    """One search; its cost and outcome."""
    command = [sys.executable, str(ROOT / "train.py"), "experiment=testbed_table", "evaluator=train",
               "child.epochs=9", "search=random", f"search.budget={budget}", f"seed={seed}", f"scheduler={scheduler}",
               "executor=pool", f"executor.num_workers={workers}", "executor.threads_per_worker=1",
               f"run_dir={run_dir}", "live.tensorboard=false"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with sqlite3.connect(run_dir / "trials.db") as db:
        rows = db.execute("select trial_id, status, epochs, val_accuracy from trials").fetchall()
    completed = [r for r in rows if r[1] == "ok"]
    best = max(completed, key=lambda r: r[3])
    return {"children": len(rows), "stopped": sum(r[1] == "stopped" for r in rows),
            "epochs": sum(r[2] if r[2] is not None else 9 for r in rows),
            "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), "wall": wall,
            "best_trial": best[0], "best": best[3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=27, help="children per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--schedulers", nargs="+", default=["none", "asha"])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in args.schedulers:
            results[scheduler] = run(scheduler, args.budget, args.seed, args.workers, Path(tmp) / scheduler)
    reference = results[args.schedulers[0]]
    print(f"| scheduler | children | stopped early | child-epochs | CPU s | CPU vs {args.schedulers[0]} | wall s | "
          f"best completed cell (val accuracy at 9 epochs) |")
    print("|---|---|---|---|---|---|---|---|")
    for scheduler, r in results.items():
        print(f"| {scheduler} | {r['children']} | {r['stopped']} | {r['epochs']} | {r['cpu']:.0f} | "
              f"{r['cpu'] / reference['cpu']:.2f} | {r['wall']:.0f} | trial {r['best_trial']}: {r['best']:.4f} |")


if __name__ == "__main__":
    main()
