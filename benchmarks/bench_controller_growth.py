"""Does a strategy's cost per child grow with the search? ask + tell + persistence at 100, 5,000 and 20,000 children.

Each strategy (its shipped preset, conf/search/<name>.yaml; ``ppo_paper`` is PPO with the settings
of experiment=nasnet_paper) runs one search of the largest size with 10 children in flight: 10
asked ahead, each tell followed by an ask, children finishing in random order (rewards are a cheap
hash of the trial, so only the strategy is timed). After every ask and every tell its state is
persisted as the search loop does it (:class:`cellsearch.search.strategy_state.StrategyStateFiles`:
a journal record per event, a snapshot every 1,000 events). The table gives, for the last
``--window`` children before each size, milliseconds of this process's CPU time per child spent in
the strategy (ask + tell) and in persisting it, their sum, the wall time per child, and the
files' sizes. The reference, measured in the same run at each size, is what saving the whole
state twice per child (the format before the journal) would cost there.

    OMP_NUM_THREADS=1 python benchmarks/bench_controller_growth.py       # every strategy, 100 / 5,000 / 20,000
    python benchmarks/bench_controller_growth.py --strategies evolution --sizes 100 1000
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench_search_quality import ROOT, preset
from cellsearch.progress import INTERVAL, progress_to_stderr, track
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.search.strategy_state import StrategyStateFiles
from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies import build_strategy


class Clock:
    """Wall and CPU seconds spent inside ``with clock:`` blocks."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def whole_state_save_ms(strategy, path: Path) -> float:
    """Milliseconds of one ``torch.save(strategy.state_dict())``: the old per-event cost."""
    start = time.perf_counter()
    torch.save(strategy.state_dict(), path)
    return 1000 * (time.perf_counter() - start)


def settings(name: str) -> tuple[str, dict]:
    """Strategy name and settings: the shipped preset, or for ppo_paper PPO with experiment=nasnet_paper's."""
    if name != "ppo_paper":
        return name, preset(name)
    paper = yaml.safe_load((ROOT / "conf" / "experiment" / "nasnet_paper.yaml").read_text())["search"]
    return "ppo", {**preset("ppo"), **{k: v for k, v in paper.items() if k not in RUN_OPTIONS}}


def run(name: str, sizes: list[int], window: int, in_flight: int, tmp: Path) -> list[str]:
    """One search to the largest size; a table row per size."""
    strategy_name, strategy_settings = settings(name)
    strategy = build_strategy(strategy_name, SearchSpace(), seed=0, **strategy_settings)
    files = StrategyStateFiles(tmp / f"{name}.pt")
    finish = random.Random(0)
    pending, done, rows = [], 0, []
    total, persist = Clock(), Clock()
    marks = {size - min(window, size): size for size in sizes}
    start_of_window = None
    while done < max(sizes):
        if done in marks and start_of_window is None:
            total, persist, start_of_window = Clock(), Clock(), done
        with total:
            while len(pending) < in_flight:
                pending.append(strategy.ask().trial_id)
                with persist:
                    files.save(strategy)
            trial_id = pending.pop(finish.randrange(len(pending)))
            strategy.tell(trial_id, random.Random(trial_id).random())
            with persist:
                files.save(strategy)
        done += 1
        if start_of_window is not None and done == marks[start_of_window]:
            n = done - start_of_window
            old = 2 * whole_state_save_ms(strategy, tmp / "whole.pt")
            rows.append(f"| {name} | {done:,} | {1000 * (total.cpu - persist.cpu) / n:.2f} | "
                        f"{1000 * persist.cpu / n:.2f} | **{1000 * total.cpu / n:.2f}** | {1000 * total.wall / n:.2f} | "
                        f"{old:.1f} | {files.path.stat().st_size / 1e3:.0f} | "
                        f"{files.journal_path.stat().st_size / 1e6:.2f} |")
            print(rows[-1], flush=True)
            start_of_window = None
    files.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+",
                        default=["random", "evolution", "reinforce", "ppo", "ppo_paper", "progressive"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 5000, 20000])
    parser.add_argument("--window", type=int, default=1000, help="children timed before each size")
    parser.add_argument("--in-flight", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.in_flight} children in flight; {torch.get_num_threads()} thread(s); CPU ms per child over the last "
          f"{args.window} children before each size\n")
    print("| strategy | children | strategy ask + tell, ms/child | persistence, ms/child | total, ms/child | "
          "wall, ms/child | whole state saved twice (old), ms/child | snapshot kB | journal MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in track(args.strategies, "bench_controller_growth", units="strategies", heartbeat=INTERVAL):
            run(name, sorted(args.sizes), args.window, args.in_flight, Path(tmp))


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the table on stdout stays clean
    main()
