"""The live view in TensorBoard (cellsearch.search.live), read back with TensorBoard's own reader and server.

Searches here score children with test_search's cheap function (every fifth trial fails) or a reward
landscape (evaluator=landscape), so a search of ten children takes about a second; the one-shot and DARTS
tests train tiny supernets on digits.
"""
import json
import logging
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from cellsearch.data import ConfigError
from cellsearch.search.live import LIVE_DIR, CurveWriter, TensorBoardObserver, search_observers, tensorboard_enabled
from cellsearch.search.front import front_rows
from cellsearch.search.loop import SearchLoop
from cellsearch.search.run import run_search
from cellsearch.search.settings import search_settings
from cellsearch.search.objectives import ParetoObjective
from cellsearch.search.store import TrialStore
from cellsearch.strategies import build_strategy
from test_oneshot import SPACE as ONESHOT_SPACE
from test_oneshot import evaluator
from test_resume import SCHEMA1_RUN
from test_search import SPACE, STRATEGY_SETTINGS, Crash, CrashAfterCommit, InlineExecutor

LANDSCAPE_SEARCH = ["experiment=quick_cpu", "evaluator=landscape", "search=random"]


def search(run_dir, budget, live=True, name="ppo", store=None, objective=None, **executor):
    strategy = build_strategy(name, SPACE, seed=0, **STRATEGY_SETTINGS[name])
    observers = [TensorBoardObserver(run_dir / LIVE_DIR)] if live else []
    store = store if store is not None else TrialStore(run_dir / "trials.db")
    try:
        return SearchLoop(strategy, InlineExecutor(**executor), store, run_dir, budget, objective,
                          observers=observers).run()
    finally:
        store.close()


def read(log_dir):
    """Every event in ``log_dir`` as TensorBoard reads it (points past a purge step hidden)."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def stored_rows(run_dir):
    with TrialStore(run_dir / "trials.db") as store:
        return store.rows()


def session(run_dir, trial_id):
    """(hparams, status, metrics) of one child's HParams session."""
    events = read(run_dir / LIVE_DIR / "trials" / f"trial_{trial_id:05d}")
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    metrics = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    return hparams, api_pb2.Status.Name(end.status), metrics


def check_children(run_dir):
    """The search run holds one point per stored child, in finishing order, as trials.db has them."""
    rows = stored_rows(run_dir)
    events = read(run_dir / LIVE_DIR / "search")
    failures = [sum(not r.ok for r in rows[:i + 1]) for i in range(len(rows))]
    assert scalars(events, "search/failures") == list(zip(range(1, len(rows) + 1), failures))
    ok = [(i + 1, r.reward) for i, r in enumerate(rows) if r.ok]
    rewards = scalars(events, "search/reward")  # TensorBoard keeps scalars in float32
    assert [step for step, _ in rewards] == [step for step, _ in ok]
    assert [value for _, value in rewards] == pytest.approx([reward for _, reward in ok])
    best = [max(reward for step, reward in ok if step <= i) for i in range(ok[0][0], len(rows) + 1)]
    assert [value for _, value in scalars(events, "search/best_reward")] == pytest.approx(best)
    return rows, events


def test_every_child_its_signals_and_an_hparams_row_are_written_as_they_finish(tmp_path):
    search(tmp_path, 10, capacity=2)
    rows, events = check_children(tmp_path)
    assert [r.trial_id for r in rows] != sorted(r.trial_id for r in rows)  # finishing order is not trial order
    assert [step for step, _ in scalars(events, "strategy/baseline")] == list(range(1, 11))
    assert scalars(events, "strategy/updates")[-1][1] == 3  # update_every=3: 9 of 10 rewards learned from
    assert scalars(events, "child/params") == [(i + 1, r.params) for i, r in enumerate(rows) if r.ok]  # exact: < 2**24
    images = events.Images("best_cell")
    assert images and images[0].step == 1 and images[0].encoded_image_string.startswith(b"\x89PNG")
    for row in rows:
        hparams, status, metrics = session(tmp_path, row.trial_id)
        assert (hparams["trial_id"], hparams["strategy"], hparams["status"]) == (row.trial_id, "ppo", row.status)
        assert status == ("STATUS_SUCCESS" if row.ok else "STATUS_FAILURE")
        ops = [op for cell in (row.genotype.normal, row.genotype.reduce) for b in cell.blocks for op in b.ops]
        assert {k: v for k, v in hparams.items() if k.startswith("ops/")} == {f"ops/{op}": ops.count(op)
                                                                              for op in SPACE.ops}
        assert sum(v for k, v in hparams.items() if k.startswith("combine/")) == 4  # 2 cells x 2 blocks
        if row.ok:
            assert metrics["trial/reward"] == pytest.approx(row.reward)
            assert metrics["trial/params"] == row.params
        else:
            assert "trial/reward" not in metrics


def test_a_resumed_search_adds_what_the_view_lacks_and_shows_no_child_twice(tmp_path):
    search(tmp_path, 4, live=False)  # four children while the view was off
    with pytest.raises(Crash):  # the process dies while it commits the 7th child: neither row nor tell is stored
        search(tmp_path, 10, store=CrashAfterCommit(tmp_path / "trials.db", 7))
    search(tmp_path, 10)
    rows, events = check_children(tmp_path)
    assert len(rows) == 10
    # Signals come from the running strategy: children written from the store have none. Children 1-4 were
    # written on the second start, 5-6 as they finished, 6 again on the third start (the last child written
    # may be partial, so it is written again and TensorBoard hides the first copy), 7-10 live.
    assert [step for step, _ in scalars(events, "strategy/baseline")] == [5, 7, 8, 9, 10]
    assert sorted(p.name for p in (tmp_path / LIVE_DIR / "trials").iterdir()) == [
        f"trial_{r.trial_id:05d}" for r in sorted(rows, key=lambda r: r.trial_id)]


def test_a_live_view_that_cannot_be_written_is_one_warning_and_the_search_goes_on(tmp_path, caplog):
    (tmp_path / LIVE_DIR).write_text("a file where the live view's folder should be")
    with caplog.at_level(logging.WARNING):
        summary = search(tmp_path, 6)
    assert summary.num_trials == 6 and len(stored_rows(tmp_path)) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("the TensorBoard live view failed in search_started")


def test_the_pareto_front_is_drawn_when_it_changes(tmp_path):
    search(tmp_path, 10, objective=ParetoObjective("params"))
    rows, events = check_children(tmp_path)
    fronts = [[r.trial_id for r in front_rows(rows[:i], "params")] for i in range(1, len(rows) + 1)]
    assert scalars(events, "front/size") == [(i + 1, len(front)) for i, front in enumerate(fronts)]
    last_change = max(i + 1 for i in range(len(fronts)) if i == 0 or fronts[i] != fronts[i - 1])
    images = [image.step for image in events.Images("pareto_front")]
    assert images[0] == 1 and images[-1] >= last_change  # at most every 10 s, and at the end if it changed
    assert session(tmp_path, rows[0].trial_id)[0]["objective"] == "pareto"


def test_a_search_from_the_config_writes_the_view_unless_the_setting_is_off(tmp_path, monkeypatch, caplog, compose):
    run_search(compose(*LANDSCAPE_SEARCH, "search.budget=4", f"run_dir={tmp_path / 'on'}"))
    rows, _ = check_children(tmp_path / "on")
    assert len(rows) == 4 and session(tmp_path / "on", rows[-1].trial_id)[0]["strategy"] == "random"
    assert search_observers(compose("live.tensorboard=false"), tmp_path / "off") == []
    with pytest.raises(ConfigError, match="live.tensorboard must be true or false, got 'yes'"):
        tensorboard_enabled(compose("live.tensorboard=yes"))
    for module in ("torch.utils.tensorboard", "tensorboard.plugins.hparams.plugin_data_pb2"):
        monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cellsearch.search.live"):
        assert search_observers(compose(), tmp_path) == []
    assert [r.getMessage() for r in caplog.records] == [
        "no live view in TensorBoard: tensorboard is not installed (pip install tensorboard); live.tensorboard=false "
        "says this was meant"]


def test_a_run_directory_from_before_the_setting_resumes_with_the_view_on(tmp_path, resume):
    run_dir = tmp_path / "run"
    shutil.copytree(SCHEMA1_RUN, run_dir)
    assert resume(run_dir).live.tensorboard is True
    assert resume(run_dir, "live.tensorboard=false").live.tensorboard is False
    assert "live" not in search_settings(resume(run_dir))  # where a search is shown does not define its rewards


def test_the_supernet_reports_its_training_phases(tmp_path, compose):
    ev = evaluator(tmp_path, warmup_epochs=1, phase_epochs=0.5, train_every=2, max_phases=1)
    observers = search_observers(compose(), tmp_path, ev)
    curves = observers[-1]
    assert isinstance(curves, CurveWriter)
    rng = random.Random(0)
    for trial in range(4):
        assert ev.evaluate(ONESHOT_SPACE.sample(rng), trial_id=trial).ok
    curves.close()
    events = read(tmp_path / LIVE_DIR / "supernet")
    assert scalars(events, "supernet/steps") == [(0, 6), (1, 9)]  # the warm-up (6 steps), one phase of 3
    assert all(0 <= accuracy <= 1 for _, accuracy in scalars(events, "supernet/train_accuracy"))
    assert [step for step, _ in scalars(events, "supernet/loss")] == [0, 1]


def test_darts_writes_its_loss_and_architecture_weights_per_epoch(tmp_path, compose, tiny_search):
    args = ["experiment=darts", *tiny_search, "search.cells_per_stage=1", "search.channels=4",
            "search.batch_size=50", "search.steps_per_epoch=1", "search.budget=1", "search.final_candidates=1",
            "search.final_top_k=1", "search.val_batches=1", f"run_dir={tmp_path}"]
    run_search(compose(*args))
    events = read(tmp_path / LIVE_DIR / "darts")
    assert [step for step, _ in scalars(events, "darts/loss")] == [1]  # step: the epoch
    for cell_type in ("normal", "reduce"):
        weights = [scalars(events, f"{cell_type}_ops/{op}")[-1][1] for op in ONESHOT_SPACE.ops]
        assert sum(weights) == pytest.approx(1, abs=1e-5)  # the mean of softmaxes over the ops
        assert [image.step for image in events.Images(f"{cell_type}_op_weights")] == [1]


def test_a_curve_writer_that_fails_is_one_warning(tmp_path, caplog):
    (tmp_path / "curves").write_text("not a folder")
    curves = CurveWriter(tmp_path / "curves", "the test curves")
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            curves.scalars({"loss": 1.0}, step)
    curves.close()
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("the test curves failed")


class SlowExecutor(InlineExecutor):
    """Children that take half a second each, so the search runs while TensorBoard watches it."""

    def wait(self, timeout=None):
        time.sleep(0.5)
        return super().wait(timeout)


@pytest.mark.slow
def test_the_tensorboard_server_shows_each_child_while_the_search_runs(tmp_path):
    """Start TensorBoard on a run directory (127.0.0.1, a free port), run a search beside it, and ask the
    server's HTTP API for every child as it finishes (within 30 s), then for the HParams row of each."""
    (tmp_path / LIVE_DIR).mkdir()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / LIVE_DIR),
                               "--host", "127.0.0.1", "--port", "0", "--reload_interval", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = server_url(server, timeout=120)

        def get(path, body=None):
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)

        errors = []

        def run_search_beside():
            strategy = build_strategy("ppo", SPACE, seed=0, **STRATEGY_SETTINGS["ppo"])
            try:
                with TrialStore(tmp_path / "trials.db") as store:
                    SearchLoop(strategy, SlowExecutor(), store, tmp_path, 12,
                               observers=[TensorBoardObserver(tmp_path / LIVE_DIR)]).run()
            except Exception as err:  # reported by the test below
                errors.append(err)

        searching = threading.Thread(target=run_search_beside)
        searching.start()
        seen = {}  # step -> the point's age when the server first showed it
        deadline = time.monotonic() + 180
        while len(seen) < 12 and not errors and time.monotonic() < deadline:
            if "search/failures" in get("/data/plugin/scalars/tags").get("search", {}):
                for wall_time, step, _ in get("/data/plugin/scalars/scalars?run=search&tag=search%2Ffailures"):
                    seen.setdefault(step, time.time() - wall_time)
            time.sleep(0.5)
        searching.join(timeout=60)
        assert not errors and sorted(seen) == list(range(1, 13)), errors
        assert max(seen.values()) < 30, seen  # each child shown within 30 s of being written
        rows = stored_rows(tmp_path)
        deadline = time.monotonic() + 60
        while len(get("/data/plugin/scalars/tags")) < 1 + len(rows) and time.monotonic() < deadline:
            time.sleep(1)  # the last sessions are picked up at the next reload
        experiment = get("/data/plugin/hparams/experiment", {"experimentName": ""})
        assert {"strategy", "trial_id", "ops/conv_3x3", "combine/add"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert {"trial/reward", "trial/params"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
        groups = get("/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE"], "startIndex": 0,
            "sliceSize": 100, "colParams": [{"hparam": "trial_id", "order": "ORDER_ASC"}]})["sessionGroups"]
        assert [g["hparams"]["trial_id"] for g in groups] == sorted(r.trial_id for r in rows)
        rewards = {g["hparams"]["trial_id"]: m["value"] for g in groups for m in g["metricValues"]
                   if m["name"]["tag"] == "trial/reward"}
        assert rewards == pytest.approx({r.trial_id: r.reward for r in rows if r.ok})
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_url(server, timeout):
    """The address TensorBoard prints once it serves ("TensorBoard 2.x at http://127.0.0.1:PORT/"). A thread
    reads its output to the end, so the server never blocks on a full pipe."""
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", lines.get(timeout=1))
        except queue.Empty:
            if server.poll() is not None:
                break
            continue
        if found:
            return found.group(1)
    raise AssertionError(f"TensorBoard did not start within {timeout} s (exit status {server.poll()})")
