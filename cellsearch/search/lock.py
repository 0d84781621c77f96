"""One writer per run directory: an OS lock (``flock``) on ``<dir>/.cellsearch.lock``.

A search, a retrain or an export takes the lock of the directory it writes before it reads or writes
anything there, and holds it until it ends. A second process on the same directory is refused at
once, with one line naming the holder's pid and host. The kernel drops a ``flock`` when its process
dies (``kill -9`` included), so a lock can never be held by a dead process; a lock file that still
names a holder (it is removed on a clean exit) tells that its holder died, and the next process takes
it over with a one-line notice. (``flock`` is per host: on a network file system that does not
forward it, two hosts are not kept apart.) Within the process that holds a lock, taking it again (a search
exporting its best cells into its own run directory) is allowed and changes nothing.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "RunDirBusy", "RunDirLock", "check_not_locked", "is_main_rank", "lock_run_dir"]

log = logging.getLogger(__name__)

LOCK_FILE = ".cellsearch.lock"
_HELD: set[Path] = set()  # the directories whose lock this process holds


class RunDirBusy(ValueError):
    """Another process holds the run directory."""


def is_main_rank() -> bool:
    """False in the extra processes of a distributed (DDP) run, which share the main process's directory."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on host {info['host']}, {info['what']} started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))}")
    except (ValueError, KeyError, TypeError):
        return "a process that left no name"


def _busy(directory: Path, text: str) -> RunDirBusy:
    return RunDirBusy(f"{directory} is in use by another cellsearch process ({_holder(text)}); wait for it to "
                      f"finish or use another directory")


class RunDirLock:
    """Hold ``directory``'s lock for the duration of a ``with`` block (or ``acquire``/``release``)."""

    def __init__(self, directory: "str | Path", what: str = "search") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self._fd: int | None = None
        self._held_as: Path | None = None  # the directory's resolved path while this lock holds it
        self._nested = False

    def acquire(self) -> "RunDirLock":
        """Take the lock or raise RunDirBusy at once; OSError if the directory cannot be written. If this
        process holds the lock already, return at once (releasing this one then leaves the first held)."""
        held_as = self.directory.resolve()
        if held_as in _HELD:
            self._nested = True
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise _busy(self.directory, text) from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        left = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if left:
            log.warning("taking over %s: its lock was left by %s, which is no longer running", self.directory,
                        _holder(left))
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                             "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        self._fd = fd
        self._held_as = held_as
        _HELD.add(held_as)
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        self._nested = False
        if self._fd is None:
            return
        _HELD.discard(self._held_as)
        try:
            os.unlink(self.path)  # removed while still locked: a waiting process re-checks the file it locked
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self if self._fd is not None or self._nested else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run_dir(directory: "str | Path", what: str = "search") -> RunDirLock:
    """Create ``directory`` if needed and take its lock; one clear line (ValueError) if it cannot be used."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return RunDirLock(directory, what).acquire()
    except (FileExistsError, NotADirectoryError):
        raise RunDirBusy(f"run directory {directory} cannot be created: it or a folder above it is a file; "
                         f"choose another run directory") from None
    except OSError as err:  # permissions, a read-only file system
        raise RunDirBusy(f"cannot write in run directory {directory} ({err.strerror}); choose a directory you "
                         f"can write, or fix its permissions") from None


def check_not_locked(directory: "str | Path") -> None:
    """Raise RunDirBusy if a live process holds ``directory``'s lock; create and change nothing."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or no directory): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(Path(directory), os.pread(fd, 4096, 0).decode(errors="replace")) from None
    finally:
        os.close(fd)
