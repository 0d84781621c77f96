"""One writer per run directory: a second process is refused at once, a dead holder's lock is taken over."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pytest

import cellsearch.search.lock
from cellsearch.search.lock import LOCK_FILE, RunDirBusy, RunDirLock, check_not_locked, lock_run_dir
from test_train import cli, stored

# The holder loads lock.py alone (it imports only the standard library): importing the cellsearch package
# would cost seconds of torch's start-up in each holder.
HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[3])
lock_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_module)
lock = lock_module.RunDirLock(sys.argv[1]).acquire()
print("held", flush=True)
if sys.argv[2] == "die":
    import os; os._exit(0)  # dies without releasing: the kernel drops the flock, the file still names it
time.sleep(60)
"""


def hold(directory, how="hold"):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), how, cellsearch.search.lock.__file__],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(RunDirBusy, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            RunDirLock(tmp_path).acquire()
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            check_not_locked(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with lock_run_dir(tmp_path):  # free again once the holder is gone
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()  # a clean release removes the file


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_notice(tmp_path, caplog):
    dead = hold(tmp_path, "die")
    dead.wait()
    with caplog.at_level(logging.WARNING, logger="cellsearch.search.lock"):
        with lock_run_dir(tmp_path):
            pass
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and f"left by pid {dead.pid}" in notices[0] and "no longer running" in notices[0]


def test_run_dir_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(RunDirBusy, match="is a file; choose another run directory"):
            lock_run_dir(where)


@pytest.mark.slow
def test_two_searches_on_one_run_dir(tmp_path, tiny_search):
    """The first search trains all its children; the second is refused within seconds, naming the first's pid,
    and touches nothing in the run directory."""
    run_dir, budget = tmp_path / "run", 3
    args = [*tiny_search, "search=ppo", f"search.budget={budget}", f"hydra.run.dir={run_dir}"]
    first = cli(*args, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run_dir / "trials.db").exists():
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.1)
    # Hydra's files of the run, written before the search starts (the first search keeps writing its own files
    # meanwhile, some through temporary files renamed into place: listing those would race with it)
    before = {p: p.stat().st_mtime_ns for p in (run_dir / ".hydra").iterdir()}
    start = time.monotonic()
    second = cli(*args, timeout=300)
    assert time.monotonic() - start < 10  # refused before Hydra and torch are imported (0.4 s on an idle machine)
    assert second.returncode == 2
    assert second.stderr.startswith("error: ") and second.stderr.count("\n") == 1, second.stderr
    assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert before and {p: p.stat().st_mtime_ns for p in before if p.exists()} == before  # untouched by the second
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert [t for t, *_ in stored(run_dir)] == list(range(budget))
    assert not (run_dir / LOCK_FILE).exists()


def test_unwritable_run_dir_is_one_clear_error(tmp_path):
    if os.geteuid() == 0:  # root may write anywhere but in /sys
        where = "/sys/cellsearch-run"
    else:
        tmp_path.chmod(0o500)
        where = tmp_path / "run"
    try:
        with pytest.raises(RunDirBusy, match="cannot write in run directory .* choose a directory you can write"):
            lock_run_dir(where)
    finally:
        tmp_path.chmod(0o700)


def test_checking_a_lock_creates_nothing(tmp_path):
    check_not_locked(tmp_path)
    check_not_locked(tmp_path / "missing")
    assert list(tmp_path.iterdir()) == []


def test_the_holder_may_take_its_own_lock_again(tmp_path):
    """A search that exports its best cells into its own run directory: the export's lock is the search's."""
    with lock_run_dir(tmp_path, "search"):
        with lock_run_dir(tmp_path, "export"):
            pass
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):  # still held after the inner release
            check_not_locked(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()
    check_not_locked(tmp_path)
