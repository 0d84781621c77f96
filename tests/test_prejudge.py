"""The pre-judger and zero-cost scores: K candidates per round, the best trained, every score stored,
audits with Kendall tau, switch-off, exact resumption; end to end with real training through run_search."""
import math
import sqlite3

import pytest

from cellsearch.validation import ConfigError
from cellsearch.evaluators.child import ChildConfig
from cellsearch.evaluators.table import ground_truth, load_table
from cellsearch.evaluators.zero_cost import SCORES, ZeroCostScorer, check_score, kendall_tau, spearman_rho, top_k_precision
from cellsearch.search.loop import SearchLoop
from cellsearch.search.run import run_search
from cellsearch.search.prejudge import PreJudger
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy
from test_search import SPACE, Crash, InlineExecutor

CHILD = ChildConfig(cells_per_stage=1, channels=4, accelerator="cpu")
DATA = {"name": "synthetic", "synthetic_train_size": 100, "synthetic_test_size": 20, "image_size": 8}


def prejudged_search(run_dir, budget=8, crash=None, **prejudge):
    strategy = build_strategy("evolution", SPACE, seed=0, population_size=4, sample_size=2)
    judge = PreJudger(CHILD, DATA, **{"score": "params", "candidates": 3, "batch_size": 8, **prejudge})
    with TrialStore(run_dir / "trials.db") as store:
        loop = SearchLoop(strategy, InlineExecutor(**(crash or {})), store, run_dir, budget, prejudge=judge)
        summary = loop.run()
        return summary, judge.summary(store), strategy


def contents(run_dir):
    with TrialStore(run_dir / "trials.db") as store:
        trials = [(r.trial_id, r.genotype.key(), r.status, r.reward, r.role) for r in store.rows()]
        scores = [(s.round, s.trial_id, s.candidate_id, s.genotype.key(), s.value, s.chosen, s.audit)
                  for s in store.scores()]
    return sorted(trials), scores


def test_each_score_ranks_real_untrained_children():
    genotypes = [SPACE.sample(__import__("random").Random(i)) for i in range(2)]
    for name in SCORES:
        scorer = ZeroCostScorer(name, CHILD, DATA, seed=0, batch_size=8)
        values = [scorer(g)[0] for g in genotypes]
        assert all(v is not None and math.isfinite(v) for v in values), (name, values)
        assert scorer(genotypes[0])[0] == values[0]  # fixed weights and minibatch: the same score again


def test_rank_statistics():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert top_k_precision([4, 3, 2, 1], [1, 2, 4, 3], 2) == 0.0


def test_audits_are_trained_spread_over_the_run_and_resume_is_exact(tmp_path):
    (tmp_path / "ref").mkdir()
    summary, text, strategy = prejudged_search(tmp_path / "ref", audit=2)
    trials, scores = contents(tmp_path / "ref")
    assert len(trials) == 8 and [t[4] for t in trials].count("audit") == 2
    assert len(scores) == 3 * 6 and sum(s[5] for s in scores) == 6  # 6 rounds of 3, one chosen each
    assert strategy.num_told == 6  # audits and withdrawn candidates are not the strategy's trials
    assert "2 audited" in text and "Kendall tau" in text
    for crash in ({"crash_after_results": 3}, {"crash_after_submits": 4}):
        run_dir = tmp_path / f"run{len(crash)}{list(crash.values())[0]}"
        run_dir.mkdir()
        with pytest.raises(Crash):
            prejudged_search(run_dir, audit=2, crash=crash)
        prejudged_search(run_dir, audit=2)
        assert contents(run_dir) == (trials, scores)


def test_a_score_below_min_tau_switches_the_prejudger_off(tmp_path, caplog):
    # params against this landscape's reward (share of separable convs, unrelated to size): tau < 0.9
    summary, text, _ = prejudged_search(tmp_path, budget=14, audit=4, min_tau=0.9)
    assert "switched off" in caplog.text and "switched off after" in text
    with TrialStore(tmp_path / "trials.db") as store:
        assert len(store) == 14 and len({s.round for s in store.scores()}) < 14 - 4


def test_bad_prejudge_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"unknown prejudge.score 'jacob'; choose one of \['naswot'.*vote.*predictor"):
        PreJudger(CHILD, DATA, score="jacob")
    with pytest.raises(ConfigError, match="prejudge.score=vote needs prejudge.vote"):
        PreJudger(CHILD, DATA, score="vote")
    with pytest.raises(ConfigError, match="at least two zero-cost scores"):
        PreJudger(CHILD, DATA, score="vote", vote=["naswot"])
    with pytest.raises(ConfigError, match="unknown zero-cost score 'jacob'"):
        PreJudger(CHILD, DATA, score="vote", vote=["naswot", "jacob"])
    with pytest.raises(ConfigError, match=r"unknown prejudge.predictor setting\(s\) \['layers'\]"):
        PreJudger(CHILD, DATA, score="predictor", predictor={"layers": 3})
    with pytest.raises(ConfigError, match="prejudge.predictor.min_children must be an integer >= 2"):
        PreJudger(CHILD, DATA, score="predictor", predictor={"min_children": 1})
    with pytest.raises(ConfigError, match="beat_params must be true or false"):
        PreJudger(CHILD, DATA, beat_params="yes")
    with pytest.raises(ConfigError, match="candidates must be an integer >= 1"):
        PreJudger(CHILD, DATA, candidates=0)
    with pytest.raises(ConfigError, match="min_tau"):
        PreJudger(CHILD, DATA, min_tau=2)


@pytest.mark.slow
def test_constrained_prejudged_search_end_to_end(tmp_path, compose, tiny_search):
    """Real children: objective=constrained stores accuracy, params and mult_adds and rewards that are not
    the accuracies; prejudge=naswot candidates=4 with a budget of 3 trains 3 and stores 12 scores."""
    cfg = compose(*tiny_search, "search=random", "search.budget=3", "seed=1", f"run_dir={tmp_path}",
                  "objective=constrained", "objective.metric=params", "objective.target=20000", "prejudge=naswot",
                  "prejudge.candidates=4")
    summary = run_search(cfg)
    assert summary.num_trained == 3
    db = sqlite3.connect(tmp_path / "trials.db")
    rows = db.execute("SELECT reward, val_accuracy, params, mult_adds FROM trials").fetchall()
    assert len(rows) == 3 and all(None not in r for r in rows)
    assert all(r[0] == pytest.approx(r[1] * (r[2] / 20000) ** -0.07) and r[0] != r[1] for r in rows)
    assert db.execute("SELECT COUNT(*), SUM(chosen) FROM scores WHERE score = 'naswot'").fetchone() == (12, 3)
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_size_scores_match_the_table_and_a_minus_prefers_the_lowest(tmp_path):
    table = load_table("testbed")
    genotype, row = ground_truth("testbed")[0]
    child = {**table.child, "accelerator": "cpu", "logger": None}
    for name, measured in (("params", row.params), ("mult_adds", row.mult_adds)):  # what training measured
        assert ZeroCostScorer(name, child, table.data, batch_size=8)(genotype)[0] == measured
        assert ZeroCostScorer(f"-{name}", child, table.data, batch_size=8)(genotype)[0] == -measured
    with pytest.raises(ConfigError, match="leading '-'"):
        check_score("-bogus")
    prejudged_search(tmp_path, budget=4, score="-params")
    with TrialStore(tmp_path / "trials.db") as store:
        scores = store.scores()
    for round_no in {s.round for s in scores}:
        candidates = [s for s in scores if s.round == round_no]
        chosen = next(s for s in candidates if s.chosen)
        assert chosen.value == max(s.value for s in candidates) and chosen.value < 0  # the fewest parameters
