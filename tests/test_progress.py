"""Progress lines on long steps: when the reporter logs (a fake clock), its ETA, the heartbeat thread, and
that an export and a retrain without Lightning's progress bar do log progress."""
from __future__ import annotations

import logging
import re
import time

import pytest
import torch

from cellsearch.deploy import export_network, load_network
from cellsearch.evaluators.child import ChildConfig, build_training, quiet_lightning
from cellsearch.data import DataConfig
from cellsearch.progress import Heartbeat, StepProgress, TrainingProgress, eta_seconds, format_seconds, track
from cellsearch.retrain import run_retrain

TIMING = re.compile(r"elapsed (\S+) \| ETA (\S+)$")


class FakeClock:
    """Seconds that pass only when the test says so (or by ``tick`` on every reading)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def messages(caplog, logger: str = "cellsearch.progress") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_eta_is_the_time_left_at_the_pace_so_far():
    assert eta_seconds(30.0, 0.25) == pytest.approx(90.0)
    assert eta_seconds(30.0, 1.0) == 0.0
    assert eta_seconds(5.0, 0.0) is None  # nothing done: no pace to go by
    assert [format_seconds(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_step_progress_logs_at_most_every_interval_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    clock = FakeClock()
    progress = StepProgress("table", 10, units="cells", interval=10, clock=clock)
    for now in (3, 6, 9.9, 10, 14, 19, 20.5, 21, 22, 30):  # the step ends at these times
        clock.now = now
        progress.update()
    lines = messages(caplog)
    # a line once 10 s passed since the last one (at 10 and 20.5), and one at the 10th and last cell
    assert lines == ["table: 4/10 cells | elapsed 10s | ETA 15s",
                     "table: 7/10 cells | elapsed 20s | ETA 9s",
                     "table: 10/10 cells | elapsed 30s | ETA 0s"]


def test_step_progress_eta_counts_down_while_a_step_runs():
    clock = FakeClock()
    progress = StepProgress("export", 4, units="formats", clock=clock)
    assert progress.eta(5) is None  # no format done: no pace yet
    clock.now = 10
    progress.update()  # 10 s per format, 3 to go
    assert [progress.eta(now) for now in (10, 15, 25)] == [30, 25, 20]  # not below the 2 after the running one
    clock.now = 40
    progress.update(3)
    assert progress.eta(41) == 0


def test_step_progress_says_where_it_stopped_when_the_block_ends_early(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        with StepProgress("bench", 4, clock=clock, interval=0) as progress:
            clock.now = 2
            progress.update(note="first")
            raise KeyboardInterrupt
    assert messages(caplog) == ["bench: 1/4 steps (first) | elapsed 2s | ETA 6s",
                                "bench: 1/4 steps (stopped by KeyboardInterrupt) | elapsed 2s | ETA 6s"]


def test_track_yields_every_item_and_counts_them(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    assert list(track(["a", "b", "c"], "cells", clock=FakeClock(tick=6), interval=10)) == ["a", "b", "c"]
    lines = messages(caplog)
    assert lines[-1].startswith("cells: 3/3 steps |") and len(lines) == 2  # one once 12 s passed, one at the end


def test_heartbeat_logs_while_the_step_runs_and_its_thread_stops(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    with Heartbeat("exporting", interval=0.05, status=lambda: "format 2/4") as beat:
        time.sleep(0.3)
        assert beat.running
    assert not beat.running
    lines = messages(caplog)
    assert len(lines) >= 2 and all(re.fullmatch(r"still exporting \(\d+s; format 2/4\)", line) for line in lines)
    time.sleep(0.15)
    assert len(messages(caplog)) == len(lines)  # nothing after the block ended


def test_step_progress_heartbeat_logs_while_a_long_step_runs(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    with StepProgress("stand-alone", 2, units="candidates", interval=0, heartbeat=0.05) as progress:
        time.sleep(0.3)  # the first candidate trains: no step is done, lines come from the thread
        progress.update(note="first")
        assert progress._beat.running
    assert not progress._beat.running
    lines = messages(caplog)
    during = [line for line in lines if line.startswith("stand-alone: 0/2 candidates | elapsed 0s | ETA -")]
    assert len(during) >= 2  # no candidate done yet: no estimate either
    assert any(line.startswith("stand-alone: 1/2 candidates (first) |") for line in lines)
    assert lines[-1].startswith("stand-alone: 1/2 candidates (stopped) |")  # the block ended before candidate 2


def test_heartbeat_stops_when_the_step_fails():
    with pytest.raises(ValueError):
        with Heartbeat("failing", interval=0.05) as beat:
            raise ValueError("the step failed")
    assert not beat.running


def test_export_logs_each_format_started_and_finished_with_an_eta(caplog, tmp_path):
    caplog.set_level(logging.INFO, "cellsearch")
    torch.manual_seed(0)
    model = load_network("nasnet_a", model_name="cellnet_cifar", model_args=dict(cells_per_stage=1, channels=4))
    export_network(model, ["python", "safetensors"], tmp_path, "net", input_size=(3, 16, 16))
    lines = messages(caplog, "cellsearch")
    assert lines[0] == "export net: writing python (1/2)"
    assert re.fullmatch(r"export net: 1/2 formats \(python in \d+s\) \| elapsed \d+s \| ETA \d+s", lines[1])
    assert lines[2] == "export net: writing safetensors (2/2)"
    assert re.fullmatch(r"export net: 2/2 formats \(safetensors in \d+s\) \| elapsed \d+s \| ETA 0s", lines[3])


def test_training_progress_logs_within_epochs_by_the_clock_and_after_each(caplog):
    caplog.set_level(logging.INFO, "cellsearch.progress")
    child = ChildConfig(cells_per_stage=1, channels=4, epochs=2, batch_size=32, limit_train_batches=4,
                        limit_val_batches=1, val_every_n_epochs=1, logger=None)
    data = DataConfig(name="synthetic", synthetic_train_size=128, synthetic_test_size=16, image_size=8, val_size=32)
    clock = FakeClock(tick=4)  # every reading of the clock, once a batch, is 4 s later
    with quiet_lightning():
        trainer, module, datamodule = build_training("nasnet_a", child, data, checkpointing=False,
                                                     callbacks=[TrainingProgress("fake", clock=clock)])
        trainer.fit(module, datamodule=datamodule)
        clock.tick = 11  # a test batch that takes longer than the interval
        trainer.test(module, datamodule=datamodule)
    fake = [line for line in messages(caplog) if line.startswith("fake: ")]
    testing = [line for line in fake if line.startswith("fake: testing, batch ")]
    fake = [line for line in fake if line not in testing]
    within = [line for line in fake if ", batch " in line]
    ends = [line for line in fake if ", batch " not in line]
    assert within and all(re.match(r"fake: epoch [12]/2, batch [1-3]/3 \| train loss \d", line) for line in within)
    assert [line.split(" | ")[0] for line in ends] == ["fake: epoch 1/2", "fake: epoch 2/2"]
    assert "val acc" in ends[0] and ends[-1].endswith("ETA 0s")
    assert testing == ["fake: testing, batch 1/1 | elapsed 11s | ETA 0s"]
    etas = [TIMING.search(line).group(2) for line in fake]
    assert "-" not in etas  # every line has an estimate
    # build_training adds its own reporter when the bar is off (the child's default), labelled by run name
    assert any(line.startswith("retrain: epoch 2/2 |") for line in messages(caplog))


def test_retrain_without_the_progress_bar_logs_progress(caplog, tmp_path, compose):
    caplog.set_level(logging.INFO, "cellsearch")
    cfg = compose("experiment=quick_cpu", "task=retrain", "cell=nasnet_a", "child.cells_per_stage=1",
                  "child.channels=4", "child.epochs=2", "child.batch_size=50", "child.accelerator=cpu", "child.devices=1",
                  "child.enable_progress_bar=false", "child.logger=null", "data.train_subset=100", "data.cutout=4",
                  f"run_dir={tmp_path}")
    with quiet_lightning():
        run_retrain(cfg)
    lines = [line for line in messages(caplog) if line.startswith("retrain: epoch")]
    assert [line.split(" | ")[0] for line in lines] == ["retrain: epoch 1/2", "retrain: epoch 2/2"]
    assert TIMING.search(lines[0]) and "train loss" in lines[0]
