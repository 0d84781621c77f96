"""Search strategies: one ask/tell interface, one file per strategy.

>>> strategy = build_strategy("ppo", SearchSpace(num_blocks=5), seed=0)
>>> proposal = strategy.ask()                       # evaluate proposal.genotype somewhere
>>> strategy.tell(proposal.trial_id, 0.91)          # or None if the child failed
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies.base import Proposal, Strategy
from cellsearch.strategies.controller import Controller
from cellsearch.strategies.evolution import RegularizedEvolution
from cellsearch.strategies.progressive import ProgressiveSearch
from cellsearch.strategies.random_search import RandomSearch
from cellsearch.strategies.rl import PPO, Reinforce

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (PPO, Reinforce, RandomSearch, RegularizedEvolution, ProgressiveSearch)
}


def strategies_for(space: str) -> list[str]:
    """The ask/tell strategies that search ``space`` (their ``Strategy.spaces``), by name."""
    return [name for name, cls in STRATEGIES.items() if cls.spaces is None or space in cls.spaces]


def build_strategy(name: str, space: SearchSpace | Mapping[str, Any], seed: int = 0, **hyperparameters: Any) -> Strategy:
    """The strategy called ``name`` over ``space``.

    Args:
        name: ``ppo``, ``reinforce``, ``random``, ``evolution`` or ``progressive``.
        space: the search space, or its settings as a mapping (``ops``, ``num_blocks``, ``combines``).
        seed: seeds the strategy's random generators.
        **hyperparameters: the strategy class's keyword arguments (unknown ones are refused).

    Returns:
        A fresh strategy; drive it with ``ask`` and ``tell``.

    Raises:
        ValueError: an unknown strategy name or hyperparameter.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "space", "seed")]
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(f"the {name} strategy has no hyperparameter(s) {unknown}; it takes {accepted}")
    return cls(space, seed=seed, **hyperparameters)


__all__ = [
    "PPO",
    "STRATEGIES",
    "Controller",
    "ProgressiveSearch",
    "Proposal",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "Strategy",
    "strategies_for",
    "build_strategy",
]
