"""Progressive search in the manner of PNAS (Liu et al. 2018, "Progressive Neural Architecture Search").

Cells grow one block at a time. Stage 1 evaluates ``num_initial`` random one-block genotypes. Each
later stage takes the ``beam_size`` (K) best evaluated cells of the previous size, samples
``num_expansions`` of their one-block-larger expansions (a new block appended to both cells), ranks
them with a surrogate trained on every evaluated cell so far, and proposes the top K. Early
proposals therefore have fewer blocks than the search space: they are valid genotypes of
``SearchSpace(ops, num_blocks=b, combines)``. PNAS stops once cells have B blocks; to keep
proposing within a larger budget this strategy then repeats the same step with single-decision
mutations (as in evolution) of the K best B-block cells in place of expansions.

Differences from the paper: K defaults to 16 (the paper used 256), expansions are sampled rather
than enumerated (two cells of b blocks have millions of expansions), and the surrogate is a single
MLP over one-hot decisions of the canonical genotype plus per-cell op counts (PNAS used an
ensemble of MLPs or LSTMs).

Asynchronous use: a stage is finished when its first K proposals are told. If more proposals are
asked before that, the next-ranked candidates of the stage are proposed.

Cost that does not grow with the search: the beam and the surrogate look at the ``history`` most
recent told trials only (by trial id), and each trial's features are computed once.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from cellsearch.space.genotype import SearchSpace
from cellsearch.space.layout import BLOCK_DECISIONS
from cellsearch.strategies.base import Strategy, adam
from cellsearch.strategies.evolution import mutate
from cellsearch.strategies.random_search import random_actions
from cellsearch.validation import number_in, positive_int


_SLOT = {decision: i for i, decision in enumerate(BLOCK_DECISIONS)}  # (kind, slot) -> offset in a block


def canonical_actions(actions: list[int], space: SearchSpace) -> list[int]:
    """Actions with each block's two (input, op) pairs sorted as in ``Genotype.canonical``."""
    ia, ib, oa, ob = _SLOT["input", 0], _SLOT["input", 1], _SLOT["op", 0], _SLOT["op", 1]
    cells = []
    for blocks in space.layout.split(actions):
        canon = []
        for block in blocks:
            block = list(block)
            if (block[ib], space.ops[block[ob]]) < (block[ia], space.ops[block[oa]]):
                block[ia], block[ib], block[oa], block[ob] = block[ib], block[ia], block[ob], block[oa]
            canon.append(block)
        cells.append(canon)
    return space.layout.join(cells)


class CellFeatures:
    """Fixed-length surrogate input for genotypes of 1..B blocks: one-hot of every canonical decision
    (zeros for blocks a smaller cell lacks), each cell's op counts, and the fraction of blocks used."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.layout = space.layout
        self.offsets = [0]
        for n in self.layout.num_choices_list:
            self.offsets.append(self.offsets[-1] + n)
        self.num_ops = len(space.ops)
        self.size = self.offsets[-1] + self.layout.num_cells * self.num_ops + 1
        self._op_offsets = [_SLOT["op", 0], _SLOT["op", 1]]

    def __call__(self, batch: list[list[int]]) -> torch.Tensor:
        # Filled element by element in numpy (a tensor element write costs ~50x more), in float32 as before.
        x = np.zeros((len(batch), self.size), dtype=np.float32)
        op_base = self.offsets[-1]
        for row, actions in enumerate(batch):
            cells = self.layout.split(canonical_actions(actions, self.space))
            num_blocks = len(cells[0])
            for c, blocks in enumerate(cells):
                for b, block in enumerate(blocks):
                    first = self.layout.position(c, b, *BLOCK_DECISIONS[0])
                    for k, a in enumerate(block):
                        x[row, self.offsets[first + k] + a] = 1.0
                    for k in self._op_offsets:
                        x[row, op_base + c * self.num_ops + block[k]] += 1.0 / num_blocks
            x[row, -1] = num_blocks / self.space.num_blocks
        return torch.from_numpy(x)


class Surrogate(nn.Module):
    """Small MLP regressor from cell features to predicted reward."""

    def __init__(self, in_features: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        # skip_init: weights are drawn below from ``generator``, never from the global RNG.
        self.net = nn.Sequential(skip_init(nn.Linear, in_features, hidden), nn.ReLU(),
                                 skip_init(nn.Linear, hidden, hidden), nn.ReLU(), skip_init(nn.Linear, hidden, 1))
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ProgressiveSearch(Strategy):
    """PNAS-style search: grow cells block by block, rank expansions with a learned surrogate."""

    name = "progressive"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        beam_size: int = 16,
        num_initial: int = 64,
        num_expansions: int = 512,
        surrogate_hidden: int = 64,
        surrogate_steps: int = 200,
        surrogate_lr: float = 0.003,
        surrogate_weight_decay: float = 1e-4,
        history: int = 512,
        dedupe: bool = False,
        dedupe_tries: int = 100,
        failure_reward: float = 0.0,
    ) -> None:
        super().__init__(space, seed, dedupe=dedupe, dedupe_tries=dedupe_tries, failure_reward=failure_reward)
        for name, value in (("beam_size", beam_size), ("num_initial", num_initial),
                            ("num_expansions", num_expansions), ("surrogate_hidden", surrogate_hidden),
                            ("surrogate_steps", surrogate_steps)):
            positive_int(value, f"search.{name}")
        number_in(surrogate_lr, "search.surrogate_lr", 0, low_open=True)
        self.beam_size = int(beam_size)
        self.num_initial = int(num_initial)
        self.num_expansions = int(num_expansions)
        self.surrogate_hidden = int(surrogate_hidden)
        self.surrogate_steps = int(surrogate_steps)
        self.surrogate_lr = float(surrogate_lr)
        self.surrogate_weight_decay = float(surrogate_weight_decay)
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.history = int(history)
        self._features: dict[int, torch.Tensor] = {}  # trial id -> its surrogate features (a cache)
        self.features = CellFeatures(self.space)
        self.stage_blocks = 0  # blocks per cell of the current stage's proposals; 0 = not started
        self.num_stages = 0
        self._queue: list[list[int]] = []  # ranked candidates of the current stage, best first
        self._parents: list[int] = []  # trial ids the current stage's candidates grew from
        self._planned: list[int] = []  # the stage's first proposals; the stage ends when all are told
        self._planned_size = 0
        # For signals() only, not saved (a resumed search reports it again after its next stage): the
        # surrogate's predicted reward of the ranked candidates and of the stage's proposals among them.
        self._predicted: dict[tuple[int, ...], float] = {}
        self._stage_predictions: dict[int, float] = {}
        self.surrogate_error: float | None = None  # mean absolute error on the last completed stage

    def min_budget(self) -> tuple[int, str]:
        children = self.num_initial + (self.space.num_blocks - 1) * self.beam_size
        return children, (f"cells reach {self.space.num_blocks} blocks after num_initial={self.num_initial} + "
                          f"{self.space.num_blocks - 1} stages of beam_size={self.beam_size} children")

    # --- stages ---------------------------------------------------------------------------------
    def _stage_complete(self) -> bool:
        return len(self._planned) >= self._planned_size and all(self.is_told(i) for i in self._planned)

    def signals(self) -> dict[str, float]:
        """The stage number, its cells' block count, and the surrogate's mean absolute error (in reward)
        on the proposals of the last completed stage it ranked."""
        signals = {"stage": float(self.num_stages), "stage_blocks": float(self.stage_blocks)}
        if self.surrogate_error is not None:
            signals["surrogate_error"] = self.surrogate_error
        return signals

    def _start_stage(self) -> None:
        if self._stage_predictions:
            errors = [abs(p - self.learning_reward(i)) for i, p in self._stage_predictions.items() if self.is_told(i)]
            self.surrogate_error = sum(errors) / len(errors) if errors else self.surrogate_error
        self._predicted, self._stage_predictions = {}, {}
        self.num_stages += 1
        self._planned = []
        if self.stage_blocks == 0:
            self.stage_blocks = 1
            self._parents = []
            self._queue = self._distinct(lambda: random_actions(self.space_with_blocks(1), self.rng),
                                         self.num_initial)
            self._planned_size = self.num_initial
            return
        size = self.space.layout.with_blocks(self.stage_blocks).size
        told = [i for i in self._recent_told() if len(self._trials[i].actions) == size]
        self._parents = sorted(told, key=self.learning_reward, reverse=True)[:self.beam_size]
        self.stage_blocks = min(self.stage_blocks + 1, self.space.num_blocks)
        candidates = self._distinct(self._candidate, self.num_expansions)
        if candidates:
            surrogate, mean, scale = self._fit_surrogate()
            scores = surrogate(self.features(candidates)).tolist()
            self._predicted = {tuple(c): mean + scale * s for c, s in zip(candidates, scores)}
            order = sorted(range(len(candidates)), key=lambda i: -scores[i])
            candidates = [candidates[i] for i in order]
        self._queue = candidates
        self._planned_size = self.beam_size

    def _candidate(self) -> list[int]:
        """An unranked candidate for the current stage: an expansion, or at B blocks a mutation."""
        parent = self._trials[self.rng.choice(self._parents)].actions
        b = self.stage_blocks
        if len(parent) == self.space.layout.with_blocks(b).size:
            return mutate(parent, self.space, self.rng)
        new_cells = self.space.layout.split(random_actions(self.space_with_blocks(b), self.rng))
        return self.space.layout.grow(parent, [blocks[-1] for blocks in new_cells])

    def _distinct(self, make, count: int) -> list[list[int]]:
        """Up to ``count`` candidates from ``make`` that are new (not proposed, not repeated)."""
        seen: set[str] = set()
        out = []
        for _ in range(3 * count):
            actions = make()
            key = self.decode(actions).key()
            if key not in seen and key not in self._proposed_keys:
                seen.add(key)
                out.append(actions)
                if len(out) == count:
                    break
        return out

    def _recent_told(self) -> list[int]:
        """Ids of the ``history`` most recent told trials (pending ones are skipped; few are in flight)."""
        out = []
        for i in range(self.num_asked - 1, -1, -1):
            if self.is_told(i):
                out.append(i)
                if len(out) == self.history:
                    break
        return out[::-1]

    def _fit_surrogate(self) -> tuple[Surrogate, float, float]:
        """Train a fresh surrogate on every told trial (rewards standardized); return it with the mean and
        scale that turn its output back into a reward."""
        told = self._recent_told()
        for i in told:
            if i not in self._features:
                self._features[i] = self.features([self._trials[i].actions])[0]
        oldest = min(told)
        self._features = {i: f for i, f in self._features.items() if i >= oldest}
        x = torch.stack([self._features[i] for i in told])
        y = torch.tensor([self.learning_reward(i) for i in told])
        mean, scale = y.mean(), y.std(unbiased=False) + 1e-6
        y = (y - mean) / scale
        model = Surrogate(self.features.size, self.surrogate_hidden, self.generator)
        optimizer = adam(model.parameters(), self.surrogate_lr, self.surrogate_weight_decay)
        for _ in range(self.surrogate_steps):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        return model.requires_grad_(False), float(mean), float(scale)

    # --- strategy hooks -------------------------------------------------------------------------
    def _propose(self) -> tuple[list[int], Any]:
        if self.stage_blocks == 0 or self._stage_complete():
            self._start_stage()
        if self._queue:
            return self._queue.pop(0), None
        # More asks than ranked candidates: an unranked new candidate, else any cell of this size.
        fresh = self._distinct(self._candidate, 1) if self._parents else []
        return (fresh[0], None) if fresh else self._explore()

    def _explore(self) -> tuple[list[int], Any]:
        """A uniform cell of the current stage's size (one block before the first stage)."""
        return random_actions(self.space_with_blocks(self.stage_blocks or 1), self.rng), None

    def _asked(self, trial_id: int, info: Any) -> None:
        if len(self._planned) < self._planned_size:
            self._planned.append(trial_id)
        predicted = self._predicted.get(tuple(self._trials[trial_id].actions))
        if predicted is not None:
            self._stage_predictions[trial_id] = predicted

    def _withdrawn(self, trial_id: int) -> None:
        # The stage waits for its planned proposals to be told: the next proposal takes this one's place.
        if trial_id in self._planned:
            self._planned.remove(trial_id)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "stage_blocks": self.stage_blocks,
            "num_stages": self.num_stages,
            "queue": [list(a) for a in self._queue],
            "parents": list(self._parents),
            "planned": list(self._planned),
            "planned_size": self._planned_size,
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.stage_blocks = int(state["stage_blocks"])
        self.num_stages = int(state["num_stages"])
        self._queue = [[int(a) for a in actions] for actions in state["queue"]]
        self._parents = [int(i) for i in state["parents"]]
        self._planned = [int(i) for i in state["planned"]]
        self._planned_size = int(state["planned_size"])
