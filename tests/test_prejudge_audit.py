"""The pre-judger's estimators beyond a single zero-cost score (a vote, a learned predictor), its in-run
audit (statistics with intervals, the parameter count as the bar, the live view's signals) and unscored
candidates; real tiny children and the testbed table, no mocks."""
import dataclasses
import logging
import math
import random

import numpy as np
import pytest
import torch

from cellsearch.evaluators.predictor import LearnedPredictor, encode
from cellsearch.evaluators.ranking import kendall_tau
from cellsearch.evaluators.table import load_table
from cellsearch.evaluators.vote import ScoreVote, mean_rank
from cellsearch.search.audit import AuditedChild, audit
from cellsearch.search.loop import SearchLoop
from cellsearch.search.prejudge import MIN_FOR_TAU, PreJudger
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy
from test_prejudge import CHILD, DATA, contents
from test_search import SPACE, Crash, InlineExecutor

PREDICTOR = {"members": 2, "hidden": 16, "epochs": 60, "min_children": 4}


class SizeRanksExecutor(InlineExecutor):
    """The same children, but the stored parameter count ranks them perfectly (params = accuracy x 10^6)."""

    def wait(self, timeout=None):
        return [(i, dataclasses.replace(r, metrics={**r.metrics, "params": int(r.metrics["val_accuracy"] * 1e6)})
                 if r.ok else r) for i, r in super().wait(timeout)]


def search(run_dir, budget=12, crash=None, executor=InlineExecutor, **settings):
    strategy = build_strategy("random", SPACE, seed=0)
    judge = PreJudger(CHILD, DATA, **{"candidates": 3, "batch_size": 8, **settings})
    with TrialStore(run_dir / "trials.db") as store:
        loop = SearchLoop(strategy, executor(**(crash or {})), store, run_dir, budget, prejudge=judge)
        loop.run()
        return judge, judge.summary(store), loop._signals()


def test_mean_rank_and_the_vote_place_a_cell_among_fixed_reference_cells():
    assert mean_rank([[1, 2, 3], [3, 2, 1]]) == [1.0, 1.0, 1.0]
    assert mean_rank([[1, 2, 2], [1, 2, 3]]) == [0.0, 1.25, 1.75]  # ties share their mean rank
    vote = ScoreVote(["-params", "naswot"], CHILD, DATA, batch_size=8, reference=4)
    assert vote.prepare(SPACE, []) == ""
    cells = [SPACE.sample(random.Random(i)) for i in range(3)]
    values = [vote(g).value for g in cells]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 1
    assert vote(cells[0]).value == values[0]  # a cell's vote does not depend on the cells scored before it


def test_the_learned_predictor_improves_with_more_children():
    """On the shipped testbed table: fitted to 60 cells it ranks 150 others better than fitted to 10."""
    table = load_table("testbed")
    cells = [table.space.decode(r.actions) for r in table.rows]
    accuracy = np.array([r.mean_accuracy for r in table.rows])
    order = np.random.default_rng(0).permutation(len(cells))
    held_out = [cells[i] for i in order[-150:]]
    assert encode(table.space, held_out[:2]).shape == (2, sum(table.space.layout.num_choices_list) + 2 * 7)
    taus = []
    torch.set_num_threads(1)
    for n in (10, 60):
        predictor = LearnedPredictor(members=3, epochs=100)
        assert predictor.prepare(table.space, [(cells[i], accuracy[i]) for i in order[:n]]) == ""
        taus.append(kendall_tau(predictor.predict(held_out), accuracy[order[-150:]]))
    assert taus[1] > taus[0] + 0.05 and taus[1] > 0.4, taus
    assert "3 of the 10 trained children" in LearnedPredictor().prepare(table.space, [(cells[0], 0.5)] * 3)


def test_audit_statistics_intervals_and_the_parameter_count_bar():
    accuracy = [0.1 * i for i in range(12)]
    children = [AuditedChild(value=float(i % 4), accuracy=a, params=1000 - i, audit=i % 3 == 0)
                for i, a in enumerate(accuracy)]
    report = audit("naswot", children)
    assert report.num == 12 and report.num_audits == 4
    assert set(report.stats) == {"kendall_tau", "spearman_rho", "top10_recall", "junk_filter"}
    tau = report.stats["kendall_tau"]
    assert tau.low <= tau.value <= tau.high and tau.value == pytest.approx(kendall_tau([c.value for c in children],
                                                                                        accuracy))
    # the parameter count ranks these children perfectly backwards: -params is the bar, clearly above the score
    assert report.params_sign == "-params" and report.params_tau == 1.0 and report.below_params
    assert report.params_gap.value == pytest.approx(tau.value - 1.0) and report.params_gap.high < 0
    assert "pre-judger naswot audit over 12 trained children (4 audits): Kendall tau" in report.line()
    signals = report.signals()
    assert {"prejudge/kendall_tau", "prejudge/kendall_tau_low", "prejudge/junk_filter_high",
            "prejudge/params_kendall_tau"} <= set(signals)
    assert not audit("naswot", children[:1]).stats and audit("naswot", []).signals() == {}


def test_a_prejudger_below_the_parameter_count_switches_itself_off(tmp_path, caplog):
    # the stored parameter count ranks the trained children perfectly; naswot does not (min_tau -1: only the
    # parameter count can switch it off)
    caplog.set_level(logging.INFO)
    judge, text, _ = search(tmp_path, budget=16, score="naswot", audit=4, min_tau=-1.0, executor=SizeRanksExecutor)
    assert judge.last_audit.below_params and judge.last_audit.params_gap.high < 0 and not judge.active
    assert "switched off: Kendall tau" in caplog.text and "below the parameter count's (params: 1.000" in caplog.text
    assert "switched off after" in text
    judge, _, _ = search(tmp_path, budget=16, score="naswot", audit=4, min_tau=-1.0, executor=SizeRanksExecutor)
    assert not judge.active  # read back on resume
    judge, _, _ = search(tmp_path / "fair", budget=16, score="naswot", audit=4, min_tau=-1.0)
    assert judge.active  # with the ordinary children it is not clearly worse than the parameter count


def test_the_learned_predictor_prejudges_a_search_and_resumes_exactly(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (tmp_path / "ref").mkdir()
    judge, text, signals = search(tmp_path / "ref", budget=14, score="predictor", audit=3, predictor=PREDICTOR,
                                  beat_params=False)
    assert "pre-judger predictor cannot score yet: 0 of the 4 trained children" in caplog.text
    assert caplog.text.count("cannot score yet") == 1  # said once, not every round
    assert "pre-judger predictor audit over" in caplog.text and judge.active
    assert signals["prejudge/active"] == 1.0 and signals["prejudge/audited"] == judge.last_audit.num >= 4
    assert all(signals[f"prejudge/{s}_low"] <= signals[f"prejudge/{s}"] <= signals[f"prejudge/{s}_high"]
               for s in ("kendall_tau", "spearman_rho", "top10_recall", "junk_filter"))
    reference = contents(tmp_path / "ref")
    assert {s[4] for s in reference[1]} != {None} and len(reference[0]) == 14
    run_dir = tmp_path / "crashed"
    run_dir.mkdir()
    with pytest.raises(Crash):
        search(run_dir, budget=14, score="predictor", audit=3, predictor=PREDICTOR, beat_params=False,
               crash={"crash_after_results": 9})
    search(run_dir, budget=14, score="predictor", audit=3, predictor=PREDICTOR, beat_params=False)
    assert contents(run_dir) == reference


def test_a_candidate_that_cannot_be_scored_is_marked_unscored_and_the_search_goes_on(tmp_path, caplog):
    judge = PreJudger(CHILD, DATA, score="grad_norm", candidates=3, batch_size=8)
    x, y = judge.estimator.minibatch()
    judge.estimator._batch = (torch.full_like(x, math.nan), y)  # bad input: every gradient is NaN
    strategy = build_strategy("random", SPACE, seed=0)
    with TrialStore(tmp_path / "trials.db") as store:
        SearchLoop(strategy, InlineExecutor(), store, tmp_path, 4, prejudge=judge).run()
        assert len(store) == 4 and len(store.scores()) == 12
        assert all(s.value is None for s in store.scores()) and sum(s.chosen for s in store.scores()) == 4
        assert "12 unscored" in judge.summary(store)
    lines = [r.getMessage() for r in caplog.records if "unscored" in r.getMessage()]
    assert len(lines) == 12 and "pre-judger grad_norm: candidate 0 unscored (the score is NaN)" in lines[0]
    assert all("\n" not in line for line in lines)
