"""Does early stopping pay? Search quality at equal compute (child-epochs), with and without a scheduler.

Every search is the search loop with one worker, written out: the strategy proposes a child
(``ask``), the child trains rung by rung (``evaluate(..., fidelity=Fidelity(epochs=rung, checkpoint))``
on the table with learning curves or a reward landscape with curve shapes), each new epoch goes to the
scheduler (``report``) until it stops the child or the child completes, and the strategy learns the
scheduler's ``reward`` (``tell``). Compute is counted in child-epochs: a child stopped after one epoch
costs 1, a complete one ``epochs`` (9).

The cell a search names is the complete child with the highest final accuracy it observed (one
training run on the table, the landscape's noisy reward); its reward here is that cell's truth (the
table's mean over seeds of the final accuracy, or the landscape's noise-free reward). For each
problem and method it prints, over ``--seeds`` seeds (mean +- sd): that reward at ``--budget``
child-epochs, its difference to the default search without a scheduler (seed-paired), the regret to
the table's best cell, and the child-epochs needed to reach the target: the reward full-fidelity
random search names with 10x the budget (same seed); a search past the budget goes on until it reaches
the target or has spent ``--cap`` child-epochs.
``--rules`` also compares what a strategy learns from a stopped child (the scheduler's
``reward_rule``) for every strategy, at ``--budget``.

    python benchmarks/bench_fidelity.py                                # the results in the docs (~6 CPU min)
    python benchmarks/bench_fidelity.py --problems table --seeds 3 --cap 900 --rules none   # a quick look
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from cellsearch.evaluators.base import Evaluator, Fidelity
from cellsearch.evaluators.landscape import LandscapeEvaluator
from cellsearch.evaluators.landscapes import FAMILIES, Landscape
from cellsearch.evaluators.table import TableEvaluator, load_table
from cellsearch.progress import INTERVAL, StepProgress, progress_to_stderr
from cellsearch.search.schedulers import ASHA, Hyperband
from cellsearch.search.settings import RUN_OPTIONS
from cellsearch.space.genotype import Genotype, SearchSpace
from cellsearch.strategies import build_strategy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STRATEGY = next(entry["search"] for entry in yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
                        if isinstance(entry, dict) and "search" in entry)
STRATEGIES = ("ppo", "reinforce", "evolution", "progressive", "random")
SCHEDULERS = ("none", "asha", "hyperband")
RULES = ("last", "rank", "scaled")
TABLE = "testbed_curves"
EPOCHS = 9  # the table's child; the landscapes' curves are as long
MIN_EPOCHS, ETA = 1, 3  # rungs at epochs 1 and 3 of 9


@dataclass
class Problem:
    """What a search is run on: the evaluator it sees (noisy) and the truth it is judged by."""

    name: str
    space: SearchSpace
    evaluator: Evaluator
    truth: Callable[[Genotype], float]
    best: float | None = None  # the best truth there is, where known (the table's best cell)


def make_problem(name: str, seed: int, table_name: str = TABLE) -> Problem:
    """``table`` (a table with curves: one training run per trial, truth = seed mean) or ``<family>:<curve>``."""
    if name == "table":
        table = load_table(table_name)
        truth = TableEvaluator(table_name, runs="mean")
        return Problem(name, table.space, TableEvaluator(table_name, runs="one"),
                       lambda g: truth.evaluate(g).metrics["val_accuracy"], max(r.mean_accuracy for r in table.rows))
    family, _, curve = name.partition(":")
    space = SearchSpace()
    evaluator = LandscapeEvaluator(space, family, seed=seed, noise=0.2, curve=curve or "saturating", epochs=EPOCHS)
    landscape = Landscape(space, family, seed=seed, noise=0.2)
    return Problem(name, space, evaluator, lambda g: landscape.reward(g))


def make_scheduler(name: str, rule: str) -> ASHA | None:
    """The scheduler ``name`` with rungs at 1 and 3 of 9 epochs (``scaled``: ``last``, rescaled by the bench)."""
    scheduler_rule = "last" if rule == "scaled" else rule
    if name == "none":
        return None
    cls = {"asha": ASHA, "hyperband": Hyperband}[name]
    return cls(min_epochs=MIN_EPOCHS, max_epochs=EPOCHS, reduction_factor=ETA, reward_rule=scheduler_rule)


def scaled_reward(scheduler: ASHA, trial_id: int) -> float:
    """A stopped child's last value times (median final value / median value at its epoch) over the children
    so far: its accuracy scaled to a full child's, so stopped and complete children share one scale."""
    epoch, value = scheduler.curve(trial_id)[-1]
    if epoch == scheduler.max_epochs:
        return value
    at_epoch, final = [], []
    for other in scheduler.trial_ids():
        points = dict(scheduler.curve(other))
        if epoch in points:
            at_epoch.append(points[epoch])
        if scheduler.max_epochs in points:
            final.append(points[scheduler.max_epochs])
    if not final or not statistics.median(at_epoch) > 0:
        return value
    return value * statistics.median(final) / statistics.median(at_epoch)


@dataclass
class Trace:
    """One search: after each child, the compute spent so far and the truth of the cell named so far."""

    compute: list[int] = field(default_factory=list)
    named: list[float] = field(default_factory=list)  # nan until a child completes
    children: int = 0

    def at(self, budget: int) -> float:
        """The truth of the cell named when ``budget`` child-epochs were spent (the last child within it)."""
        value = math.nan
        for spent, truth in zip(self.compute, self.named):
            if spent > budget:
                break
            value = truth
        return value

    def reach(self, target: float) -> int | None:
        """The child-epochs spent when the named cell's truth first reached ``target``; None: never."""
        return next((c for c, t in zip(self.compute, self.named) if t >= target - 1e-12), None)


def train_child(evaluator: Evaluator, genotype: Genotype, trial_id: int, seed: int,
                scheduler: ASHA | None) -> tuple[float | None, int, float | None]:
    """Train one child rung by rung, as the search loop does with one worker.

    Returns:
        (the last value observed or None if it failed, epochs trained, the final value if it completed).
    """
    stops = scheduler.rungs(scheduler.bracket(trial_id)) + [EPOCHS] if scheduler else [EPOCHS]
    checkpoint, trained, value = None, 0, None
    for target in stops:
        result = evaluator.evaluate(genotype, trial_id, seed, fidelity=Fidelity(target, checkpoint))
        if not result.ok:
            return None, trained, None
        go = True
        for point in result.curve:
            if point.epoch > trained:
                value, trained = point.val_accuracy, point.epoch
                go = scheduler.report(trial_id, point.epoch, point.val_accuracy) if scheduler else True
        checkpoint = result.checkpoint
        if not go:
            return value, trained, None
    return value, trained, value


def run_search(problem: Problem, strategy_name: str, settings: dict, scheduler_name: str, rule: str, seed: int,
               budget: int, cap: int | None = None, target: float | None = None) -> Trace:
    """One search: to ``budget`` child-epochs, then on until the named cell reaches ``target`` or ``cap`` is spent
    (the last child may end past either; :meth:`Trace.at` leaves it out)."""
    strategy = build_strategy(strategy_name, problem.space, seed=seed, **settings)
    scheduler = make_scheduler(scheduler_name, rule)
    trace, spent, named_value, named_truth = Trace(), 0, -math.inf, math.nan
    cap = max(budget, cap or budget)
    while spent < budget or (spent < cap and target is not None and not named_truth >= target - 1e-12):
        proposal = strategy.ask()
        value, trained, final = train_child(problem.evaluator, proposal.genotype, proposal.trial_id, seed, scheduler)
        spent += trained
        if value is None:
            reward = None  # a failed child (progressive's smaller cells on the table): its failure_reward
        elif scheduler is None:
            reward = value
        else:
            reward = scaled_reward(scheduler, proposal.trial_id) if rule == "scaled" else \
                scheduler.reward(proposal.trial_id)
        strategy.tell(proposal.trial_id, reward)
        if final is not None and final > named_value:
            named_value, named_truth = final, problem.truth(proposal.genotype)
        trace.compute.append(spent)
        trace.named.append(named_truth)
        trace.children += 1
    return trace


def preset(name: str) -> dict:
    """The strategy's settings as shipped in conf/search/<name>.yaml (without the Hydra and budget keys)."""
    cfg = yaml.safe_load((ROOT / "conf" / "search" / f"{name}.yaml").read_text())
    return {k: v for k, v in cfg.items() if k != "_target_" and k not in RUN_OPTIONS}


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {sd:.3f}"


def quality_table(name: str, best: float | None, runs: dict[tuple[str, str], list[Trace]], targets: list[float],
                  budget: int, cap: int) -> list[str]:
    """Markdown rows: reward at the budget, paired difference to the default without a scheduler, regret, and
    the compute to reach the 10x random target."""
    base = [t.at(budget) for t in runs[DEFAULT_STRATEGY, "none"]]
    lines = [f"| {name} | scheduler | reward at {budget} | - {DEFAULT_STRATEGY}/none (paired) | regret | "
             f"reached target | child-epochs to target (median) | children at {budget} |",
             "|---|---|---|---|---|---|---|---|"]
    for (strategy, scheduler), traces in runs.items():
        at = [t.at(budget) for t in traces]
        regret = mean_sd([best - v for v in at]) if best is not None else "-"
        reached = [t.reach(target) for t, target in zip(traces, targets)]
        hits = sorted(r for r in reached if r is not None and r <= cap)
        median = statistics.median(hits + [math.inf] * (len(reached) - len(hits)))
        children = statistics.fmean(sum(1 for c in t.compute if c <= budget) for t in traces)
        lines.append(f"| {strategy} | {scheduler} | {mean_sd(at)} | {mean_sd([a - b for a, b in zip(at, base)])} | "
                     f"{regret} | {len(hits)}/{len(reached)} | {median if median < math.inf else f'> {cap}'} | "
                     f"{children:.0f} |")
    lines.append(f"| random, 10x | none | {mean_sd(targets)} (the target) | | | | | |")
    return lines


def plot(curves: dict[str, dict[tuple[str, str], list[Trace]]], targets: dict[str, list[float]], budget: int,
         path: Path) -> None:
    """Best-so-far (the named cell's truth) against child-epochs up to the budget, mean over seeds, one panel per
    problem; the dashed grey line is the target (full-fidelity random search with 10x the budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    grid = list(range(EPOCHS, budget + 1, EPOCHS))
    for ax, (problem, runs) in zip(axes[0], curves.items()):
        for (strategy, scheduler), traces in runs.items():
            values = [[t.at(c) for t in traces] for c in grid]
            mean = [statistics.fmean(v) if not any(math.isnan(x) for x in v) else math.nan for v in values]
            ax.plot(grid, mean, lw=1.2, label=f"{strategy}/{scheduler}",
                    ls={"none": ":", "asha": "-", "hyperband": "--"}[scheduler])
        ax.axhline(statistics.fmean(targets[problem]), color="grey", lw=0.8, ls="--")
        ax.set_title(problem, fontsize=9)
        ax.set_xlabel("child-epochs", fontsize=8)
        ax.set_ylabel("reward of the named cell (truth)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", default=["table", "additive:saturating",
                                                          "additive:crossing"],
                        help=f"'table' ({TABLE}) or <family>:<curve>, family in {sorted(FAMILIES)}, "
                             f"curve saturating | crossing")
    parser.add_argument("--table", default=TABLE, help="the table of problem 'table': a shipped name or a path")
    parser.add_argument("--strategies", nargs="+", default=[DEFAULT_STRATEGY, "random"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100 * EPOCHS, help="child-epochs (default: 100 full children)")
    parser.add_argument("--cap", type=int, default=None,
                        help="child-epochs a search may go on past the budget until it reaches the target (default: "
                             "a third of 10x the budget)")
    parser.add_argument("--rules", nargs="+", default=["table", "additive:saturating", "additive:crossing"],
                        help="problems on which to compare reward rules for every strategy (with asha); 'none': skip")
    parser.add_argument("--rule-seeds", type=int, default=5, help="seeds of the rule comparison")
    parser.add_argument("--plot", type=lambda v: Path(v) if v else None, default=Path("/tmp/bench_fidelity.png"),
                        help="best-so-far curves to this PNG; '' for none")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cap = args.cap or math.ceil(10 * args.budget / 3)
    rule_problems = [] if args.rules == ["none"] else args.rules
    rule_seeds = args.rule_seeds
    if "table" in args.problems + rule_problems:
        table = load_table(args.table)
        print(f"table {table.name}: {len(table)} cells, {sum(len(r.seeds) for r in table.rows)} training runs")
    print(f"budget {args.budget} child-epochs ({args.budget // EPOCHS} full children of {EPOCHS} epochs); searches run "
          f"to {cap}; target: full-fidelity random search's reward at {10 * args.budget}; {args.seeds} seeds; "
          f"ASHA and Hyperband with rungs {ASHA(MIN_EPOCHS, EPOCHS, ETA).rungs()} (eta {ETA}), reward_rule last")
    total = len(args.problems) * args.seeds * len(args.strategies) * len(SCHEDULERS) \
        + len(rule_problems) * rule_seeds * len(STRATEGIES) * len(RULES)
    progress = StepProgress("bench_fidelity", total, units="searches", heartbeat=INTERVAL)
    cpu = time.process_time()
    curves: dict[str, dict[tuple[str, str], list[Trace]]] = {}
    all_targets: dict[str, list[float]] = {}
    for name in args.problems:
        runs: dict[tuple[str, str], list[Trace]] = {(s, k): [] for s in args.strategies for k in SCHEDULERS}
        targets, best = [], None
        for seed in range(args.seeds):
            problem = make_problem(name, seed, args.table)
            best = problem.best
            # full-fidelity random search with 10x the budget: the target, and random/none's curve in one search
            long = run_search(problem, "random", preset("random"), "none", "last", seed, 10 * args.budget)
            targets.append(long.at(10 * args.budget))
            for strategy, scheduler in runs:
                trace = long if (strategy, scheduler) == ("random", "none") else \
                    run_search(problem, strategy, preset(strategy), scheduler, "last", seed, args.budget, cap,
                               targets[-1])
                runs[strategy, scheduler].append(trace)
                progress.update(note=f"{name}, seed {seed}, {strategy}/{scheduler}")
        curves[name], all_targets[name] = runs, targets
        print("\n" + "\n".join(quality_table(name, best, runs, targets, args.budget, cap)),
              flush=True)
    for name in rule_problems:
        problems = [make_problem(name, seed, args.table) for seed in range(rule_seeds)]
        print(f"\n| {name}: asha, reward at {args.budget} | " + " | ".join(RULES) + " | best rule |")
        print("|---|" + "---|" * (len(RULES) + 1))
        for strategy in STRATEGIES:
            rewards = {}
            for rule in RULES:
                rewards[rule] = [run_search(problem, strategy, preset(strategy), "asha", rule, seed,
                                            args.budget).at(args.budget) for seed, problem in enumerate(problems)]
                progress.update(len(rewards[rule]), note=f"rules: {name}, {strategy}/{rule}")
            means = {r: statistics.fmean(v) for r, v in rewards.items() if not any(math.isnan(x) for x in v)}
            print(f"| {strategy} | " + " | ".join(mean_sd(rewards[r]) for r in RULES) + f" | "
                  f"{max(means, key=means.get) if means else '-'} |", flush=True)
    print(f"\nCPU seconds: {time.process_time() - cpu:.0f}")
    if args.plot and curves:
        plot(curves, all_targets, args.budget, args.plot)
        print(f"curves: {args.plot}")


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
