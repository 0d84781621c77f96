"""Strategy state on disk: snapshots plus a journal replay to the exact state; a torn last record is
dropped. Withdrawn proposals do not distort a strategy."""
import random

import pytest
import torch

from cellsearch.search.strategy_state import StateFileError, StrategyStateFiles, encode_record, read_records
from cellsearch.space.genotype import SearchSpace
from cellsearch.strategies import build_strategy
from test_strategies import FAST as STRATEGY_SETTINGS

SPACE = SearchSpace(ops=("identity", "conv_1x1", "sep_conv_3x3", "max_pool_3x3"), num_blocks=2)
# test_strategies' small settings, with PPO's imitation of the best cells on (its state must restore too)
FAST = {**STRATEGY_SETTINGS, "ppo": {**STRATEGY_SETTINGS["ppo"], "imitation_weight": 0.5}}


def same(a, b) -> bool:
    """Deep equality of two state_dicts (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        if a.is_floating_point():  # NaN marks the reward of a pending or failed trial
            return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        return torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN rewards of pending trials


def drive(strategy, files: StrategyStateFiles | None, steps: int, seed: int = 0) -> None:
    """Asks, out-of-order tells (some failed), withdrawals and outside trials, saving after each, as
    the search loop does."""
    rng = random.Random(seed)
    pending = [p.trial_id for p in strategy.pending()]
    for _ in range(steps):
        u = rng.random()
        if len(pending) < 3 or u < 0.4:
            pending.append(strategy.ask().trial_id)
        elif u < 0.45:
            strategy.withdraw(pending.pop(rng.randrange(len(pending))))
        elif u < 0.5:
            strategy.add_trial(SPACE.sample(rng), rng.random())
        else:
            trial_id = pending.pop(rng.randrange(len(pending)))
            strategy.tell(trial_id, None if rng.random() < 0.1 else rng.random())
        if files is not None:
            files.save(strategy)


@pytest.mark.parametrize("name", sorted(FAST))
def test_snapshot_plus_journal_restores_the_exact_state(tmp_path, name):
    strategy = build_strategy(name, SPACE, seed=3, **FAST[name])
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=7)
    drive(strategy, files, 40)
    files.close()
    restored = build_strategy(name, SPACE, seed=3, **FAST[name])
    replayed = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=7).load(restored)
    assert 0 < replayed < 7  # the last snapshot plus a few journaled events
    assert same(restored.state_dict(), strategy.state_dict())
    # and it carries on exactly as the original does
    assert [restored.ask().genotype for _ in range(5)] == [strategy.ask().genotype for _ in range(5)]


def test_a_torn_last_record_is_ignored_and_the_search_resumes_exactly(tmp_path):
    strategy = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=10_000)
    drive(strategy, files, 20)
    before_last = strategy.state_dict()
    proposal = strategy.ask()
    files.save(strategy)
    files.close()
    journal = files.journal_path
    journal.write_bytes(journal.read_bytes()[:-3])  # killed in the middle of writing the last record

    restored = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    resumed = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=10_000)
    resumed.load(restored)
    assert same(restored.state_dict(), before_last)
    # the lost ask is asked again: the same cell under the same id; new records append after the cut
    again = restored.ask()
    assert (again.trial_id, again.genotype) == (proposal.trial_id, proposal.genotype)
    resumed.save(restored)
    drive(restored, resumed, 10, seed=5)
    drive(strategy, None, 10, seed=5)
    resumed.close()
    third = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    StrategyStateFiles(tmp_path / "state.pt").load(third)
    assert same(third.state_dict(), strategy.state_dict())


def test_journal_records_older_than_the_snapshot_are_skipped(tmp_path):
    """A kill between writing a snapshot and emptying the journal leaves records the snapshot covers."""
    strategy = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=10_000)
    drive(strategy, files, 15)
    stale = files.journal_path.read_bytes()
    files.snapshot(strategy)
    files.close()
    files.journal_path.write_bytes(stale)
    restored = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    assert StrategyStateFiles(tmp_path / "state.pt").load(restored) == 0
    assert same(restored.state_dict(), strategy.state_dict())


def test_a_journal_of_another_search_is_refused(tmp_path):
    for seed in (0, 1):
        files = StrategyStateFiles(tmp_path / f"{seed}" / "state.pt", snapshot_every=10_000)
        files.path.parent.mkdir()
        drive(build_strategy("random", SPACE, seed=seed), files, 10)
        files.close()
    (tmp_path / "0" / "state.pt.journal").write_bytes((tmp_path / "1" / "state.pt.journal").read_bytes())
    with pytest.raises(StateFileError, match="belongs to another search"):
        StrategyStateFiles(tmp_path / "0" / "state.pt").load(build_strategy("random", SPACE, seed=0))


@pytest.mark.parametrize("name", ["ppo", "reinforce", "evolution", "progressive"])
def test_withdrawn_proposals_do_not_count(name):
    """Every third proposal is withdrawn: learning only sees told trials, and nothing stalls."""
    strategy = build_strategy(name, SPACE, seed=0, **FAST[name])
    told = 0
    for i in range(60):
        proposal = strategy.ask()
        if i % 3 == 2:
            strategy.withdraw(proposal.trial_id)
        else:
            strategy.tell(proposal.trial_id, random.Random(i).random())
            told += 1
    if name in ("ppo", "reinforce"):
        assert strategy.num_updates == told // strategy.update_every
        assert set(strategy._log_probs) == set(strategy._batch)  # nothing kept of withdrawn proposals
    elif name == "evolution":
        assert all(strategy.is_told(i) for i in strategy.population)
        # the random start lasts population_size *evaluated* proposals: the withdrawn ones add to it
        assert strategy.num_asked - strategy.num_withdrawn >= strategy.population_size
    else:
        assert strategy.stage_blocks == SPACE.num_blocks  # the stages did not wait for withdrawn proposals


def test_the_snapshot_does_not_grow_with_the_search_and_the_journal_holds_every_event(tmp_path):
    strategy = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=50)
    drive(strategy, files, 100)
    early = files.path.stat().st_size
    drive(strategy, files, 600)
    files.close()
    assert files.path.stat().st_size == early  # no history in it: population, counters, generators only
    records, _ = read_records(files.journal_path)
    assert [r[0] for r in records] == list(range(strategy.num_events))  # append-only, from the first event
    restored = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    StrategyStateFiles(tmp_path / "state.pt").load(restored)
    assert same(restored.state_dict(), strategy.state_dict())


@pytest.mark.parametrize("name", ["ppo", "progressive"])
def test_a_snapshot_from_before_the_append_only_journal_converts_and_resumes_exactly(tmp_path, name):
    """Format 1 kept the history in the snapshot and emptied the journal at each snapshot."""
    strategy = build_strategy(name, SPACE, seed=2, **FAST[name])
    drive(strategy, None, 30)
    torch.save(strategy.state_dict(), tmp_path / "state.pt")  # the old snapshot ...
    strategy.take_events()
    drive(strategy, None, 5)
    (tmp_path / "state.pt.journal").write_bytes(b"".join(encode_record(e) for e in strategy.take_events()))
    restored = build_strategy(name, SPACE, seed=2, **FAST[name])
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=4)
    assert files.load(restored) > 0  # ... and the records after it
    assert same(restored.state_dict(), strategy.state_dict())
    drive(restored, files, 20, seed=7)  # journaled from here on, snapshots now and then
    drive(strategy, None, 20, seed=7)
    files.close()
    again = build_strategy(name, SPACE, seed=2, **FAST[name])
    StrategyStateFiles(tmp_path / "state.pt").load(again)
    assert same(again.state_dict(), strategy.state_dict())
    assert [again.ask().genotype for _ in range(3)] == [strategy.ask().genotype for _ in range(3)]


def test_saving_after_close_appends_to_the_journal(tmp_path):
    strategy = build_strategy("random", SPACE, seed=0)
    files = StrategyStateFiles(tmp_path / "state.pt", snapshot_every=1000)
    drive(strategy, files, 10)
    files.close()
    drive(strategy, files, 10)
    files.snapshot(strategy)
    files.close()
    restored = build_strategy("random", SPACE, seed=0)
    StrategyStateFiles(tmp_path / "state.pt").load(restored)
    assert same(restored.state_dict(), strategy.state_dict())
