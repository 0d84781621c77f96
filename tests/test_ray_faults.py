"""Faults on a Ray cluster of two local nodes (a head and a worker started with ``ray start``): the worker
node killed while it trains a child, and the driver (train.py) killed while the cluster lives on; and on
a local cluster, a child whose worker is killed on every attempt.

Each node is started in its own process session, so the test kills exactly the processes of its own
nodes (``ray stop`` would stop every Ray process on the machine, other people's tests included).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from cellsearch.evaluators import TrainEvaluator
from cellsearch.search.executors import RayExecutor
from cellsearch.space.genotype import load_genotype
from test_executors import DATA, LONG_CHILD
from test_train import cli, stored

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

START_TIMEOUT = 180  # seconds for `ray start` on a loaded machine (measured 12-28 s on the shared 2-core one)
# For the nodes and the drivers alike: left unset, a head started where ~/.ray/auth_token exists (a local
# ray.init() writes one) turns on token authentication, which a joining `ray start` does not, and is refused.
AUTH_MODE = "disabled"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every process that can be read."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    _, parent, _, session = f.read().rsplit(")", 1)[1].split()[:4]
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                found[int(entry)] = (int(parent), int(session), command)
            except (OSError, ValueError):  # ended meanwhile
                pass
    return found


def training(commands: dict[int, str]) -> dict[int, int]:
    """trial id -> pid of the Ray workers among ``commands`` that train a child (titled ``ray::trial N``)."""
    return {int(command.split()[1]): pid for pid, command in commands.items() if command.startswith("ray::trial ")}


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of the processes below ``root`` (a local Ray cluster's are below its driver)."""
    table = processes()
    found, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, (parent, _, _) in table.items() if parent in frontier and pid not in found}
        found.update({pid: table[pid][2] for pid in frontier})
    return found


class RayNode:
    """One node started with ``ray start`` in a session of its own: its processes are that session's."""

    address = ""  # a head's, host:port

    def __init__(self, *args: str, cpus: int = 1):
        ports = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                 "metrics-export-port")
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--num-cpus={cpus}", "--num-gpus=0",
                   "--disable-usage-stats", *(f"--{name}={free_port()}" for name in ports), *args]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": AUTH_MODE}
        start = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        self.session = start.pid
        try:
            output, _ = start.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if start.returncode:
            self.kill()
            raise RuntimeError(f"ray start failed:\n{output[-3000:]}")

    def pids(self) -> dict[int, str]:
        return {pid: command for pid, (_, session, command) in processes().items() if session == self.session}

    def running_children(self) -> dict[int, int]:
        """trial id -> pid of the children this node trains."""
        return training(self.pids())

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL every process of the node at once, as if its machine died; wait until they are gone."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        assert not self.pids(), f"processes of the Ray node outlived SIGKILL: {self.pids()}"


@pytest.fixture(scope="module")
def head():
    """A head node with one CPU; its address is ``head.address``."""
    temp_dir = tempfile.mkdtemp(prefix="csray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAY_AUTH_MODE", AUTH_MODE)  # for the drivers (train.py) the tests start
            node = RayNode("--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                           f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}")
            node.address = f"127.0.0.1:{port}"
            try:
                yield node
            finally:
                node.kill()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def worker(head):
    """A second node with one CPU joined to ``head``."""
    node = RayNode(f"--address={head.address}")
    try:
        yield node
    finally:
        node.kill()


def search_on(tiny_search: tuple[str, ...], head: RayNode, run_dir: Path, budget: int) -> list[str]:
    """train.py's arguments for a search of ``budget`` tiny children whose driver joins ``head``'s cluster."""
    return [*tiny_search, "search=random", f"search.budget={budget}", "executor=ray",
            f"executor.address={head.address}", f"hydra.run.dir={run_dir}"]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def trials_logged(log: str) -> Counter:
    """How often each trial's result line (``| trial N ...``) appears in a train.log."""
    return Counter(int(line.split("| trial ")[1].split()[0]) for line in log.splitlines() if "| trial " in line)


def test_children_on_a_worker_node_that_dies_run_again_on_the_head_and_are_stored_once(tmp_path, head, worker,
                                                                                       tiny_search):
    """Kill the worker node while it trains a child: the search goes on with the head alone, the killed
    child runs again there and is stored once, and the store ends with exactly the budget."""
    run_dir, budget = tmp_path / "run", 4
    # Two children in flight (one CPU per node): Ray runs the second on the worker node while the head is busy.
    process = cli(*search_on(tiny_search, head, run_dir, budget), start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (on_worker := worker.running_children()):
            assert process.poll() is None, f"the search ended before the node was killed:\n{process.stdout.read()}"
            assert time.monotonic() < deadline, "no child ever ran on the worker node"
            time.sleep(0.1)
        worker.kill()
        output, _ = process.communicate(timeout=300)
    finally:
        stop(process)
    assert process.returncode == 0, output
    rows = stored(run_dir)
    assert sorted(t for t, *_ in rows) == list(range(budget))  # exactly the budget, each trial once
    with sqlite3.connect(run_dir / "trials.db") as db:
        assert db.execute("SELECT COUNT(*) FROM trials WHERE status = 'ok'").fetchone()[0] == budget  # none lost
    log = (run_dir / "train.log").read_text()
    for trial_id in on_worker:  # each killed child ran again and finished once
        assert f"trial {trial_id}: its Ray worker or node died (NodeDiedError" in log, log
        assert "(retry 1 of executor.max_retries=3)" in log
    assert trials_logged(log) == Counter(range(budget)), log


def test_driver_killed_while_the_cluster_lives_on_resumes_against_the_same_cluster(tmp_path, head, worker,
                                                                                  tiny_search):
    """SIGKILL train.py once two children are stored; ``resume=<run dir>`` against the same cluster ends
    with exactly the budget, the rows stored before the kill unchanged."""
    run_dir, budget = tmp_path / "run", 4
    process = cli(*search_on(tiny_search, head, run_dir, budget), start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, f"the search ended before it could be killed:\n{process.stdout.read()}"
            assert time.monotonic() < deadline, "the search stored fewer than two children in time"
            if (run_dir / "trials.db").exists():
                with sqlite3.connect(run_dir / "trials.db") as db:
                    if db.execute("SELECT COUNT(*) FROM trials").fetchone()[0] >= 2:
                        break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop(process)
    done_before = stored(run_dir)
    assert 2 <= len(done_before) < budget
    deadline = time.monotonic() + 60  # Ray ends the dead driver's children; the nodes live on
    while head.running_children() or worker.running_children():
        assert time.monotonic() < deadline, "the killed driver's children still train"
        time.sleep(0.2)
    assert head.pids() and worker.pids()

    result = cli(f"resume={run_dir}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    after = stored(run_dir)
    assert sorted(t for t, *_ in after) == list(range(budget))  # exactly the budget, each trial once
    assert after[:len(done_before)] == done_before  # the rows from before the kill, unchanged
    log = (run_dir / "train.log").read_text()
    assert f"resuming {run_dir}: {len(done_before)} of {budget} children done" in log
    resumed = log.split("resuming ")[1]
    assert trials_logged(resumed) == Counter(set(range(budget)) - {t for t, *_ in done_before})  # none twice


def test_a_child_whose_worker_dies_on_every_attempt_is_recorded_as_failed(caplog):
    """max_retries=1: the child's worker is killed, the child runs again (logged), is killed again, and comes
    back failed, naming the attempts; nothing else is retried."""
    executor = RayExecutor(TrainEvaluator(LONG_CHILD, DATA), seed=0, num_cpus=1, max_retries=1)
    try:
        executor.submit(0, load_genotype("nasnet_a"))
        killed: list[int] = []
        deadline = time.monotonic() + 120
        while len(killed) < 2:  # the local cluster's processes are this test's descendants
            assert time.monotonic() < deadline, f"trial 0 was not running again after {len(killed)} kill(s)"
            pid = training(descendants(os.getpid())).get(0)
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            if len(killed) < 2:
                assert executor.wait(timeout=0.2) == []
        [(trial_id, result)] = executor.wait(timeout=120)
    finally:
        executor.close()
    assert trial_id == 0 and result.status == "failed" and result.metric("val_accuracy") is None
    assert result.error.startswith("its Ray worker or node died on each of 2 attempt(s) (executor.max_retries=1); "
                                   "last: WorkerCrashedError"), result.error
    assert [r.getMessage().split(" (")[0] for r in caplog.records if "running it again" in r.getMessage()] == \
        ["trial 0: its Ray worker or node died"]
