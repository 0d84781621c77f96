"""Strategy state in trials.db: a snapshot plus the events after it replay to the exact state; what was
not committed is asked again; the state files of older run directories are imported on upgrade.
Withdrawn proposals do not distort a strategy."""
import io
import random
import sqlite3

import pytest
import torch

from cellsearch.search.legacy_state import LEGACY_STATE_FILE, encode_record, record_crc
from cellsearch.search.store import TrialStore
from cellsearch.search.store_schema import MIGRATIONS, SCHEMA_VERSION, TRIALS_V1
from cellsearch.search.strategy_state import StrategyState, StrategyStateError
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


def drive(strategy, state: StrategyState | None, steps: int, seed: int = 0) -> None:
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
        if state is not None:
            state.save(strategy)




def stored_state(path, snapshot_every: int = 1000) -> StrategyState:
    return StrategyState(TrialStore(path), snapshot_every=snapshot_every)


@pytest.mark.parametrize("name", sorted(FAST))
def test_snapshot_plus_events_restores_the_exact_state(tmp_path, name):
    strategy = build_strategy(name, SPACE, seed=3, **FAST[name])
    state = stored_state(tmp_path / "trials.db", snapshot_every=7)
    drive(strategy, state, 40)
    state.store.close()
    restored = build_strategy(name, SPACE, seed=3, **FAST[name])
    replayed = stored_state(tmp_path / "trials.db", snapshot_every=7).load(restored)
    assert 0 < replayed < 7  # the last snapshot plus a few stored events
    assert same(restored.state_dict(), strategy.state_dict())
    # and it carries on exactly as the original does
    assert [restored.ask().genotype for _ in range(5)] == [strategy.ask().genotype for _ in range(5)]


def test_an_ask_never_committed_is_asked_again_and_new_events_follow_the_stored_ones(tmp_path):
    strategy = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    state = stored_state(tmp_path / "trials.db", snapshot_every=10_000)
    drive(strategy, state, 20)
    before_last = strategy.state_dict()
    proposal = strategy.ask()  # the process dies before this ask is stored
    state.store.close()

    restored = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    resumed = stored_state(tmp_path / "trials.db", snapshot_every=10_000)
    resumed.load(restored)
    assert same(restored.state_dict(), before_last)
    again = restored.ask()  # the same cell under the same id
    assert (again.trial_id, again.genotype) == (proposal.trial_id, proposal.genotype)
    resumed.save(restored)
    drive(restored, resumed, 10, seed=5)
    drive(strategy, None, 10, seed=5)
    assert [e[0] for e in resumed.store.events()] == list(range(strategy.num_events))
    third = build_strategy("ppo", SPACE, seed=1, **FAST["ppo"])
    StrategyState(resumed.store).load(third)
    assert same(third.state_dict(), strategy.state_dict())


def test_a_rolled_back_transaction_stores_neither_the_row_nor_the_tell(tmp_path):
    from cellsearch.evaluators import EvalResult

    strategy = build_strategy("random", SPACE, seed=0)
    state = stored_state(tmp_path / "trials.db")
    proposal = strategy.ask()
    state.save(strategy)
    with pytest.raises(RuntimeError, match="killed"):
        with state.store.transaction():
            state.store.add(proposal.trial_id, proposal.genotype, EvalResult("ok", {"val_accuracy": 0.5}, 1.0), 0.5)
            strategy.tell(proposal.trial_id, 0.5)
            state.save(strategy)
            raise RuntimeError("killed before the commit")
    assert len(state.store) == 0 and [e[1] for e in state.store.events()] == ["ask"]
    restored = build_strategy("random", SPACE, seed=0)
    StrategyState(state.store).load(restored)
    assert [p.trial_id for p in restored.pending()] == [proposal.trial_id]  # trained again on resume


def test_events_older_than_the_snapshot_are_kept_and_not_replayed(tmp_path):
    strategy = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    state = stored_state(tmp_path / "trials.db", snapshot_every=10_000)
    drive(strategy, state, 15)
    state.snapshot(strategy)
    restored = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    assert StrategyState(state.store).load(restored) == 0
    assert same(restored.state_dict(), strategy.state_dict())


def test_a_damaged_snapshot_names_the_store(tmp_path):
    strategy = build_strategy("random", SPACE, seed=0)
    state = stored_state(tmp_path / "trials.db")
    drive(strategy, state, 5)
    state.store.put_snapshot(state.store.snapshot()[:100])
    with pytest.raises(StrategyStateError, match=r"cannot read the strategy state in .*trials.db .*truncated or damaged"):
        StrategyState(state.store).load(build_strategy("random", SPACE, seed=0))


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



def test_the_snapshot_does_not_grow_with_the_search_and_the_events_hold_every_event(tmp_path):
    strategy = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    state = stored_state(tmp_path / "trials.db", snapshot_every=50)
    drive(strategy, state, 100)
    early = len(state.store.snapshot())
    drive(strategy, state, 600)
    assert len(state.store.snapshot()) == early  # no history in it: population, counters, generators only
    assert [e[0] for e in state.store.events()] == list(range(strategy.num_events))  # append-only, from the first
    restored = build_strategy("evolution", SPACE, seed=0, **FAST["evolution"])
    StrategyState(state.store).load(restored)
    assert same(restored.state_dict(), strategy.state_dict())


# --- run directories of older releases: strategy_state.pt and its journal beside a schema-2 trials.db ------

def schema2_run(run_dir, snapshot: bytes, journal: bytes):
    """A run directory as the release before schema 3 left it (no children stored: only the state matters)."""
    run_dir.mkdir()
    db = sqlite3.connect(run_dir / "trials.db")
    for statement in (TRIALS_V1, *MIGRATIONS[1], "PRAGMA user_version = 2"):
        db.execute(statement)
    db.close()
    (run_dir / LEGACY_STATE_FILE).write_bytes(snapshot)
    (run_dir / (LEGACY_STATE_FILE + ".journal")).write_bytes(journal)
    return run_dir / "trials.db"


def legacy_format_2(strategy, covered: list) -> bytes:
    """A format-2 snapshot: the state without trials, the history from event 0, the CRC of its last event."""
    state = strategy.state_dict(include_trials=False)
    state["history"] = {"start": 0, "trials": None, "last_crc": record_crc(covered[-1]) if covered else 0}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_a_schema_2_run_is_imported_in_one_transaction_and_its_files_renamed(tmp_path):
    strategy = build_strategy("evolution", SPACE, seed=4, **FAST["evolution"])
    drive(strategy, None, 20)
    covered = strategy.take_events()
    snapshot = legacy_format_2(strategy, covered)
    drive(strategy, None, 6)
    later = strategy.take_events()
    records = b"".join(encode_record(e) for e in covered + later)
    path = schema2_run(tmp_path / "run", snapshot, records + encode_record(later[0])[:5])  # a torn tail
    restored = build_strategy("evolution", SPACE, seed=4, **FAST["evolution"])
    assert stored_state(path).load(restored) == len(later)
    assert same(restored.state_dict(), strategy.state_dict())
    assert sorted(p.name for p in path.parent.iterdir() if "strategy" in p.name) == [
        "strategy_state.pt.journal.migrated", "strategy_state.pt.migrated"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_journal_of_another_search_is_refused_when_imported(tmp_path):
    runs = []
    for seed in (0, 1):
        strategy = build_strategy("random", SPACE, seed=seed)
        drive(strategy, None, 10)
        strategy.ask()  # the last event differs between the two searches
        events = strategy.take_events()
        runs.append((legacy_format_2(strategy, events), b"".join(encode_record(e) for e in events)))
    path = schema2_run(tmp_path / "run", runs[0][0], runs[1][1])
    with pytest.raises(StrategyStateError, match="belongs to another search"):
        stored_state(path).load(build_strategy("random", SPACE, seed=0))


@pytest.mark.parametrize("name", ["ppo", "progressive"])
def test_a_snapshot_from_before_the_append_only_journal_converts_and_resumes_exactly(tmp_path, name):
    """Format 1 kept the history in the snapshot and emptied the journal at each snapshot."""
    strategy = build_strategy(name, SPACE, seed=2, **FAST[name])
    drive(strategy, None, 30)
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)  # the old snapshot ...
    strategy.take_events()
    drive(strategy, None, 5)
    path = schema2_run(tmp_path / "run", buffer.getvalue(), b"".join(encode_record(e) for e in strategy.take_events()))
    restored = build_strategy(name, SPACE, seed=2, **FAST[name])
    state = stored_state(path, snapshot_every=4)
    assert state.load(restored) > 0  # ... and the records after it
    assert same(restored.state_dict(), strategy.state_dict())
    drive(restored, state, 20, seed=7)  # stored from here on, snapshots now and then
    drive(strategy, None, 20, seed=7)
    again = build_strategy(name, SPACE, seed=2, **FAST[name])
    StrategyState(state.store).load(again)
    assert same(again.state_dict(), strategy.state_dict())
    assert [again.ask().genotype for _ in range(3)] == [strategy.ask().genotype for _ in range(3)]
