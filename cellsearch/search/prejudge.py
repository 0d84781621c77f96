"""The pre-judger: the strategy proposes K cells, a cheap estimator ranks them, only the best is trained.

Each round asks the strategy for ``candidates`` proposals, scores every one with the estimator named by
``score`` and submits the best, withdrawing the others (:meth:`Strategy.withdraw`: they are no trials, the
strategy does not learn from them). The estimators (:mod:`cellsearch.evaluators.estimator`):

- a zero-cost score (:mod:`cellsearch.evaluators.zero_cost`: naswot, synflow, snip, grad_norm, params,
  mult_adds; a leading ``-`` prefers the lowest);
- ``vote``: the mean standing of a cell over the zero-cost scores listed in ``vote``
  (:mod:`cellsearch.evaluators.vote`);
- ``predictor``: an ensemble of MLPs learned from the run's own trained children, refitted as they finish
  (:mod:`cellsearch.evaluators.predictor`; settings in ``predictor``). Until it has ``min_children`` of
  them it cannot score, and the rounds go unfiltered (one line says so).

Every score of every round goes into the ``scores`` table of trials.db before the strategy state is saved,
so a search killed mid-round re-asks the same candidates on resume and writes the same rows again. A
candidate the estimator cannot score (a NaN, a failing computation) is marked unscored in one log line
(its row holds no value), ranks below every scored one, and the search goes on.

It checks itself on the user's task: with ``audit=N``, N passed-over candidates spread over the run are
trained too (they count against the budget and are stored with role ``audit``; the strategy does not
learn from them). After every trained candidate it logs its audit (:mod:`cellsearch.search.audit`: Kendall
tau, Spearman, top-10% recall and junk-filter rate with bootstrap intervals, and the parameter count's tau)
and shows it in the live view (:meth:`PreJudger.signals`). Once at least ``MIN_FOR_TAU`` are in, it switches
itself off, in one log line, when its tau is below ``min_tau`` or (``beat_params``) below the parameter
count's on the same children (the bootstrap interval of the difference below 0); the search goes on
unfiltered. Whether it is off is read back from the store
on resume (the same rows give the same audit).
"""
from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable, Mapping

from cellsearch.data import DataConfig
from cellsearch.evaluators.child import ChildConfig
from cellsearch.evaluators.estimator import SCORING_ERRORS, Estimator, error_text
from cellsearch.evaluators.predictor import LearnedPredictor
from cellsearch.evaluators.vote import ScoreVote
from cellsearch.evaluators.zero_cost import SCORES, ZeroCostScorer, split_score
from cellsearch.search.audit import Audit, AuditedChild, audit
from cellsearch.search.store import ScoreRow, TrialStore
from cellsearch.strategies.base import Proposal, Strategy
from cellsearch.validation import ConfigError

__all__ = ["MIN_FOR_TAU", "PreJudger", "build_estimator"]

log = logging.getLogger(__name__)

MIN_FOR_TAU = 10  # trained candidates needed before a low tau may switch the pre-judger off


def build_estimator(score: str, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]",
                    seed: int = 0, batch_size: int = 64, vote: "list[str] | None" = None, reference: int = 20,
                    predictor: "Mapping[str, Any] | None" = None) -> Estimator:
    """The estimator ``score`` names (see the module docstring); ConfigError for a bad name or setting."""
    if score == "vote":
        if vote is None:
            raise ConfigError("prejudge.score=vote needs prejudge.vote, the scores to vote (e.g. prejudge=vote)")
        return ScoreVote(list(vote), child, data, seed, batch_size, reference)
    if score == "predictor":
        settings = dict(predictor or {})
        known = ("members", "hidden", "epochs", "min_children")
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(f"unknown prejudge.predictor setting(s) {unknown}; known: {list(known)}")
        return LearnedPredictor(**settings, seed=seed)
    if not isinstance(score, str) or split_score(score)[0] not in SCORES:
        raise ConfigError(f"unknown prejudge.score {score!r}; choose one of {list(SCORES)} (a leading '-' prefers "
                          f"the lowest, e.g. -params), vote (prejudge=vote) or predictor (prejudge=predictor)")
    return ZeroCostScorer(score, child, data, seed, batch_size)


class PreJudger:
    """Ranks ``candidates`` proposals per round by the estimator ``score`` and trains the best."""

    def __init__(self, child: "ChildConfig | Mapping[str, Any]", data: "DataConfig | Mapping[str, Any]",
                 score: str = "naswot", candidates: int = 4, audit: int = 0, min_tau: float = 0.0, top_k: int = 3,
                 batch_size: int = 64, seed: int = 0, beat_params: bool = True, vote: "list[str] | None" = None,
                 reference: int = 20, predictor: "Mapping[str, Any] | None" = None) -> None:
        for name, value, low in (("candidates", candidates, 1), ("audit", audit, 0), ("top_k", top_k, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"prejudge.{name} must be an integer >= {low}, got {value!r}")
        if isinstance(min_tau, bool) or not isinstance(min_tau, (int, float)) or not -1 <= min_tau <= 1:
            raise ConfigError(f"prejudge.min_tau must be a number in [-1, 1] (a Kendall tau), got {min_tau!r}")
        if not isinstance(beat_params, bool):
            raise ConfigError(f"prejudge.beat_params must be true or false, got {beat_params!r}")
        if audit and candidates < 2:
            raise ConfigError("prejudge.audit needs prejudge.candidates >= 2 (audits train passed-over candidates)")
        self.estimator = build_estimator(score, child, data, seed, batch_size, vote, reference, predictor)
        self.score, self.candidates, self.audit = score, candidates, audit
        self.min_tau, self.top_k, self.seed, self.beat_params = float(min_tau), top_k, seed, beat_params
        self.active = True
        self.audit_ids: set[int] = set()
        self.last_audit: Audit | None = None
        self._waiting = False  # the estimator could not score yet (said once)

    # --- resuming ---------------------------------------------------------------------------------
    def resume(self, store: TrialStore) -> list[Proposal]:
        """Read the audits and the on/off state back from ``store``; return the audits still to train."""
        scores = store.scores()
        audits = {r.candidate_id: r for r in scores if r.audit and r.score == self.score}
        self.audit_ids = set(audits)
        self.last_audit = self.report(store)
        self.active = not self._should_switch_off(self.last_audit)
        return [Proposal(cid, row.genotype) for cid, row in sorted(audits.items()) if store.get(cid) is None]

    # --- one round --------------------------------------------------------------------------------
    def round(self, strategy: Strategy, store: TrialStore, budget: int, room: int,
              save_state: Callable[[], None]) -> list[tuple[Proposal, str]]:
        """Ask, score, keep the best (and maybe an audit), withdraw the rest; ``room``: children the budget
        still allows. Returns the proposals to evaluate with their roles ("search" or "audit")."""
        if not self._ready(strategy, store):  # the strategy's own proposal, unfiltered
            proposal = strategy.ask()
            save_state()
            return [(proposal, "search")]
        proposals = [strategy.ask() for _ in range(self.candidates)]
        first = proposals[0].trial_id
        # Rounds before this one (a round redone after a crash finds its own rows, with later ids).
        earlier = [r for r in store.scores() if r.candidate_id < first]
        round_no = len({r.round for r in earlier})
        audits_before = sum(1 for a in self.audit_ids if a < first)
        scored = [self.estimator(p.genotype) for p in proposals]
        for proposal, (value, _, error) in zip(proposals, scored):
            if value is None:
                log.warning("pre-judger %s: candidate %d unscored (%s); it ranks below the scored candidates and "
                            "the search goes on", self.score, proposal.trial_id, error)
        values = [-math.inf if s.value is None else s.value for s in scored]
        best = max(range(len(proposals)), key=lambda i: (values[i], -i))
        audited = self._audit_pick(round_no, audits_before, budget, room,
                                   [i for i in range(len(proposals)) if i != best])
        chosen_id = proposals[best].trial_id
        store.add_scores([ScoreRow(round_no, chosen_id, p.trial_id, p.genotype, self.score, scored[i].value,
                                   i == best, i == audited, scored[i].seconds) for i, p in enumerate(proposals)])
        for i, p in enumerate(proposals):
            if i != best:
                strategy.withdraw(p.trial_id)
        save_state()
        evaluate = [(proposals[best], "search")]
        if audited is not None:
            self.audit_ids.add(proposals[audited].trial_id)
            evaluate.append((proposals[audited], "audit"))
        return evaluate

    def _ready(self, strategy: Strategy, store: TrialStore) -> bool:
        """Prepare the estimator (the predictor refits to the children trained so far); False, said once, while
        it cannot score yet."""
        trained = [(r.genotype, r.val_accuracy) for r in store.rows() if r.ok and r.val_accuracy is not None]
        try:
            waiting = self.estimator.prepare(strategy.space, trained)
        except SCORING_ERRORS as err:
            waiting = f"it failed to prepare ({error_text(err)})"
        if waiting and not self._waiting:
            log.info("pre-judger %s cannot score yet: %s; the rounds go unfiltered until it can", self.score, waiting)
        self._waiting = bool(waiting)
        return not waiting

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
    def report(self, store: TrialStore) -> Audit:
        """The estimator's audit against val_accuracy over every trained candidate it scored."""
        value = {r.candidate_id: r.value for r in store.scores() if r.score == self.score and r.value is not None}
        children = [AuditedChild(value[r.trial_id], r.val_accuracy, r.params, r.role == "audit")
                    for r in store.rows() if r.ok and r.val_accuracy is not None and r.trial_id in value]
        if self.last_audit is not None and self.last_audit.num == len(children):
            return self.last_audit  # no scored child since (stored rows never change): the same audit, not redone
        return audit(self.score, children, self.top_k, self.seed)

    def _should_switch_off(self, report: Audit) -> bool:
        if report.num < MIN_FOR_TAU or math.isnan(report.tau):
            return False
        return report.tau < self.min_tau or (self.beat_params and report.below_params)

    def recorded(self, store: TrialStore) -> None:
        """After a child is stored: log the audit if the child was scored; switch off if the estimator fails."""
        report = self.report(store)
        scored_child = self.last_audit is None or report.num != self.last_audit.num
        self.last_audit = report
        if scored_child and report.num >= 2:
            log.info(report.line())
        if self.active and self._should_switch_off(report):
            self.active = False
            reason = (f"below prejudge.min_tau {self.min_tau:.3f}" if report.tau < self.min_tau else
                      f"below the parameter count's ({report.params_sign}: {report.params_tau:.3f}; the difference "
                      f"{report.params_gap} lies below 0)")
            log.warning("pre-judger %s switched off: Kendall tau %s is %s over %d trained children; the search goes "
                        "on unfiltered", self.score, report.stats["kendall_tau"], reason, report.num)

    def signals(self) -> dict[str, float]:
        """What the live view plots of the pre-judger now (prefixed ``prejudge/``); empty until it has audited."""
        signals = self.last_audit.signals() if self.last_audit is not None else {}
        return {**signals, "prejudge/active": float(self.active)} if signals else {}

    def summary(self, store: TrialStore) -> str:
        """How far the score was trusted: rounds filtered, candidates withdrawn and audited, its audit."""
        scores = [r for r in store.scores() if r.score == self.score]
        rounds = len({r.round for r in scores})
        report = self.report(store)
        trust = "trusted to the end" if self.active else f"switched off after {rounds} rounds"
        tau = str(report.stats["kendall_tau"]) if report.stats else "nan"
        return (f"pre-judger {self.score}: {rounds} rounds of {self.candidates} candidates, "
                f"{sum(not r.chosen for r in scores)} withdrawn, {report.num_audits} audited, "
                f"{sum(r.value is None for r in scores)} unscored; Kendall tau {tau} (parameter count "
                f"{report.params_sign}: {report.params_tau:.3f}) and top-{report.top_k} precision "
                f"{report.precision:.2f} against trained accuracy over {report.num} trained candidates; {trust}")
