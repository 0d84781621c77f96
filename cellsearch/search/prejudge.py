"""The pre-judger: the strategy proposes K cells, a zero-cost score ranks them, only the best is trained.

Each round asks the strategy for ``candidates`` proposals, scores every one (see
:mod:`cellsearch.evaluators.zero_cost`), submits the best and withdraws the others
(:meth:`Strategy.withdraw`: they are no trials, the strategy does not learn from them). Every score of
every round goes into the ``scores`` table of trials.db before the strategy state is saved, so a
search killed mid-round re-asks the same candidates on resume and writes the same rows again.

It checks itself on the user's task: with ``audit=N``, N passed-over candidates spread over the run
are trained too (they count against the budget and are stored with role ``audit``; the strategy does
not learn from them). Over every trained candidate (the chosen ones and the audits) it reports the
score's Kendall tau and top-k precision against trained accuracy; once at least ``MIN_FOR_TAU`` are
in and tau is below ``min_tau``, it switches itself off with one log line and the search goes on
unfiltered. Whether it is off is read back from the store on resume (the same rows give the same tau).
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cellsearch.data import DataConfig
from cellsearch.evaluators.child import ChildConfig
from cellsearch.evaluators.zero_cost import ZeroCostScorer, kendall_tau, top_k_precision
from cellsearch.search.store import ScoreRow, TrialStore
from cellsearch.strategies.base import Proposal, Strategy
from cellsearch.validation import ConfigError

__all__ = ["MIN_FOR_TAU", "PreJudger", "ScoreReport"]

log = logging.getLogger(__name__)

MIN_FOR_TAU = 10  # trained candidates needed before a low tau may switch the pre-judger off


@dataclass
class ScoreReport:
    """How the score ranked the candidates that were trained."""

    num: int           # trained candidates with a score and an accuracy
    num_audits: int
    tau: float         # Kendall tau of score vs val_accuracy (NaN below two)
    top_k: int
    precision: float   # top-k precision


class PreJudger:
    """Ranks ``candidates`` proposals per round by the zero-cost ``score`` and trains the best."""

    def __init__(self, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]",
                 score: str = "naswot", candidates: int = 4, audit: int = 0, min_tau: float = 0.0, top_k: int = 3,
                 batch_size: int = 64, seed: int = 0) -> None:
        for name, value, low in (("candidates", candidates, 1), ("audit", audit, 0), ("top_k", top_k, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"prejudge.{name} must be an integer >= {low}, got {value!r}")
        if isinstance(min_tau, bool) or not isinstance(min_tau, (int, float)) or not -1 <= min_tau <= 1:
            raise ConfigError(f"prejudge.min_tau must be a number in [-1, 1] (a Kendall tau), got {min_tau!r}")
        if audit and candidates < 2:
            raise ConfigError("prejudge.audit needs prejudge.candidates >= 2 (audits train passed-over candidates)")
        self.scorer = ZeroCostScorer(score, child, data, seed, batch_size)
        self.score, self.candidates, self.audit = score, candidates, audit
        self.min_tau, self.top_k, self.seed = float(min_tau), top_k, seed
        self.active = True
        self.audit_ids: set[int] = set()

    # --- resuming ---------------------------------------------------------------------------------
    def resume(self, store: TrialStore) -> list[Proposal]:
        """Read the audits and the on/off state back from ``store``; return the audits still to train."""
        scores = store.scores()
        audits = {r.candidate_id: r for r in scores if r.audit and r.score == self.score}
        self.audit_ids = set(audits)
        self.active = not self._should_switch_off(self.report(store))
        return [Proposal(cid, row.genotype) for cid, row in sorted(audits.items()) if store.get(cid) is None]

    # --- one round --------------------------------------------------------------------------------
    def round(self, strategy: Strategy, store: TrialStore, budget: int, room: int,
              save_state: Callable[[], None]) -> list[tuple[Proposal, str]]:
        """Ask, score, keep the best (and maybe an audit), withdraw the rest; ``room``: children the budget
        still allows. Returns the proposals to evaluate with their roles ("search" or "audit")."""
        proposals = [strategy.ask() for _ in range(self.candidates)]
        first = proposals[0].trial_id
        # Rounds before this one (a round redone after a crash finds its own rows, with later ids).
        earlier = [r for r in store.scores() if r.candidate_id < first]
        round_no = len({r.round for r in earlier})
        audits_before = sum(1 for a in self.audit_ids if a < first)
        scored = [self.scorer(p.genotype) for p in proposals]
        values = [-math.inf if v is None else v for v, _ in scored]
        best = max(range(len(proposals)), key=lambda i: (values[i], -i))
        audited = self._audit_pick(round_no, audits_before, budget, room,
                                   [i for i in range(len(proposals)) if i != best])
        chosen_id = proposals[best].trial_id
        store.add_scores([ScoreRow(round_no, chosen_id, p.trial_id, p.genotype, self.score, scored[i][0],
                                   i == best, i == audited, scored[i][1]) for i, p in enumerate(proposals)])
        for i, p in enumerate(proposals):
            if i != best:
                strategy.withdraw(p.trial_id)
        save_state()
        evaluate = [(proposals[best], "search")]
        if audited is not None:
            self.audit_ids.add(proposals[audited].trial_id)
            evaluate.append((proposals[audited], "audit"))
        return evaluate

    def _audit_pick(self, round_no: int, audits_before: int, budget: int, room: int,
                    passed_over: list[int]) -> int | None:
        """The passed-over candidate to audit this round, if one is due: N audits spread evenly over the
        rounds the budget allows (budget - N of them), a skipped one made up in the next round."""
        rounds = max(1, budget - self.audit)
        due = min(self.audit, (round_no + 1) * self.audit // rounds)
        if not passed_over or room < 2 or audits_before >= due:
            return None
        return random.Random(self.seed * 1_000_003 + round_no).choice(passed_over)

    # --- judging the judge ------------------------------------------------------------------------
    def report(self, store: TrialStore) -> ScoreReport:
        """Kendall tau and top-k precision of the score against val_accuracy over every trained candidate."""
        value = {r.candidate_id: r.value for r in store.scores() if r.score == self.score and r.value is not None}
        pairs = [(value[r.trial_id], r.val_accuracy, r.role) for r in store.rows()
                 if r.ok and r.val_accuracy is not None and r.trial_id in value]
        scores, accuracies = [p[0] for p in pairs], [p[1] for p in pairs]
        tau = kendall_tau(scores, accuracies) if len(pairs) >= 2 else math.nan
        return ScoreReport(len(pairs), sum(p[2] == "audit" for p in pairs), tau, min(self.top_k, len(pairs)),
                           top_k_precision(scores, accuracies, self.top_k) if pairs else math.nan)

    def _should_switch_off(self, report: ScoreReport) -> bool:
        return report.num >= MIN_FOR_TAU and not math.isnan(report.tau) and report.tau < self.min_tau

    def recorded(self, store: TrialStore) -> None:
        """After a trained candidate is stored: log the audit's report; switch off if the score fails."""
        report = self.report(store)
        if self.audit and report.num >= 2:
            log.info("pre-judger %s: Kendall tau %.3f, top-%d precision %.2f over %d trained candidates (%d audits)",
                     self.score, report.tau, report.top_k, report.precision, report.num, report.num_audits)
        if self.active and self._should_switch_off(report):
            self.active = False
            log.warning("pre-judger %s switched off: Kendall tau %.3f < prejudge.min_tau %.3f over %d trained "
                        "candidates; the search goes on unfiltered", self.score, report.tau, self.min_tau,
                        report.num)

    def signals(self) -> dict[str, float]:
        """What the live view plots of the pre-judger now (prefixed ``prejudge/``); empty until it has audited."""
        return {}

    def summary(self, store: TrialStore) -> str:
        """How far the score was trusted: rounds filtered, candidates withdrawn and audited, tau, precision."""
        scores = [r for r in store.scores() if r.score == self.score]
        rounds = len({r.round for r in scores})
        report = self.report(store)
        trust = "trusted to the end" if self.active else f"switched off after {rounds} rounds (tau < {self.min_tau:g})"
        return (f"pre-judger {self.score}: {rounds} rounds of {self.candidates} candidates, "
                f"{sum(not r.chosen for r in scores)} withdrawn, {report.num_audits} audited; Kendall tau "
                f"{report.tau:.3f} and top-{report.top_k} precision {report.precision:.2f} against trained accuracy "
                f"over {report.num} trained candidates; {trust}")
