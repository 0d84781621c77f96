"""The ask/tell interface every search strategy implements, and the bookkeeping they share.

A strategy proposes genotypes (:meth:`Strategy.ask`) and is told their rewards
(:meth:`Strategy.tell`) in any order, while other proposals are still being evaluated. The base
class keeps the history of every trial (its flat action sequence, reward and status), handles
de-duplication and failed children, and saves and restores everything a search needs to resume
exactly: the history, the strategy's own state and its random number generators.
"""
from __future__ import annotations

import copy
import logging
import math
import operator
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cellsearch.space.genotype import Genotype, GenotypeError, SearchSpace
from cellsearch.space.spaces import Space, genotype_from_json, space_from_settings
from cellsearch.validation import boolean, integer, number_in, one_of, positive_int

logger = logging.getLogger(__name__)

STATE_VERSION = 2
_PENDING, _OK, _FAILED, _WITHDRAWN = 0, 1, 2, 3
STATUS_NAMES = {_PENDING: "pending", _OK: "ok", _FAILED: "failed", _WITHDRAWN: "withdrawn"}
REWARD_SHAPINGS: tuple[str, ...] = ("accuracy", "cubed")


@dataclass
class Proposal:
    """A genotype to evaluate; report its reward with ``strategy.tell(trial_id, reward)``."""

    trial_id: int
    genotype: Genotype


def random_actions(space: SearchSpace, rng: random.Random) -> list[int]:
    """A uniformly drawn action sequence for ``space``."""
    return [rng.randrange(n) for n in space.layout.num_choices_list]


def adam(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, fused where this torch has a fused CPU kernel (2.4+): one kernel per parameter instead of
    a dozen small tensor calls; the same algorithm, only the last bits of its rounding differ."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # torch < 2.4: fused Adam is CUDA-only
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def as_search_space(space: "Space | Mapping[str, Any]") -> "Space":
    """Accept a search space or a plain mapping of its settings (as a Hydra ``space`` node gives it)."""
    try:
        return space_from_settings(space)
    except GenotypeError as err:
        raise ValueError(str(err)) from None


def shape_reward(reward: float, shaping: str) -> float:
    """The learning signal for a raw reward: the accuracy itself or its cube (Zoph & Le 2017)."""
    return reward ** 3 if shaping == "cubed" else reward


def check_shaping(shaping: str) -> str:
    """Raise ValueError for an unknown reward shaping name."""
    return one_of(shaping, "search.reward_shaping", REWARD_SHAPINGS)


def rng_state_to_plain(rng: random.Random) -> dict[str, Any]:
    """``random.Random`` state as a tensor and numbers (loadable with ``torch.load(weights_only=True)``)."""
    version, internal, gauss_next = rng.getstate()
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }


def rng_state_from_plain(state: Mapping[str, Any]) -> tuple:
    """Inverse of :func:`rng_state_to_plain`: a tuple for ``random.Random.setstate``."""
    internal = tuple(int(v) for v in state["internal"].tolist())
    gauss_next = state["gauss_next"]
    return (int(state["version"]), internal, None if gauss_next is None else float(gauss_next))


@dataclass
class Trial:
    """One proposal: its flat actions (in the space of its own block count), reward and status."""

    actions: list[int]
    genotype: Genotype
    key: str
    reward: float | None = None  # raw reward as told; None while pending or when the child failed
    status: int = _PENDING


class Strategy:
    """Base class: subclasses implement ``_propose`` and optionally the ``_asked``/``_told`` hooks
    and ``_extra_state``/``_load_extra_state`` for their own state."""

    name = "base"
    # The search spaces (cellsearch.space.spaces) this strategy can search; None: every one.
    spaces: tuple[str, ...] | None = ("nasnet",)

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        seed: int = 0,
        dedupe: bool = False,
        dedupe_tries: int = 100,
        failure_reward: float = 0.0,
    ) -> None:
        self.space = as_search_space(space)
        if self.spaces is not None and self.space.name not in self.spaces:
            raise ValueError(f"search={self.name} does not search space={self.space.name}; it searches "
                             f"space={' or space='.join(self.spaces)}")
        self.seed = integer(seed, "seed", 0)
        self.dedupe = boolean(dedupe, "search.dedupe")
        positive_int(dedupe_tries, "search.dedupe_tries")
        self.dedupe_tries = int(dedupe_tries)
        self.failure_reward = float(number_in(failure_reward, "search.failure_reward"))
        self.rng = random.Random(self.seed)
        self.generator = torch.Generator().manual_seed(self.rng.getrandbits(63))
        self._trials: list[Trial] = []
        self._proposed_keys: set[str] = set()
        self._spaces: dict[int, SearchSpace] = {self.space.num_blocks: self.space} \
            if isinstance(self.space, SearchSpace) else {}
        self.num_events = 0  # asks, tells, withdrawals, added trials so far: a journal replays them in order
        self._events: list[tuple] = []  # (sequence number, kind, trial id, data) not yet taken

    # --- the public interface -------------------------------------------------------------------
    def ask(self) -> Proposal:
        """Propose the next genotype to evaluate (may be called many times before any tell).

        Returns:
            The proposal: its ``trial_id`` (to pass to ``tell``) and its ``genotype``.
        """
        # With dedupe, a strategy that keeps proposing known cells (a policy that has converged) gets
        # dedupe_tries chances, then as many uniform draws (_explore) before a repeat is allowed.
        for attempt in range(2 * self.dedupe_tries if self.dedupe else 1):
            actions, info = self._propose() if attempt < self.dedupe_tries else self._explore()
            genotype = self.decode(actions)
            key = genotype.key()
            if not self.dedupe or key not in self._proposed_keys:
                break
        else:
            logger.warning("%s: no new genotype in %d tries (and %d uniform draws); proposing one already "
                           "proposed", self.name, self.dedupe_tries, self.dedupe_tries)
        trial_id = len(self._trials)
        self._trials.append(Trial(actions=list(actions), genotype=genotype, key=key))
        self._proposed_keys.add(key)
        self._asked(trial_id, info)
        self._record("ask", trial_id, list(actions))
        return Proposal(trial_id=trial_id, genotype=genotype)

    def tell(self, trial_id: int, reward: float | None) -> None:
        """Report the reward of a proposal, in any order.

        Args:
            trial_id: the ``trial_id`` of a proposal asked and not yet told.
            reward: its reward (validation accuracy in [0, 1]); None (or NaN) if it failed.
        """
        self._tell(trial_id, reward)
        self._record("tell", operator.index(trial_id), self._trials[trial_id].reward)

    def _tell(self, trial_id: int, reward: float | None) -> None:
        trial = self._pending_trial(trial_id)
        trial_id = operator.index(trial_id)
        if reward is None or math.isnan(float(reward)):
            trial.status = _FAILED
        else:
            trial.reward = float(reward)
            trial.status = _OK
        self._told(trial_id)

    def withdraw(self, trial_id: int) -> None:
        """Drop a pending proposal without evaluating it (a pre-judger passed it over): it is not a
        trial, the strategy does not learn from it, and its genotype may be proposed again."""
        trial = self._pending_trial(trial_id)
        trial.status = _WITHDRAWN
        self._proposed_keys.discard(trial.key)
        self._withdrawn(operator.index(trial_id))
        self._record("withdraw", operator.index(trial_id), None)

    def add_trial(self, genotype: Genotype, reward: float | None) -> int:
        """Register a trial evaluated elsewhere (its reward, or None if it failed) and return its id,
        as if it had been asked and told (rebuilding a strategy from a trial store, warm starts)."""
        actions = self.space.encode(genotype)  # raises GenotypeError for a genotype outside this space
        trial_id = len(self._trials)
        self._trials.append(Trial(actions=actions, genotype=genotype, key=genotype.key()))
        self._proposed_keys.add(genotype.key())
        self._added(trial_id)
        self._tell(trial_id, reward)
        self._record("add_trial", trial_id, [genotype.to_json(), self._trials[trial_id].reward])
        return trial_id

    def pending(self) -> list[Proposal]:
        """Proposals asked and not yet told, in ask order."""
        return [Proposal(i, t.genotype) for i, t in enumerate(self._trials) if t.status == _PENDING]

    def _pending_trial(self, trial_id: int) -> Trial:
        try:
            trial_id = operator.index(trial_id)  # ints from numpy or a database are fine too
        except TypeError:
            raise KeyError(f"trial_id must be an integer, got {trial_id!r}") from None
        if not 0 <= trial_id < len(self._trials):
            raise KeyError(f"unknown trial_id {trial_id}: this strategy has proposed trials 0..{len(self._trials) - 1}")
        trial = self._trials[trial_id]
        if trial.status != _PENDING:
            raise ValueError(f"trial {trial_id} was already told or withdrawn (status {STATUS_NAMES[trial.status]})")
        return trial

    @property
    def num_asked(self) -> int:
        return len(self._trials)

    @property
    def num_told(self) -> int:
        return sum(t.status in (_OK, _FAILED) for t in self._trials)

    def best(self) -> tuple[int, Genotype, float] | None:
        """(trial_id, genotype, reward) of the best successful trial so far, or None."""
        told = [(t.reward, -i) for i, t in enumerate(self._trials) if t.status == _OK]
        if not told:
            return None
        reward, neg_id = max(told)
        return -neg_id, self._trials[-neg_id].genotype, reward

    # --- helpers for subclasses -----------------------------------------------------------------
    def space_with_blocks(self, num_blocks: int) -> SearchSpace:
        """This search space with ``num_blocks`` blocks per cell (progressive search grows cells)."""
        if num_blocks not in self._spaces:
            self._spaces[num_blocks] = SearchSpace(self.space.ops, num_blocks, self.space.combines)
        return self._spaces[num_blocks]

    def decode(self, actions: list[int]) -> Genotype:
        """Genotype for an action sequence; a NASNet sequence's length gives its number of blocks (see the
        layout: progressive search proposes smaller cells)."""
        if not isinstance(self.space, SearchSpace):
            return self.space.decode(actions)
        return self.space_with_blocks(self.space.layout.blocks_of(actions)).decode(actions)

    def learning_reward(self, trial_id: int) -> float:
        """The told reward, or ``failure_reward`` for a failed child."""
        trial = self._trials[trial_id]
        if trial.status == _PENDING:
            raise ValueError(f"trial {trial_id} has not been told yet")
        return trial.reward if trial.status == _OK else self.failure_reward

    def is_told(self, trial_id: int) -> bool:
        return self._trials[trial_id].status in (_OK, _FAILED)

    def min_budget(self) -> tuple[int, str]:
        """Fewest children with which these settings learn anything, and why (0 = any budget)."""
        return 0, ""

    def signals(self) -> dict[str, float]:
        """What the strategy reports of itself now, by name (a controller's loss, a population's mean
        reward), for live views of a search. Reading them changes nothing the strategy decides."""
        return {}

    # --- hooks ----------------------------------------------------------------------------------
    def _propose(self) -> tuple[list[int], Any]:
        """Return flat actions of a new proposal and any per-trial info for :meth:`_asked`."""
        raise NotImplementedError

    def _explore(self) -> tuple[list[int], Any]:
        """A proposal drawn uniformly (info None), for dedupe when :meth:`_propose` repeats itself."""
        return random_actions(self.space, self.rng), None

    def _asked(self, trial_id: int, info: Any) -> None:
        """Called once a proposal got its trial id (``info`` is None for an :meth:`_explore` proposal)."""

    def _told(self, trial_id: int) -> None:
        """Called after the reward (or failure) of ``trial_id`` was recorded."""

    def _withdrawn(self, trial_id: int) -> None:
        """Called after the pending proposal ``trial_id`` was withdrawn: forget what ``_asked`` kept of it."""

    def _added(self, trial_id: int) -> None:
        """Called when :meth:`add_trial` registers ``trial_id`` (before it is told); ``_asked`` is not called."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`_extra_state` returned."""

    # --- saving and resuming --------------------------------------------------------------------
    def _record(self, kind: str, trial_id: int, data: Any) -> None:
        self._events.append((self.num_events, kind, trial_id, data))
        self.num_events += 1

    def take_events(self) -> list[tuple]:
        """The events (sequence number, kind, trial id, data) since the last call, for a journal."""
        events, self._events = self._events, []
        return events

    def replay(self, event: "list | tuple") -> None:
        """Apply a journaled event (kind, trial id, data) again; an ask must propose the same cell."""
        kind, trial_id, data = event
        if kind == "ask":
            proposal = self.ask()
            if proposal.trial_id != trial_id or self._trials[trial_id].actions != list(data):
                raise ValueError(f"replaying ask {trial_id} proposed another cell than the journal holds "
                                 f"(trial {proposal.trial_id}); the journal belongs to another search")
        elif kind == "tell":
            self.tell(trial_id, data)
        elif kind == "withdraw":
            self.withdraw(trial_id)
        elif kind == "add_trial":
            added = self.add_trial(genotype_from_json(data[0]), data[1])
            if added != trial_id:
                raise ValueError(f"replaying add_trial gave trial {added}, the journal holds {trial_id}")
        else:
            raise ValueError(f"unknown journal event {kind!r}")

    def state_dict(self, include_trials: bool = True) -> dict[str, Any]:
        """Everything needed to resume exactly: tensors, numbers, strings, lists and dicts only.

        ``include_trials=False`` leaves out the history of trials, the one part that grows with the
        search (a journal that holds every event restores it: ``restore_history``)."""
        state = {
            "strategy": self.name,
            "version": STATE_VERSION,
            "space": self.space.settings(),
            "seed": self.seed,
            "events": self.num_events,
            "rng": rng_state_to_plain(self.rng),
            "generator": self.generator.get_state(),
            "extra": self._extra_state(),
        }
        state = copy.deepcopy(state)
        if include_trials:
            state["trials"] = self._trials_state()
        return state

    def _trials_state(self) -> dict[str, torch.Tensor]:
        width = max((len(t.actions) for t in self._trials), default=0)
        padded = [t.actions + [-1] * (width - len(t.actions)) for t in self._trials]  # progressive: fewer blocks
        return {
            "actions": torch.tensor(padded, dtype=torch.int64).reshape(len(self._trials), width),
            "rewards": torch.tensor([math.nan if t.reward is None else t.reward for t in self._trials],
                                    dtype=torch.float64),
            "status": torch.tensor([t.status for t in self._trials], dtype=torch.int8),
        }

    def restore_history(self, trials: Mapping[str, torch.Tensor] | None, events: "list[list | tuple]") -> None:
        """Set the history of trials to ``trials`` (as :meth:`state_dict` saves them; None = none)
        followed by journaled ``events`` (kind, trial id, data), without running the strategy:
        its own state comes from a snapshot (:meth:`load_state_dict` without trials) afterwards."""
        self._set_trials(trials)
        for kind, trial_id, data in events:
            if kind in ("ask", "add_trial"):
                if trial_id != len(self._trials):
                    raise ValueError(f"the journal adds trial {trial_id} after {len(self._trials)} trials")
                genotype = genotype_from_json(data[0]) if kind == "add_trial" else self.decode(list(data))
                actions = self.space.encode(genotype) if kind == "add_trial" else list(data)
                self._trials.append(Trial(actions, genotype, genotype.key()))
                self._proposed_keys.add(genotype.key())
            if kind in ("tell", "add_trial", "withdraw"):
                trial = self._trials[trial_id]
                reward = data[1] if kind == "add_trial" else data
                if kind == "withdraw":
                    trial.status = _WITHDRAWN
                    self._proposed_keys.discard(trial.key)
                elif reward is None:
                    trial.status = _FAILED
                else:
                    trial.reward, trial.status = float(reward), _OK
            elif kind != "ask":
                raise ValueError(f"unknown journal event {kind!r}")

    def _set_trials(self, trials: Mapping[str, torch.Tensor] | None) -> None:
        self._trials = []
        self._proposed_keys = set()
        if trials is None:
            return
        for row, reward, status in zip(trials["actions"].tolist(), trials["rewards"].tolist(),
                                       trials["status"].tolist()):
            actions = [a for a in row if a >= 0]
            genotype = self.decode(actions)
            key = genotype.key()
            self._trials.append(Trial(actions, genotype, key, None if status != _OK else float(reward), int(status)))
            if status != _WITHDRAWN:
                self._proposed_keys.add(key)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict`` (also after ``torch.save``/``torch.load(weights_only=True)``)."""
        if state.get("strategy") != self.name:
            raise ValueError(f"this state was saved by the {state.get('strategy')!r} strategy, not {self.name!r}")
        if state.get("version") not in (1, STATE_VERSION):  # 1: before the journal (no event count)
            raise ValueError(f"unsupported strategy state version {state.get('version')!r}; expected {STATE_VERSION}")
        saved_space = as_search_space(state["space"])
        if saved_space != self.space:
            raise ValueError(f"the saved search was over {saved_space}, this strategy searches {self.space}")
        self.seed = int(state["seed"])
        if "trials" in state:
            self._set_trials(state["trials"])
        # else: a state saved without its history, which restore_history() has already put back
        statuses = [t.status for t in self._trials]
        # A version-1 state counts no events: its asks and tells are the events so far (no journal exists).
        self.num_events = int(state.get("events", len(statuses) + sum(x != _PENDING for x in statuses)))
        self._events = []
        self.rng.setstate(rng_state_from_plain(state["rng"]))
        self.generator.set_state(state["generator"])
        self._load_extra_state(state["extra"])
