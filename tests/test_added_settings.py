"""Every setting that defines a search has a value for the run directories that predate it.

A run directory records its settings (search_settings.yaml); a setting added since is missing there and
reads as its value in ADDED_SETTINGS. A setting with neither makes every older run unresumable
("child.ema_decay: '<unset>' -> 0.0"), so this test composes today's configuration, one option of each
group at a time, and checks every key it records against each fixture run directory.
"""
from pathlib import Path

import pytest
import yaml

from cellsearch.search.settings import ADDED_SETTINGS, SETTINGS_FILE, fill_added_settings, flatten, search_settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OLDEST_RUN = FIXTURES / "schema1_run"
# The search group of every strategy option as the oldest release recorded it (the run above used evolution).
OLDEST_SEARCH_OPTIONS = FIXTURES / "schema1_search_options.yaml"
# The groups whose options change the recorded keys (data and child options share their group's schema).
GROUPS = ("space", "search", "evaluator", "objective", "prejudge", "data", "child")


def recorded(run_dir: Path) -> dict:
    """The flat settings a fixture run directory recorded."""
    return flatten(yaml.safe_load((run_dir / SETTINGS_FILE).read_text()))


def lacking_defaults(recorded_flat: dict, current_flat: dict) -> list[str]:
    """Keys ``current_flat`` records that a run with ``recorded_flat`` neither holds nor gets from ADDED_SETTINGS,
    in groups set to the same option (same ``_target_``) in both; and keys the run holds that are gone now."""
    old = fill_added_settings(recorded_flat)

    def option(flat: dict, group: str) -> object:
        # The scheduler and space groups' options are named, not built from a _target_ (scheduler_from_config,
        # space_from_settings)
        return flat.get(f"{group}.name") if group in ("scheduler", "space") else flat.get(f"{group}._target_")

    def same_option(key: str) -> bool:
        group = key.split(".")[0]
        return option(current_flat, group) == option(old, group)

    added = [f"{k} (add it to ADDED_SETTINGS (ADDED_OPTION_SETTINGS for one option) in cellsearch/search/settings.py "
             f"with the value that reproduces the behaviour from before it existed)"
             for k in current_flat if k not in old and same_option(k)]
    gone = [f"{k} (recorded by older runs but no longer a setting: a resume would see it as changed)"
            for k in recorded_flat if k not in current_flat and same_option(k)]
    return added + gone


@pytest.fixture(scope="module")
def composed(compose) -> list[tuple[str, dict]]:
    """(overrides, flat settings) for today's configuration, each option of each group in one of them
    (the i-th composition takes each group's i-th option: six compositions, not thirty)."""
    options = {group: sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")) for group in GROUPS}
    options["search"].remove("darts")  # not an ask/tell search: it records no settings to check
    settings = []
    for i in range(max(len(names) for names in options.values())):
        overrides = [f"{group}={names[i]}" for group, names in options.items() if i < len(names)]
        settings.append((" ".join(overrides), flatten(search_settings(compose(*overrides, "run_dir=unused")))))
    return settings


def fixture_runs() -> list[Path]:
    return sorted(p.parent for p in FIXTURES.glob(f"*/{SETTINGS_FILE}"))


@pytest.mark.parametrize("run_dir", fixture_runs(), ids=lambda p: p.name)
def test_every_setting_has_a_value_for_runs_that_predate_it(run_dir, composed):
    old = recorded(run_dir)
    problems = sorted({p for _, flat in composed for p in lacking_defaults(old, flat)})
    assert not problems, f"settings without a value for {run_dir.name}: " + "; ".join(problems)


@pytest.mark.parametrize("option", sorted(yaml.safe_load(OLDEST_SEARCH_OPTIONS.read_text())))
def test_every_strategy_setting_has_a_value_for_runs_that_predate_it(option, composed):
    search = yaml.safe_load(OLDEST_SEARCH_OPTIONS.read_text())[option]
    old = {**{k: v for k, v in recorded(OLDEST_RUN).items() if not k.startswith("search.")},
           **flatten({"search": search})}
    problems = sorted({p for _, flat in composed for p in lacking_defaults(old, flat) if p.startswith("search.")})
    assert not problems, f"search={option} settings without a value (ADDED_OPTION_SETTINGS): " + "; ".join(problems)


def test_the_oldest_fixture_predates_every_added_setting():
    """An entry of ADDED_SETTINGS the oldest run already records is not an added setting (or it changed)."""
    old = recorded(OLDEST_RUN)
    assert not [k for k in ADDED_SETTINGS if k in old]


def test_a_new_setting_without_a_default_fails_the_check(composed, monkeypatch):
    old = recorded(OLDEST_RUN)
    today = composed[0][1]
    assert lacking_defaults(old, today) == []
    with_new = {**today, "child.new_knob": 3}
    problems = lacking_defaults(old, with_new)
    assert len(problems) == 1 and problems[0].startswith("child.new_knob (add it to ADDED_SETTINGS")
    monkeypatch.setitem(ADDED_SETTINGS, "child.new_knob", 3)
    assert lacking_defaults(old, with_new) == []
    # a setting of an option the old run did not use (search=ppo) is that option's business
    assert lacking_defaults(old, {**today, "search._target_": "cellsearch.strategies.PPO", "search.x": 1}) == []
