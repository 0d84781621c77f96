"""The pre-judger's audit: how well its estimator ranks the children that were trained, as the search goes.

Over every trained child the estimator scored (the chosen candidates and the audited passed-over ones),
:func:`audit` measures the estimator's Kendall tau, Spearman, top-10% recall and junk-filter rate (the
share of the bottom quarter it would reject while keeping 95% of the top tenth; see
:mod:`cellsearch.evaluators.ranking`) against trained accuracy, each with a 95% bootstrap interval over
the children, and the Kendall tau of the parameter count on the same children with the sign that ranks
them better (params or -params: a short child training can favour small cells), with the paired bootstrap
interval of the difference. An estimator whose whole interval lies below 0 ranks worse than counting
parameters: :attr:`Audit.below_params` (a point estimate below it, from ten noisy children, is not enough).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from cellsearch.evaluators.ranking import Interval, bootstrap_difference, kendall_tau, rank_report, top_k_precision

__all__ = ["AUDIT_RESAMPLES", "Audit", "AuditedChild", "audit"]

AUDIT_RESAMPLES = 200  # bootstrap resamples per audit: an interval to a few hundredths, in milliseconds
SHORT = {"kendall_tau": "Kendall tau", "spearman_rho": "Spearman", "top10_recall": "top-10% recall",
         "junk_filter": "junk filter"}


@dataclass(frozen=True)
class AuditedChild:
    """A trained child the estimator scored."""

    value: float        # the estimator's score
    accuracy: float     # val_accuracy after training
    params: int | None  # the child's parameter count (None: not measured)
    audit: bool         # a passed-over candidate trained to check the estimator


@dataclass(frozen=True)
class Audit:
    """The estimator ``score`` against trained accuracy over ``num`` children (``num_audits`` of them audits)."""

    score: str
    num: int
    num_audits: int
    stats: dict[str, Interval]  # RANK_STATISTICS' names; empty below two children
    top_k: int
    precision: float            # top-k precision (the k the estimator ranks first among the k best)
    params_sign: str            # "params" or "-params": the sign of the parameter count that ranks better
    params_tau: float           # its Kendall tau on the same children (NaN when unknown)
    params_gap: Interval | None  # the estimator's tau minus that, with its paired bootstrap interval

    @property
    def tau(self) -> float:
        return self.stats["kendall_tau"].value if self.stats else math.nan

    @property
    def below_params(self) -> bool:
        """Whether the estimator ranks the children worse than the parameter count (with its better sign)."""
        return self.params_gap is not None and self.params_gap.high < 0

    def line(self) -> str:
        """The audit in one log line."""
        if not self.stats:
            return f"pre-judger {self.score}: {self.num} trained children scored, too few to audit"
        stats = ", ".join(f"{SHORT[name]} {interval}" for name, interval in self.stats.items())
        return (f"pre-judger {self.score} audit over {self.num} trained children ({self.num_audits} audits): {stats} "
                f"(95% bootstrap intervals); the parameter count ({self.params_sign}) has Kendall tau "
                f"{self.params_tau:.3f}, {self.score}'s minus that {self.params_gap}")

    def signals(self) -> dict[str, float]:
        """The audit for the live view: each statistic with its interval, the parameter count's tau, the
        number of children (names prefixed ``prejudge/``)."""
        if not self.stats:
            return {}
        signals = {"prejudge/audited": float(self.num), "prejudge/params_kendall_tau": self.params_tau}
        for name, interval in self.stats.items():
            signals.update({f"prejudge/{name}": interval.value, f"prejudge/{name}_low": interval.low,
                            f"prejudge/{name}_high": interval.high})
        return signals


def audit(score: str, children: Sequence[AuditedChild], top_k: int = 3, seed: int = 0) -> Audit:
    """Audit the estimator ``score`` over the trained ``children`` it scored (see the module docstring)."""
    values, accuracies = [c.value for c in children], [c.accuracy for c in children]
    stats = rank_report(values, accuracies, AUDIT_RESAMPLES, seed) if len(children) >= 2 else {}
    sized = [c for c in children if c.params is not None]
    params_tau = kendall_tau([c.params for c in sized], [c.accuracy for c in sized]) if len(sized) >= 2 else math.nan
    sign = -1 if params_tau < 0 else 1
    gap = None if math.isnan(params_tau) else bootstrap_difference(
        kendall_tau, [c.value for c in sized], [sign * c.params for c in sized], [c.accuracy for c in sized],
        AUDIT_RESAMPLES, seed=seed)
    k = min(top_k, len(children))
    precision = top_k_precision(values, accuracies, top_k) if children else math.nan
    return Audit(score, len(children), sum(c.audit for c in children), stats, k, precision,
                 "-params" if sign < 0 else "params", abs(params_tau), gap)
