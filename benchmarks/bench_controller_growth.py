"""Does a strategy's cost per child grow with the search? ask + tell + persistence at 100, 5,000 and 20,000 children.

Each strategy (its shipped preset, conf/search/<name>.yaml; ``ppo_paper`` is PPO with the settings
of experiment=nasnet_paper) runs one search of the largest size with 10 children in flight: 10
asked ahead, each tell followed by an ask, children finishing in random order (rewards are a cheap
hash of the trial, so only the strategy is timed). Everything is persisted in a trial store
(``trials.db``) as the search loop does it: an ask and its event commit on their own; a child's row,
the tell and its event commit together (:class:`cellsearch.search.strategy_state.StrategyState`: an
event row per ask and tell, a snapshot every 1,000 events). The table gives, for the last
``--window`` children before each size, milliseconds of this process's CPU time per child spent in
the strategy (ask + tell) and in persisting it (the trial row included), their sum, the wall time
per child, the snapshot's size and the store's. The reference, measured in the same run at each size, is what saving the whole
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
from cellsearch.evaluators.base import EvalResult
from cellsearch.progress import INTERVAL, progress_to_stderr, track
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.search.store import TrialStore
from cellsearch.search.strategy_state import StrategyState
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
    store = TrialStore(tmp / f"{name}.db")
    state = StrategyState(store)
    finish = random.Random(0)
    pending, done, rows = [], 0, []
    total, asked_told = Clock(), Clock()
    marks = {size - min(window, size): size for size in sizes}
    start_of_window = None
    while done < max(sizes):
        if done in marks and start_of_window is None:
            total, asked_told, start_of_window = Clock(), Clock(), done
        with total:
            while len(pending) < in_flight:
                with asked_told:
                    pending.append(strategy.ask())
                state.save(strategy)  # commits on its own
            proposal = pending.pop(finish.randrange(len(pending)))
            reward = random.Random(proposal.trial_id).random()
            with store.transaction():  # the row and the tell commit together
                store.add(proposal.trial_id, proposal.genotype, EvalResult("ok", {"val_accuracy": reward}, 1.0), reward)
                with asked_told:
                    strategy.tell(proposal.trial_id, reward)
                state.save(strategy)
        done += 1
        if start_of_window is not None and done == marks[start_of_window]:
            n = done - start_of_window
            old = 2 * whole_state_save_ms(strategy, tmp / "whole.pt")
            rows.append(f"| {name} | {done:,} | {1000 * asked_told.cpu / n:.2f} | "
                        f"{1000 * (total.cpu - asked_told.cpu) / n:.2f} | **{1000 * total.cpu / n:.2f}** | {1000 * total.wall / n:.2f} | "
                        f"{old:.1f} | {len(store.snapshot()) / 1e3:.0f} | {store_size(store.path) / 1e6:.2f} |")
            print(rows[-1], flush=True)
            start_of_window = None
    store.close()
    return rows


def store_size(path: Path) -> int:
    """Bytes of a trial store with its write-ahead log."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


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
          "wall, ms/child | whole state saved twice (old), ms/child | snapshot kB | trials.db MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in track(args.strategies, "bench_controller_growth", units="strategies", heartbeat=INTERVAL):
            run(name, sorted(args.sizes), args.window, args.in_flight, Path(tmp))


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the table on stdout stays clean
    main()
