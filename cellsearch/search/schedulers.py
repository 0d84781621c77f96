"""Early stopping for children trained for several epochs: asynchronous successive halving (ASHA, Li et
al. 2020) and asynchronous Hyperband (the same paper, sec. 3), usable beside any ask/tell loop.

>>> scheduler = ASHA(min_epochs=1, max_epochs=8, reduction_factor=3)     # rungs at epochs 1 and 3
>>> scheduler.report(0, 1, 0.52)        # True: go on training; False: stop this child now
True

The rule, at a rung (an epoch ``min_epochs * eta**k`` below ``max_epochs``): the child's value joins the
values every earlier child recorded at that rung, ``n`` of them in all, and the child goes on only if fewer
than ``max(1, n // eta)`` of them are strictly higher. So the first child at a rung always goes on, a tie
goes on, and of a rung's children about one in ``eta`` goes on (more at a higher rung when the later children
passed a higher bar below); nothing waits for a rung to fill. Higher values are better (report accuracy, or
minus a loss). Reports between rungs only record the value.

Why our own and not a library's: Optuna's ``SuccessiveHalvingPruner`` (whose rule above is the same) keeps
its rung values as system attributes of trials in an Optuna study's storage, so a search driven by our
strategies would have to keep a second, shadow study in step with the trial store and restore it on resume;
Optuna 2.10's ``HyperbandPruner`` picks a trial's bracket with Python's ``hash()`` of a string, which changes
from one process to the next, so a resumed search would move trials between brackets. Ray Tune's
``AsyncHyperBandScheduler`` runs only inside Ray Tune's trial runner and draws each trial's bracket at
random. The class below decides from the order of reports alone, so a search rebuilds it exactly by
replaying the reports its trial store holds.
"""
from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cellsearch.validation import ConfigError, fail, integer, one_of, positive_int

STATUSES: tuple[str, ...] = ("running", "stopped", "completed")
REWARD_RULES: tuple[str, ...] = ("last", "rank")
SCHEDULER_NAMES: tuple[str, ...] = ("none", "asha", "hyperband")
STATE_VERSION = 1


def rung_epochs(min_epochs: int, max_epochs: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA decides: ``min_epochs * reduction_factor**k`` below ``max_epochs``.

    A child that reaches ``max_epochs`` is complete, so ``max_epochs`` itself is never a rung.
    """
    rungs, epoch = [], min_epochs
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return rungs


@dataclass
class _Child:
    """One child's reports so far and where they led."""

    bracket: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    status: str = "running"
    rank_reward: float | None = None  # its rank at its latest rung (at max_epochs once it completes)


def _parse_report(trial_id: Any, epoch: Any, value: Any) -> tuple[int, int, float]:
    """A report's fields as int, int, float (NumPy and 0-d tensor numbers too); ValueError in one line."""
    if isinstance(trial_id, bool) or not isinstance(trial_id, numbers.Integral):
        raise ValueError(f"trial_id must be an integer, got {trial_id!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise ValueError(f"trial {trial_id}: epoch must be an integer, got {epoch!r}")
    try:
        number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"trial {trial_id}: value must be a finite number, got {value!r} at epoch {epoch} "
                         f"(tell the strategy None for a child that diverged)")
    return int(trial_id), int(epoch), number


class ASHA:
    """Asynchronous successive halving: stop a child at a rung unless it is in the top ``1/eta`` so far.

    Args:
        min_epochs: the first rung; every child trains at least this many epochs.
        max_epochs: a child that reaches it is complete (``child.epochs`` in a search).
        reduction_factor: ``eta``; rungs are ``eta`` times apart and about ``1/eta`` of a rung goes on.
        reward_rule: what :meth:`reward` returns for a stopped or completed child: ``"last"``, its value at
            the last epoch it reported; ``"rank"``, ``(k + q) / (K + 1)`` where ``k`` counts the rungs
            below the epoch it ended at, ``K`` the rungs below ``max_epochs``, and ``q`` is the fraction of
            the values recorded there so far (its own included) that are at or below its value.
    """

    name = "asha"

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: int = 3,
                 reward_rule: str = "last") -> None:
        self.min_epochs = positive_int(min_epochs, "scheduler.min_epochs")
        self.max_epochs = positive_int(max_epochs, "scheduler.max_epochs")
        if min_epochs > max_epochs:
            fail("scheduler.min_epochs", f"<= scheduler.max_epochs ({max_epochs})", min_epochs)
        self.reduction_factor = integer(reduction_factor, "scheduler.reduction_factor", 2)
        self.reward_rule = one_of(reward_rule, "scheduler.reward_rule", REWARD_RULES)
        self._ladder = rung_epochs(min_epochs, max_epochs, reduction_factor) + [max_epochs]
        self._bracket_rungs = self._make_brackets()
        # values recorded at each epoch of the ladder, per bracket (the completed ones at max_epochs)
        self._recorded: list[dict[int, list[float]]] = [{e: [] for e in self._ladder} for _ in self._bracket_rungs]
        self._children: dict[int, _Child] = {}

    # --- settings -------------------------------------------------------------------------------
    def _make_brackets(self) -> list[list[int]]:
        """Each bracket's rungs; ASHA has one bracket, all rungs."""
        return [self._ladder[:-1]]

    def bracket(self, trial_id: int) -> int:
        """The bracket a trial belongs to (always 0 for ASHA)."""
        return 0

    def rungs(self, bracket: int = 0) -> list[int]:
        """The epochs at which children of ``bracket`` may be stopped."""
        return list(self._bracket_rungs[bracket])

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, as plain data."""
        return {"name": self.name, "min_epochs": self.min_epochs, "max_epochs": self.max_epochs,
                "reduction_factor": self.reduction_factor, "reward_rule": self.reward_rule}

    def check_against(self, child_epochs: int, budget_epochs: int | None = None) -> None:
        """Raise ConfigError unless this scheduler fits a search whose children train ``child_epochs``.

        Args:
            child_epochs: ``child.epochs``, the epochs of a child that is never stopped.
            budget_epochs: the search's budget in child-epochs, if it has one; it must fit one child's first
                segment (``min_epochs``).
        """
        if self.max_epochs != child_epochs:
            fail("scheduler.max_epochs", f"equal to child.epochs ({child_epochs})", self.max_epochs)
        if budget_epochs is not None and (isinstance(budget_epochs, bool) or not isinstance(budget_epochs, int)
                                          or budget_epochs < self.min_epochs):
            fail("search.epoch_budget", f"an integer >= one child's first segment (scheduler.min_epochs="
                 f"{self.min_epochs} epochs)", budget_epochs)

    # --- the public interface -------------------------------------------------------------------
    def report(self, trial_id: int, epoch: int, value: float) -> bool:
        """Record ``value`` (higher is better) after ``epoch`` epochs of trial ``trial_id``.

        Returns:
            True to go on training (also when ``epoch`` is ``max_epochs``: the child is then complete);
            False to stop the child now, at a rung where it is not in the top ``1/eta``.

        Raises:
            ValueError: an epoch not after the trial's previous report, past ``max_epochs`` or skipping
                a rung; a report after the trial stopped or completed; a value that is not a finite number.
        """
        trial_id, epoch, value = _parse_report(trial_id, epoch, value)
        child = self._children.get(trial_id) or _Child(bracket=self.bracket(trial_id))
        self._check_report(trial_id, child, epoch)
        self._children[trial_id] = child
        child.curve.append((epoch, value))
        if epoch == self.max_epochs:
            child.status = "completed"
            child.rank_reward = self._record(child, epoch, value)
            return True
        if epoch not in self._bracket_rungs[child.bracket]:
            return True
        recorded = self._recorded[child.bracket][epoch]  # kept sorted
        num_higher = len(recorded) - bisect.bisect_right(recorded, value)
        # its rank at its latest rung: the rank reward if it ends before the next one (stopped here or by stop())
        child.rank_reward = self._record(child, epoch, value)
        if num_higher < max(1, len(recorded) // self.reduction_factor):
            return True
        child.status = "stopped"
        return False

    def stop(self, trial_id: int) -> None:
        """Stop a running trial from outside (a search whose compute budget ran out): its reward is then that
        of its last report (``rank``: its rank at the last rung it reached). Other trials' decisions do not change."""
        child = self._child(trial_id)
        if child.status != "running":
            raise ValueError(f"trial {trial_id} is already {child.status}")
        child.status = "stopped"

    def reward(self, trial_id: int) -> float:
        """The value a strategy learns from for a stopped or completed trial, by ``reward_rule``."""
        child = self._finished(trial_id)
        return child.curve[-1][1] if self.reward_rule == "last" else child.rank_reward

    def status(self, trial_id: int) -> str:
        """``running``, ``stopped`` (by this scheduler, at a rung) or ``completed`` (reached ``max_epochs``)."""
        return self._child(trial_id).status

    def epochs_trained(self, trial_id: int) -> int:
        """The last epoch reported for the trial."""
        return self._child(trial_id).curve[-1][0]

    def curve(self, trial_id: int) -> list[tuple[int, float]]:
        """Every ``(epoch, value)`` reported for the trial, in order."""
        return list(self._child(trial_id).curve)

    def trial_ids(self) -> list[int]:
        """Every trial reported so far, in the order of their first reports."""
        return list(self._children)

    def replay(self, reports: Iterable[tuple[int, int, float]]) -> list[bool]:
        """Feed ``(trial_id, epoch, value)`` reports in order (as a trial store holds them).

        Returns:
            The decisions :meth:`report` returned, one per report: a fresh scheduler that replays a search's
            reports makes the same decisions as the one that saw them live.
        """
        return [self.report(trial_id, epoch, value) for trial_id, epoch, value in reports]

    def state_dict(self) -> dict[str, Any]:
        """The settings and every trial's reports and outcome, as JSON-able data."""
        trials = [[trial_id, child.status, child.rank_reward, [list(point) for point in child.curve]]
                  for trial_id, child in self._children.items()]
        return {"version": STATE_VERSION, "settings": self.settings(), "trials": trials}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the settings must be this scheduler's."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"scheduler state version {state.get('version')!r} is not {STATE_VERSION}")
        if dict(state["settings"]) != self.settings():
            raise ValueError(f"scheduler state was saved with {dict(state['settings'])}, "
                             f"not this scheduler's {self.settings()}")
        self._recorded = [{e: [] for e in self._ladder} for _ in self._bracket_rungs]
        self._children = {}
        for trial_id, status, rank_reward, curve in state["trials"]:
            child = _Child(self.bracket(trial_id), [(int(e), float(v)) for e, v in curve], status, rank_reward)
            self._children[trial_id] = child
            for epoch, value in child.curve:  # every report at a rung (or at max_epochs) was recorded there
                if epoch == self.max_epochs or epoch in self._bracket_rungs[child.bracket]:
                    bisect.insort(self._recorded[child.bracket][epoch], value)

    # --- helpers --------------------------------------------------------------------------------
    def _check_report(self, trial_id: int, child: _Child, epoch: int) -> None:
        last = child.curve[-1][0] if child.curve else 0
        if child.status != "running":
            raise ValueError(f"trial {trial_id} already {child.status} after epoch {last}; "
                             f"a {child.status} child reports no more epochs")
        if not last < epoch <= self.max_epochs:
            raise ValueError(f"trial {trial_id}: epoch must be in {last + 1}..{self.max_epochs} "
                             f"(after its previous report, at most max_epochs), got {epoch}")
        skipped = [rung for rung in self._bracket_rungs[child.bracket] if last < rung < epoch]
        if skipped:
            raise ValueError(f"trial {trial_id}: report epoch {skipped[0]} (a rung) before epoch {epoch}")

    def _record(self, child: _Child, epoch: int, value: float) -> float:
        """Add ``value`` to those recorded at ``epoch``; return the child's rank reward there."""
        recorded = self._recorded[child.bracket][epoch]
        bisect.insort(recorded, value)
        at_or_below = bisect.bisect_right(recorded, value) / len(recorded)
        return (self._ladder.index(epoch) + at_or_below) / len(self._ladder)

    def _child(self, trial_id: int) -> _Child:
        if trial_id not in self._children:
            raise ValueError(f"trial {trial_id!r} has no reports yet")
        return self._children[trial_id]

    def _finished(self, trial_id: int) -> _Child:
        child = self._child(trial_id)
        if child.status == "running":
            raise ValueError(f"trial {trial_id} is still running (last report at epoch {child.curve[-1][0]} of "
                             f"{self.max_epochs}); report until report() returns False or epoch {self.max_epochs}")
        return child


class Hyperband(ASHA):
    """Asynchronous Hyperband: several ASHA brackets, each starting at a later rung.

    Bracket ``b`` stops children only at the rungs ``rungs[b:]`` of :class:`ASHA`'s ladder, so bracket 0 is
    ASHA itself and the last bracket (when all are used) trains every child to ``max_epochs``. Each bracket
    keeps its own rungs. Trials go to brackets by trial id in a fixed repeating cycle in which a bracket with
    ``s`` rungs appears ``ceil((S + 1) / (s + 1) * eta**s)`` times, ``S`` the most rungs a bracket has: the
    number of children Hyperband (Li et al. 2018) gives each bracket for an equal budget.

    Args:
        min_epochs: as for :class:`ASHA`.
        max_epochs: as for :class:`ASHA`.
        reduction_factor: as for :class:`ASHA`.
        brackets: how many brackets, the most aggressive first; None: all, one more than the rungs.
        reward_rule: as for :class:`ASHA`.
    """

    name = "hyperband"

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: int = 3,
                 brackets: int | None = None, reward_rule: str = "last") -> None:
        self.brackets = brackets  # validated in _make_brackets, once the rungs are known
        super().__init__(min_epochs, max_epochs, reduction_factor, reward_rule)
        self._cycle = self._make_cycle()

    def _make_brackets(self) -> list[list[int]]:
        rungs = self._ladder[:-1]
        if self.brackets is None:
            self.brackets = len(rungs) + 1
        most = len(rungs) + 1
        if isinstance(self.brackets, bool) or not isinstance(self.brackets, int) or not 1 <= self.brackets <= most:
            fail("scheduler.brackets", f"an integer in 1..{most} (one more than the rungs {rungs}) or null",
                 self.brackets)
        return [rungs[b:] for b in range(self.brackets)]

    def _make_cycle(self) -> list[int]:
        """The repeating bracket order: weighted round robin, so every bracket's turns are spread out."""
        most_rungs = len(self._bracket_rungs[0])
        weights = [math.ceil((most_rungs + 1) / (len(r) + 1) * self.reduction_factor ** len(r))
                   for r in self._bracket_rungs]
        credit, cycle = [0] * len(weights), []
        for _ in range(sum(weights)):
            credit = [c + w for c, w in zip(credit, weights)]
            chosen = credit.index(max(credit))
            credit[chosen] -= sum(weights)
            cycle.append(chosen)
        return cycle

    def bracket(self, trial_id: int) -> int:
        """The bracket of trial ``trial_id``: its place in the fixed cycle of brackets."""
        return self._cycle[trial_id % len(self._cycle)]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "brackets": self.brackets}


def scheduler_from_config(config: Mapping[str, Any] | None, child_epochs: int,
                          budget_epochs: int | None = None) -> ASHA | None:
    """The scheduler a ``scheduler`` config group asks for, checked against the child's epochs.

    Args:
        config: ``{"name": "none" | "asha" | "hyperband", ...}`` with the class's settings; ``max_epochs``
            defaults to ``child_epochs``; None means no scheduler.
        child_epochs: ``child.epochs``.
        budget_epochs: the search's budget in child-epochs, if any.

    Returns:
        The scheduler, or None for ``name: none``.

    Raises:
        ConfigError: one line naming the setting that is wrong.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError(f"scheduler config must be a mapping of its settings, got {type(config).__name__}")
    values = {str(k): v for k, v in config.items() if k != "_target_"}
    name = one_of(values.pop("name", "none"), "scheduler.name", SCHEDULER_NAMES)
    if name == "none":
        return None
    cls = {"asha": ASHA, "hyperband": Hyperband}[name]
    known = ["min_epochs", "max_epochs", "reduction_factor", "reward_rule"] + (["brackets"] if cls is Hyperband else [])
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown scheduler setting(s) {unknown} for {name}; valid settings are {sorted(known)}")
    values.setdefault("max_epochs", child_epochs)
    if "min_epochs" not in values:
        raise ConfigError("scheduler.min_epochs is missing (set scheduler.min_epochs=...)")
    min_epochs = positive_int(values["min_epochs"], "scheduler.min_epochs")
    if min_epochs > values["max_epochs"] == child_epochs:
        fail("scheduler.min_epochs", f"<= the epochs of a whole child ({child_epochs}: child.epochs, or the "
             f"evaluator's max_epochs)", min_epochs)
    scheduler = cls(**values)
    scheduler.check_against(child_epochs, budget_epochs)
    return scheduler
