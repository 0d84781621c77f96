"""The last step of a one-shot search, as the papers take it: train the best candidates stand-alone.

A supernet's ranking is a cheap guess. The candidates with the best one-shot estimates are trained
stand-alone (the search's child, :class:`~cellsearch.evaluators.standalone.TrainEvaluator`), the best
cell is named on stand-alone accuracy, and the run reports how far the supernet's ranking of these
candidates agreed with the stand-alone one (Kendall tau, Spearman rho, top-k precision), so a
user sees whether it could be trusted on their task.

Files in the run directory: ``standalone.db`` (a trial store of the candidates: reward = stand-alone
validation accuracy, metric ``oneshot_val_accuracy`` = the estimate; a rerun trains only the
missing ones), ``ranking.yaml`` and ``best_cell.yaml`` (with both figures in its ``source``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from cellsearch.evaluators.standalone import TrainEvaluator
from cellsearch.progress import INTERVAL, StepProgress, format_seconds
from cellsearch.search.atomic import atomic_write
from cellsearch.search.report import BEST_CELL_FILE
from cellsearch.search.store import TrialRow, TrialStore
from cellsearch.space.genotype import Genotype
from cellsearch.evaluators.ranking import kendall_tau, spearman_rho, top_k_precision

if TYPE_CHECKING:
    from cellsearch.evaluators.oneshot import OneShotEvaluator

__all__ = ["Candidate", "FinalReport", "finish_oneshot_search", "kendall_tau", "oneshot_candidates", "rank_agreement",
           "spearman_rho", "train_candidates"]

log = logging.getLogger(__name__)

STANDALONE_FILE = "standalone.db"
RANKING_FILE = "ranking.yaml"


@dataclass(frozen=True)
class Candidate:
    """A cell picked from the supernet: the search trial it came from and its one-shot estimate."""

    trial_id: int
    genotype: Genotype
    oneshot: float


@dataclass
class FinalReport:
    """Both figures per candidate, the cell named best on stand-alone accuracy, and rank agreement."""

    rows: list[tuple[Candidate, float | None]]
    best: Candidate | None
    best_accuracy: float | None
    agreement: dict[str, float]


def oneshot_candidates(rows: list[TrialRow], count: int) -> list[Candidate]:
    """The ``count`` best distinct cells of a search by one-shot estimate (its reward)."""
    seen: set[str] = set()
    picked = []
    for row in sorted((r for r in rows if r.ok and r.reward is not None), key=lambda r: -r.reward):
        key = row.genotype.key()
        if key not in seen:
            seen.add(key)
            picked.append(Candidate(row.trial_id, row.genotype, row.reward))
        if len(picked) == count:
            break
    return picked


def rank_agreement(estimates: list[float], truths: list[float], top_k: int) -> dict[str, float]:
    """Kendall tau and Spearman rho between ``estimates`` and ``truths``, and top-k precision: the share of
    the ``top_k`` best by estimate that are among the ``top_k`` best by truth (NaN below two pairs)."""
    n = len(estimates)
    if n < 2:
        return {"kendall_tau": math.nan, "spearman_rho": math.nan, "top_k_precision": math.nan, "top_k": top_k, "n": n}
    tau, rho = kendall_tau(estimates, truths), spearman_rho(estimates, truths)
    k = min(top_k, n)
    return {"kendall_tau": float(tau), "spearman_rho": float(rho), "top_k_precision": top_k_precision(estimates, truths, k),
            "top_k": k, "n": n}


def train_candidates(candidates: list[Candidate], evaluator: TrainEvaluator, run_dir: Path, seed: int,
                     top_k: int) -> FinalReport:
    """Train every candidate stand-alone (skipping those ``standalone.db`` holds), name the best on
    stand-alone accuracy in ``best_cell.yaml``, and write ``ranking.yaml``."""
    results: list[tuple[Candidate, float | None]] = []
    with TrialStore(run_dir / STANDALONE_FILE) as store:
        stored = sum(store.get(c.trial_id) is not None for c in candidates)
        # a line per candidate, and one every INTERVAL seconds while a candidate trains
        with StepProgress("stand-alone", len(candidates), units="candidates", interval=0, logger=log, done=stored,
                          heartbeat=INTERVAL) as progress:
            for candidate in candidates:
                row = store.get(candidate.trial_id)
                if row is None:
                    result = evaluator.evaluate(candidate.genotype, trial_id=candidate.trial_id, seed=seed)
                    result = replace(result, metrics={**result.metrics, "oneshot_val_accuracy": candidate.oneshot})
                    row = store.add(candidate.trial_id, candidate.genotype, result,
                                    result.metric("val_accuracy") if result.ok else None)
                    accuracy = f"{row.reward:.4f}" if row.reward is not None else f"FAILED ({row.error})"
                    progress.update(note=f"trial {candidate.trial_id}, one-shot {candidate.oneshot:.4f}, "
                                         f"stand-alone {accuracy} in {format_seconds(row.seconds)}")
                results.append((candidate, row.reward if row.ok else None))
    trained = [(c, acc) for c, acc in results if acc is not None]
    agreement = rank_agreement([c.oneshot for c, _ in trained], [acc for _, acc in trained], top_k)
    best, best_accuracy = max(trained, key=lambda t: t[1]) if trained else (None, None)
    report = FinalReport(results, best, best_accuracy, agreement)
    _write(report, run_dir)
    return report


def _write(report: FinalReport, run_dir: Path) -> None:
    data = {
        "agreement": report.agreement,
        "candidates": [{"trial": c.trial_id, "oneshot_val_accuracy": c.oneshot, "standalone_val_accuracy": acc}
                       for c, acc in report.rows],
    }
    atomic_write(run_dir / RANKING_FILE, lambda tmp: tmp.write_text(yaml.safe_dump(data, sort_keys=False)))
    if report.best is not None:
        source = (f"cellsearch one-shot search in {run_dir}: trial {report.best.trial_id}, stand-alone val_accuracy "
                  f"{report.best_accuracy:.4f}, one-shot estimate {report.best.oneshot:.4f}")
        genotype = replace(report.best.genotype, name="", source=source)
        atomic_write(run_dir / BEST_CELL_FILE, lambda tmp: tmp.write_text(genotype.to_yaml()))
    a = report.agreement
    lines = [f"{'trial':>5}  {'one-shot':>8}  {'stand-alone':>11}"]
    lines += [f"{c.trial_id:>5}  {c.oneshot:>8.4f}  {acc if acc is None else format(acc, '.4f'):>11}"
              for c, acc in sorted(report.rows, key=lambda t: -t[0].oneshot)]
    lines.append(f"supernet ranking over {a['n']} cells trained stand-alone: Kendall tau {a['kendall_tau']:.3f}, "
                 f"Spearman {a['spearman_rho']:.3f}, top-{a['top_k']} precision {a['top_k_precision']:.2f}")
    if report.best is not None:
        lines.append(f"best cell on stand-alone accuracy: trial {report.best.trial_id} ({report.best_accuracy:.4f}; "
                     f"one-shot {report.best.oneshot:.4f}) -> {run_dir / BEST_CELL_FILE}")
    log.info("\n".join(lines))


def finish_oneshot_search(evaluator: "OneShotEvaluator", rows: list[TrialRow], run_dir: Path, seed: int) -> FinalReport:
    """Train the search's best ``evaluator.config.final_candidates`` cells by one-shot estimate stand-alone."""
    config = evaluator.config
    candidates = oneshot_candidates(rows, config.final_candidates)
    evaluator.release()
    log.info("training the %d best cells by one-shot estimate stand-alone (%s)", len(candidates), run_dir)
    return train_candidates(candidates, TrainEvaluator(evaluator.child, evaluator.data), run_dir, seed,
                            config.final_top_k)
