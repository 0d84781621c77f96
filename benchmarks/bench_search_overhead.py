"""How much of a search is search, and how much is bookkeeping?

Part 1 times the controller alone: ask + tell + the strategy state saved after each (as the loop
does), per child, for every strategy, with no child trained.
Part 2 runs real searches of cheap children (tiny networks on small synthetic images) through
:class:`cellsearch.search.loop.SearchLoop` with the local executor and with the pool executor at several
worker counts, and splits the main process's time per child into the strategy, the trial store,
the rest of the loop (state file, best_cell.yaml, logging, submitting) and waiting for children.
It reports the overhead against the child's own training time, and worker utilisation: the
children's training seconds over (wall time x workers).

    python benchmarks/bench_search_overhead.py [--children 16] [--workers 1 2] [--controller-children 200]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from cellsearch.evaluators.child import ChildConfig
from cellsearch.data import DataConfig
from cellsearch.evaluators import TrainEvaluator
from cellsearch.search.executors import LocalExecutor, PoolExecutor
from cellsearch.space.genotype import SearchSpace
from cellsearch.search.loop import SearchLoop
from cellsearch.search.strategy_state import StrategyState
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy

CHEAP_OPS = ("identity", "avg_pool_3x3", "max_pool_3x3", "conv_1x1", "conv_3x3")  # fast on CPUs
STRATEGY_SETTINGS = {"ppo": {}, "reinforce": {}, "random": {}, "evolution": {"population_size": 20, "sample_size": 5},
                     "progressive": {"num_initial": 32, "beam_size": 16}}


class Timed:
    """Forwards attribute access to ``target`` and adds the wall time of the named methods to ``seconds``."""

    def __init__(self, target: object, prefix: str, methods: tuple[str, ...], seconds: dict[str, float]):
        self._target, self._prefix, self._methods, self._seconds = target, prefix, methods, seconds

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        if name not in self._methods:
            return value

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._seconds[f"{self._prefix}.{name}"] += time.perf_counter() - start
        return timed


class TimedStore(TrialStore):
    """A trial store that adds the time of its writes to ``seconds['store']``."""

    def __init__(self, path: Path, seconds: dict[str, float]):
        super().__init__(path)
        self.seconds = seconds

    def add(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().add(*args, **kwargs)
        finally:
            self.seconds["store"] += time.perf_counter() - start


def controller_costs(num_children: int, space: SearchSpace, threads: int) -> None:
    """Milliseconds per child of ask, tell and saving the state, for each strategy (no training)."""
    torch.set_num_threads(threads)
    print(f"\n[1] controller alone, {threads} torch thread(s): {num_children} children, {space.num_blocks} blocks x "
          f"{len(space.ops)} ops, class defaults (evolution P=20), state stored as the loop does")
    print(f"{'strategy':<12} {'ask ms':>8} {'tell ms':>8} {'save ms':>8} {'total ms/child':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in STRATEGY_SETTINGS.items():
            strategy = build_strategy(name, space, seed=0, **settings)
            store = TrialStore(Path(tmp) / f"{name}.db")
            state_files = StrategyState(store)
            times = defaultdict(float)
            for i in range(num_children):
                start = time.perf_counter()
                proposal = strategy.ask()
                times["ask"] += time.perf_counter() - start
                start = time.perf_counter()
                state_files.save(strategy)
                times["save"] += time.perf_counter() - start
                start = time.perf_counter()
                strategy.tell(proposal.trial_id, (i % 7) / 10)
                times["tell"] += time.perf_counter() - start
                start = time.perf_counter()
                state_files.save(strategy)
                times["save"] += time.perf_counter() - start
            store.close()
            ms = {k: 1000 * v / num_children for k, v in times.items()}
            print(f"{name:<12} {ms['ask']:>8.2f} {ms['tell']:>8.2f} {ms['save']:>8.2f} {sum(ms.values()):>15.2f}")


def warm_up(executor, space: SearchSpace, num_children: int) -> None:
    """Train one child per worker so that process start-up and imports are not counted as search time."""
    rng = random.Random(0)
    for i in range(num_children):
        executor.submit(-1 - i, space.sample(rng))
    done = 0
    while done < num_children:
        done += len(executor.wait())


def search_costs(num_children: int, workers: list[int], space: SearchSpace, strategy_name: str) -> None:
    """Overhead per child of the real loop with cheap children, and worker utilisation."""
    child = ChildConfig(cells_per_stage=1, channels=8, epochs=1, batch_size=64, accelerator="cpu", logger=None)
    data = DataConfig(name="synthetic", synthetic_train_size=512, synthetic_test_size=64, image_size=16)
    cores = os.cpu_count() or 1
    print(f"\n[2] {strategy_name} search, {num_children} children after one warm-up child per worker "
          f"(N=1, F=8, 1 epoch on 410 synthetic 16x16 images), {cores} CPU cores")
    print(f"{'executor':<10} {'startup s':>9} {'wall s':>7} {'child s':>8} {'strategy ms':>12} {'store ms':>9} "
          f"{'submit ms':>10} {'other ms':>9} {'overhead/child':>15} {'utilisation':>12}")
    for num_workers in workers:
        seconds: dict[str, float] = defaultdict(float)
        if num_workers == 0:  # children train in this process, with all cores
            label, executor = "local", LocalExecutor(TrainEvaluator(child, data), seed=0)
            torch.set_num_threads(cores)
        else:  # as run_search does: one thread for the controller, the cores for the workers
            label = f"pool x{num_workers}"
            executor = PoolExecutor(TrainEvaluator(child, data), seed=0, num_workers=num_workers,
                                    threads_per_worker=max(1, cores // num_workers))
            torch.set_num_threads(1)
        startup = time.perf_counter()
        warm_up(executor, space, max(1, num_workers))
        startup = time.perf_counter() - startup
        strategy = build_strategy(strategy_name, space, seed=0, **STRATEGY_SETTINGS[strategy_name])
        timed_strategy = Timed(strategy, "strategy", ("ask", "tell", "state_dict", "pending"), seconds)
        timed_executor = Timed(executor, "executor", ("wait", "submit"), seconds)
        with tempfile.TemporaryDirectory() as tmp, TimedStore(Path(tmp) / "trials.db", seconds) as store:
            start = time.perf_counter()
            try:
                SearchLoop(timed_strategy, timed_executor, store, tmp, num_children).run()
            finally:
                executor.close()
            wall = time.perf_counter() - start
            rows = store.rows()
        child_seconds = [r.seconds for r in rows]
        strategy_s = sum(v for k, v in seconds.items() if k.startswith("strategy."))
        other_s = wall - strategy_s - seconds["store"] - seconds["executor.wait"]
        per_child = {k: 1000 * v / num_children for k, v in (("strategy", strategy_s), ("store", seconds["store"]),
                                                              ("submit", seconds["executor.submit"]),
                                                              ("other", other_s - seconds["executor.submit"]))}
        overhead = sum(per_child.values()) / 1000 / statistics.mean(child_seconds)
        utilisation = sum(child_seconds) / (wall * max(1, num_workers))  # steady state: start-up excluded
        print(f"{label:<10} {startup:>9.1f} {wall:>7.1f} {statistics.mean(child_seconds):>8.2f} "
              f"{per_child['strategy']:>12.1f} {per_child['store']:>9.1f} {per_child['submit']:>10.1f} "
              f"{per_child['other']:>9.1f} {overhead:>14.2%} {utilisation:>12.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=16, help="children per search in part 2")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="0 = local executor, n = pool executor with n worker processes")
    parser.add_argument("--controller-children", type=int, default=200)
    parser.add_argument("--strategy", default="ppo", choices=sorted(STRATEGY_SETTINGS))
    args = parser.parse_args()
    for threads in sorted({1, os.cpu_count() or 1}):
        controller_costs(args.controller_children, SearchSpace(), threads)
    search_costs(args.children, args.workers, SearchSpace(ops=CHEAP_OPS, num_blocks=3), args.strategy)


if __name__ == "__main__":
    main()
