"""Do the learning strategies beat random search? A CPU benchmark on a synthetic reward.

The reward of a genotype measures how close it is to a hidden target genotype (one per seed) in
the full NASNet space (13 ops, 5 blocks): per block it counts matching inputs, ops and combine,
plus interaction bonuses that pay only when a slot's input and op both match and when both ops of
a block match; each block is scored under both orders of its two (input, op) pairs, so equivalent
encodings score the same. The score is squashed to [0, 1] by a logistic with Gaussian noise in
logit space. Children "finish" in random order with ``--workers`` in flight, as with many workers.

Prints, per strategy: mean (over seeds) best reward so far, mean reward of the last 100 proposals
(with standard deviations over seeds) and the strategy's own overhead in ms per child (time in
``ask`` and in ``tell``, which includes controller updates and surrogate fits).

    python benchmarks/bench_strategies.py                 # all variants, 3 seeds, 800 children
    python benchmarks/bench_strategies.py --variants ppo-fast random --seeds 5 --budget 1000
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import torch

from cellsearch.space.genotype import Block, Genotype, SearchSpace
from cellsearch.strategies import build_strategy

# The variants run by default: (label, strategy, hyperparameters). Empty = the class defaults, which
# are the papers' settings (made for ~20,000 children). The "fast" variants raise the learning rate
# so the controller learns within hundreds of children; "enas" adds ENAS's logit temperature and
# tanh constant, which slow learning down in this budget (they guard against early convergence).
VARIANTS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "evolution": ("evolution", {}),
    "ppo": ("ppo", {}),
    "ppo-fast": ("ppo", {"lr": 0.001}),
    "ppo-enas": ("ppo", {"lr": 0.001, "temperature": 5.0, "tanh_constant": 2.5}),
    "reinforce": ("reinforce", {}),
    "reinforce-fast": ("reinforce", {"lr": 0.01}),
    "progressive": ("progressive", {}),
}


def block_score(block: Block, target: Block) -> float:
    """Matches of one block against the target block, best over the two orders of its pairs."""
    best = 0.0
    for inputs, ops in ((block.inputs, block.ops), (block.inputs[::-1], block.ops[::-1])):
        input_match = [inputs[j] == target.inputs[j] for j in range(2)]
        op_match = [ops[j] == target.ops[j] for j in range(2)]
        score = sum(input_match) + sum(op_match) + 0.5 * (block.combine == target.combine)
        score += sum(i and o for i, o in zip(input_match, op_match))  # input and op of a slot match
        score += 1.0 if all(op_match) else 0.0  # both ops of the block match
        best = max(best, score)
    return best


MAX_BLOCK_SCORE = 7.5


def make_reward(target: Genotype, noise_std: float, rng: random.Random):
    """Reward in [0, 1]: logistic of the normalized match score plus Gaussian noise."""
    num_blocks = len(target.normal.blocks)

    def reward(genotype: Genotype) -> float:
        total = 0.0
        for cell, target_cell in ((genotype.normal, target.normal), (genotype.reduce, target.reduce)):
            total += sum(block_score(b, t) for b, t in zip(cell.blocks, target_cell.blocks))
        fraction = total / (2 * num_blocks * MAX_BLOCK_SCORE)
        return 1.0 / (1.0 + math.exp(-(10.0 * (fraction - 0.4) + rng.gauss(0.0, noise_std))))

    return reward


def run_search(name: str, hyperparameters: dict, seed: int, budget: int, workers: int, noise_std: float) -> dict:
    """One simulated asynchronous search; returns its reward trace and overhead timings."""
    space = SearchSpace()
    target = space.sample(random.Random(10_000 + seed))
    reward = make_reward(target, noise_std, random.Random(20_000 + seed))
    finish_order = random.Random(30_000 + seed)
    strategy = build_strategy(name, space, seed=seed, **hyperparameters)
    ask_s = tell_s = 0.0
    in_flight, rewards = [], []
    while len(rewards) < budget:
        while len(in_flight) < workers and strategy.num_asked < budget:
            start = time.perf_counter()
            in_flight.append(strategy.ask())
            ask_s += time.perf_counter() - start
        proposal = in_flight.pop(finish_order.randrange(len(in_flight)))
        value = reward(proposal.genotype)
        rewards.append(value)
        start = time.perf_counter()
        strategy.tell(proposal.trial_id, value)
        tell_s += time.perf_counter() - start
    best = max(rewards)
    return {"best": best, "last100": statistics.fmean(rewards[-100:]),
            "ask_ms": 1000 * ask_s / budget, "tell_ms": 1000 * tell_s / budget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=800)
    parser.add_argument("--workers", type=int, default=10, help="children in flight (finish in random order)")
    parser.add_argument("--noise", type=float, default=0.3, help="std of the Gaussian noise in logit space")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the controller)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"budget {args.budget} children, {args.seeds} seeds, {args.workers} in flight, noise {args.noise}")
    header = f"{'variant':<15} {'best so far':>16} {'last 100 mean':>16} {'ask ms':>7} {'tell ms':>8} {'wall s':>7}  settings"
    print(header)
    print("-" * len(header))
    for label in args.variants:
        name, hyperparameters = VARIANTS[label]
        start = time.perf_counter()
        runs = [run_search(name, hyperparameters, seed, args.budget, args.workers, args.noise)
                for seed in range(args.seeds)]
        wall = time.perf_counter() - start

        def summary(field: str) -> str:
            values = [r[field] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.3f} +- {spread:.3f}"

        ask_ms = statistics.fmean(r["ask_ms"] for r in runs)
        tell_ms = statistics.fmean(r["tell_ms"] for r in runs)
        settings = ", ".join(f"{k}={v}" for k, v in hyperparameters.items()) or "class (paper) defaults"
        print(f"{label:<15} {summary('best'):>16} {summary('last100'):>16} {ask_ms:>7.2f} {tell_ms:>8.2f} "
              f"{wall:>7.1f}  {settings}", flush=True)


if __name__ == "__main__":
    main()
