"""The scheduler group and search.epoch_budget: defaults, bad values in one line, and resume refusing a change."""
from __future__ import annotations

import pytest

from cellsearch.search.run import _early_stopping, run_search
from cellsearch.search.schedulers import ASHA, Hyperband
from cellsearch.search.settings import ResumeError, check_settings, search_settings
from cellsearch.validation import ConfigError
from fidelity_helpers import CurveEvaluator


def test_the_default_is_no_scheduler_and_no_epoch_budget(compose):
    cfg = compose("run_dir=unused")
    assert cfg.scheduler.name == "none" and cfg.search.epoch_budget is None
    assert _early_stopping(cfg, CurveEvaluator(), cfg.child.epochs) == (None, 9, None)


def test_each_scheduler_is_built_against_the_evaluators_epochs(compose):
    asha, full, budget = _early_stopping(compose("scheduler=asha", "search.epoch_budget=300", "run_dir=unused"),
                                         CurveEvaluator(), 3)
    assert type(asha) is ASHA and asha.rungs() == [1, 3] and asha.max_epochs == full == 9 and budget == 300
    hyperband, _, _ = _early_stopping(compose("scheduler=hyperband", "scheduler.brackets=2", "run_dir=unused"),
                                      CurveEvaluator(), 3)
    assert type(hyperband) is Hyperband and hyperband.brackets == 2


@pytest.mark.parametrize("overrides, message", [
    (["scheduler=asha", "scheduler.reduction_factor=1"], r"^scheduler.reduction_factor must be an integer >= 2, got 1"),
    (["scheduler=asha", "scheduler.min_epochs=10"],
     r"^scheduler.min_epochs must be <= the epochs of a whole child \(9: child.epochs, or the evaluator's max_epochs\)"),
    (["scheduler=asha", "scheduler.min_epochs=3", "search.epoch_budget=2"],
     r"^search.epoch_budget=2 is smaller than one child's first segment \(3 epochs: scheduler.min_epochs\)"),
    (["search.epoch_budget=5"], r"^search.epoch_budget=5 is smaller than one child's first segment \(9 epochs: a whole "
                                r"child without a scheduler\)"),
    (["search.epoch_budget=0"], r"^search.epoch_budget must be an integer >= 1 or null, got 0"),
    (["scheduler=asha", "scheduler.reward_rule=best"], r"^scheduler.reward_rule must be one of \['last', 'rank'\]"),
    (["scheduler=hyperband", "scheduler.brackets=5"], r"^scheduler.brackets must be an integer in 1..3"),
    (["scheduler=asha", "+scheduler.eta=2"], r"^unknown scheduler setting\(s\) \['eta'\] for asha"),
])
def test_bad_settings_fail_in_one_line(compose, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        _early_stopping(compose(*overrides, "run_dir=unused"), CurveEvaluator(), 9)
    assert "\n" not in str(info.value)


def test_a_scheduler_with_an_evaluator_without_segments_is_refused_before_anything_runs(compose, tmp_path):
    cfg = compose("evaluator=oneshot", "scheduler=asha", "experiment=oneshot_quick_cpu", f"run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"^scheduler=asha trains children in segments, which the oneshot evaluator "
                                          r"cannot \(its max_epochs is None\): use scheduler=none, or an evaluator"):
        run_search(cfg)
    assert not (tmp_path / "trials.db").exists()


def test_resume_refuses_a_changed_scheduler_but_not_a_changed_epoch_budget(compose, tmp_path):
    check_settings(tmp_path, search_settings(compose("scheduler=asha", "search.epoch_budget=100", "run_dir=unused")))
    check_settings(tmp_path, search_settings(compose("scheduler=asha", "search.epoch_budget=200", "run_dir=unused")))
    with pytest.raises(ResumeError, match=r"scheduler.name: 'asha' -> 'none'"):
        check_settings(tmp_path, search_settings(compose("run_dir=unused")))
    with pytest.raises(ResumeError, match=r"scheduler.reduction_factor: 3 -> 2"):
        check_settings(tmp_path, search_settings(compose("scheduler=asha", "scheduler.reduction_factor=2",
                                                         "run_dir=unused")))
