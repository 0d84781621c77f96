"""Do the strategies find better cells than random search at the same cost? Seconds per search on landscapes.

Every strategy runs through the public ask-and-tell API against the reward landscapes of
:mod:`cellsearch.evaluators.landscape` (one landscape per family and seed) over the search space
``--space`` (NASNet's cells by default; ``nasrl`` and ``hierarchical`` as conf/space/<name>.yaml sets
them, and their testbed tables), with ``--in-flight``
children pending at any time that finish in random order, as with that many workers. A search of
budget B stops after B children. For each family and budget it prints, per strategy, the mean
over seeds (with the standard deviation) of the best reward found and of the mean reward of the
last 20% of children, both as a difference to random search with the same seeds, and marks where a
strategy does not beat random beyond the seed spread. It also prints the best of 10B random cells
(the stretch target) and draws best-so-far curves with seed bands to ``--plot``.

    python benchmarks/bench_search_quality.py                       # shipped presets, budgets 100 and 300, 5 seeds
    python benchmarks/bench_search_quality.py --budgets 100 --seeds 10 --families structure structure_wiring
    python benchmarks/bench_search_quality.py --strategies ppo random --budgets 100 --seeds 3
    python benchmarks/bench_search_quality.py --set ppo:lr=0.003 --set ppo:update_every=5   # try settings
    python benchmarks/bench_search_quality.py --space nasrl --budgets 100 --seeds 5          # NAS-RL's layers
    python benchmarks/bench_search_quality.py --space hierarchical --families additive table  # motifs

Strategies that do not search ``--space`` (``Strategy.spaces``) are left out, with a line saying so.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
import yaml

from cellsearch.evaluators.landscape import build_landscape, landscape_families
from cellsearch.evaluators.table import TableEvaluator, load_table
from cellsearch.progress import INTERVAL, StepProgress, progress_to_stderr
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.space.spaces import SPACE_CLASSES, Space, space_from_settings
from cellsearch.strategies import STRATEGIES as STRATEGY_CLASSES, build_strategy

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("ppo", "reinforce", "evolution", "progressive", "random")
# Each space's testbed table (benchmarks/build_testbed_table.py), read by the table families.
SPACE_TABLES = {"nasnet": "testbed", "nasrl": "testbed_nasrl", "hierarchical": "testbed_hierarchical"}


def default_strategy(space: str) -> str:
    """The space's default strategy, as its preset chooses it (conf/config.yaml for NASNet's cells,
    conf/experiment/testbed_<space>.yaml for the others)."""
    if space == "nasnet":
        defaults = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
        return next(entry["search"] for entry in defaults if isinstance(entry, dict) and "search" in entry)
    defaults = yaml.safe_load((ROOT / "conf" / "experiment" / f"testbed_{space}.yaml").read_text())["defaults"]
    return next(entry["override /search"] for entry in defaults if "override /search" in entry)


def space_settings(name: str) -> Space:
    """The search space ``name`` as conf/space/<name>.yaml sets it."""
    return space_from_settings(yaml.safe_load((ROOT / "conf" / "space" / f"{name}.yaml").read_text()))


def searches(name: str, space: Space) -> bool:
    """Whether strategy ``name`` searches ``space`` (its ``Strategy.spaces``)."""
    spaces = STRATEGY_CLASSES[name].spaces
    return spaces is None or space.name in spaces


def preset(name: str) -> dict:
    """The strategy's settings as shipped in conf/search/<name>.yaml (without the Hydra and budget keys)."""
    cfg = yaml.safe_load((ROOT / "conf" / "search" / f"{name}.yaml").read_text())
    return {k: v for k, v in cfg.items() if k != "_target_" and k not in RUN_OPTIONS}


def run_search(name: str, settings: dict, landscape, seed: int, budget: int, in_flight: int) -> list[float]:
    """Rewards of one simulated asynchronous search, in the order the children finished."""
    strategy = build_strategy(name, landscape.space, seed=seed, **settings)
    finish = random.Random(f"finish:{seed}")
    pending, rewards = [], []
    while len(rewards) < budget:
        while len(pending) < in_flight and strategy.num_asked < budget:
            pending.append(strategy.ask())
        proposal = pending.pop(finish.randrange(len(pending)))
        reward = landscape(proposal.genotype, noise_seed=(seed, proposal.trial_id))
        strategy.tell(proposal.trial_id, reward)  # None: a failed child, as the search loop tells it
        rewards.append(0.0 if reward is None else reward)
    return rewards


TABLE_FAMILIES = {"table": "nearest", "table_surrogate": "surrogate"}  # family -> evaluator.lookup


class TableLandscape:
    """A shipped testbed table as a landscape over the space it covers: a genotype's reward is its trained
    accuracy by the nearest rule (family ``table``) or the table's surrogate model (``table_surrogate``).
    No noise is added (the table stores seed means; the surrogate pools every row)."""

    def __init__(self, name: str = "testbed", lookup: str = "nearest") -> None:
        self.space = load_table(name).space
        self.evaluator = TableEvaluator(name, lookup=lookup)

    def __call__(self, genotype, noise_seed=None) -> float | None:
        # A cell the table cannot score (progressive search's smaller cells: the table holds full-size
        # ones) is a failed child: None, which the strategy learns from as its failure_reward, and
        # which counts as 0 in the statistics.
        result = self.evaluator.evaluate(genotype)
        return result.metrics["val_accuracy"] if result.ok else None


def make_landscape(family: str, space: Space, seed: int, noise: float):
    """The landscape of ``family`` for ``seed`` (the tables have no seed: one table for every seed; they
    cover their own, smaller, space of the same kind as ``space``)."""
    if family in TABLE_FAMILIES:
        return TableLandscape(SPACE_TABLES[space.name], lookup=TABLE_FAMILIES[family])
    return build_landscape(space, family, seed=seed, noise=noise)


def best_so_far(rewards: list[float]) -> list[float]:
    out, best = [], float("-inf")
    for r in rewards:
        best = max(best, r)
        out.append(best)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(family: str, budget: int, runs: dict[str, list[list[float]]], random10: list[float],
          default: str = "") -> list[str]:
    """Markdown rows: best and last-20% mean per strategy, and their gain over random (seed-paired);
    ``default`` is marked as the space's default strategy."""
    tail = max(1, budget // 5)
    base_best = [max(r) for r in runs["random"]]
    base_tail = [statistics.fmean(r[-tail:]) for r in runs["random"]]
    lines = [f"| {family} | strategy | best | last 20% mean | best - random | last 20% - random | beats random |",
             "|---|---|---|---|---|---|---|"]
    for name, traces in runs.items():
        best = [max(r) for r in traces]
        last = [statistics.fmean(r[-tail:]) for r in traces]
        d_best = [a - b for a, b in zip(best, base_best)]
        d_tail = [a - b for a, b in zip(last, base_tail)]
        (mb, sb), (mt, st) = mean_sd(best), mean_sd(last)
        (mdb, sdb), (mdt, sdt) = mean_sd(d_best), mean_sd(d_tail)
        wins = "-" if name == "random" else ("yes" if mdb > 0 and mdt > 0 else "NO")
        label = f"{name} (default)" if name == default else name
        lines.append(f"| | {label} | {mb:.3f} +- {sb:.3f} | {mt:.3f} +- {st:.3f} | {mdb:+.3f} +- {sdb:.3f} | "
                     f"{mdt:+.3f} +- {sdt:.3f} | {wins} |")
    m10, s10 = mean_sd(random10)
    lines.append(f"| | random, {10 * budget} children | {m10:.3f} +- {s10:.3f} | | | | |")
    return lines


def plot(curves: dict, budgets: list[int], families: list[str], path: Path) -> None:
    """Best-so-far curves (mean over seeds, band = min..max) per family and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(budgets), len(families), figsize=(3.6 * len(families), 3.0 * len(budgets)),
                             squeeze=False)
    for row, budget in enumerate(budgets):
        for col, family in enumerate(families):
            ax = axes[row][col]
            for name, traces in curves[family, budget].items():
                t = torch.tensor([best_so_far(r) for r in traces])
                x = range(1, budget + 1)
                line, = ax.plot(x, t.mean(0).tolist(), label=name, lw=1.2)
                ax.fill_between(x, t.min(0).values.tolist(), t.max(0).values.tolist(), color=line.get_color(),
                                alpha=0.15, lw=0)
            ax.set_title(f"{family}, budget {budget}", fontsize=9)
            ax.set_xlabel("children", fontsize=8)
            ax.set_ylabel("best reward so far", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        name, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        out.setdefault(name, {})[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nasnet", choices=list(SPACE_CLASSES),
                        help="the search space (as conf/space/<name>.yaml sets it); the table families read "
                             "that space's testbed table")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--families", nargs="+", default=None,
                        help="reward-landscape families (default: all the space has): the per-decision ones "
                             "(additive, epistatic, rugged, deceptive), 'structure' and 'structure_wiring' (the "
                             "space's global structure: for cells receptive field, depth, width, size, op mix), "
                             "'table' (the space's testbed table, nearest rule) and 'table_surrogate' (its "
                             "surrogate model)")
    parser.add_argument("--budgets", nargs="+", type=int, default=[100, 300])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.2, help="landscape noise (standard deviations of z)")
    parser.add_argument("--set", action="append", default=[], metavar="STRATEGY:KEY=VALUE",
                        help="override a shipped setting, e.g. ppo:lr=0.003")
    parser.add_argument("--plot", type=lambda v: Path(v) if v else None,
                        default=ROOT / "benchmarks" / "search_quality.png", help="curves to this PNG; '' for none")
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = space_settings(args.space)
    known = [*landscape_families(space), *TABLE_FAMILIES]
    args.families = args.families or known
    unknown = [f for f in args.families if f not in known]
    if unknown:
        parser.error(f"--families: {unknown} are not families of space={space.name}; choose from {known}")
    overrides = parse_overrides(args.set)
    names = [n for n in args.strategies if n != "random" and searches(n, space)] + ["random"]
    left_out = [n for n in args.strategies if n not in names]
    settings = {n: {**preset(n), **overrides.get(n, {})} for n in names}
    print(f"search space: {space.settings()}; {args.seeds} seeds; {args.in_flight} children in flight; "
          f"landscape noise {args.noise}")
    if left_out:
        print(f"left out (they do not search space={space.name}): {', '.join(left_out)}")
    for n in names:
        print(f"  {n}: {settings[n]}")
    curves: dict = {}
    seconds = {n: 0.0 for n in names}
    progress = StepProgress("bench_search_quality", len(args.budgets) * len(args.families) * args.seeds * len(names),
                            units="searches", heartbeat=INTERVAL)
    for budget in args.budgets:
        print(f"\n### budget {budget} children\n")
        for family in args.families:
            runs: dict[str, list[list[float]]] = {n: [] for n in names}
            random10 = []
            for seed in range(args.seeds):
                landscape = make_landscape(family, space, seed, args.noise)
                for n in names:
                    start = time.perf_counter()
                    runs[n].append(run_search(n, settings[n], landscape, seed, budget, args.in_flight))
                    seconds[n] += time.perf_counter() - start
                    progress.update(note=f"budget {budget}, {family}, seed {seed}, {n}")
                rng = random.Random(f"random10:{seed}")
                random10.append(max(landscape(landscape.space.sample(rng), noise_seed=(seed, -i))
                                    for i in range(10 * budget)))
            curves[family, budget] = runs
            print("\n".join(table(family, budget, runs, random10, default_strategy(space.name))), flush=True)
    print("\nstrategy seconds in total (ask + tell + landscape): "
          + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()))
    if args.plot:
        plot(curves, args.budgets, args.families, args.plot)
        print(f"curves: {args.plot}")


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
