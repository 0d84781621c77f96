"""Drive a strategy from your own loop: ten children in flight, finishing in any order."""
import random

from cellsearch.evaluators.landscapes import Landscape
from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies import build_strategy

space = SearchSpace()                                    # the NASNet space: 13 ops, 5 blocks
strategy = build_strategy("ppo", space, seed=0)          # the default settings of search=ppo
score = Landscape(space, "epistatic", seed=0)            # stand-in for training: any genotype -> reward

in_flight = [strategy.ask() for _ in range(10)]          # ten children being evaluated at once
for step in range(100):
    proposal = in_flight.pop(random.Random(step).randrange(len(in_flight)))  # whichever finishes first
    strategy.tell(proposal.trial_id, score(proposal.genotype, noise_seed=proposal.trial_id))
    if step < 90:
        in_flight.append(strategy.ask())
    if (step + 1) % 25 == 0:
        trial_id, genotype, reward = strategy.best()
        print(f"{step + 1:3d} children: best reward {reward:.3f} (trial {trial_id})")
for proposal in in_flight:
    strategy.withdraw(proposal.trial_id)                 # dropped without evaluation: not a trial
print(strategy.best()[1].to_yaml())
