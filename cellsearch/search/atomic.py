"""Files a run writes are whole or absent: write a temporary file, fsync it, rename it over the target.

A full disk (ENOSPC), a quota or a file-size limit then leaves the previous version in place and no
temporary file behind, and :func:`write_failure` turns the error into one line that says the run
directory is still resumable.
"""
from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Callable

__all__ = ["RunDirWriteError", "atomic_write", "write_failure"]

# Errors of the disk, not of the program: the run stops, the directory stays as it was after the last child.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class RunDirWriteError(ValueError):
    """The run directory could not be written (full disk, quota, read-only file system)."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)``, fsync ``tmp`` and move it over ``path`` in one step, so ``path`` is never partial.
    If anything fails, ``tmp`` is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:  # a failed write() names no file: name the target
            err.filename = str(path)
        raise
    fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failure(err: BaseException, run_dir: "str | Path") -> BaseException:
    """A RunDirWriteError (one line: what failed, that the run resumes) for a disk error; else ``err``."""
    if isinstance(err, sqlite3.OperationalError) and any(word in str(err) for word in ("disk", "full")):
        what = f"{Path(run_dir) / 'trials.db'}: {err}"
    elif isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        what = f"{err.filename or run_dir}: {err.strerror}"
    else:
        return err
    return RunDirWriteError(f"cannot write {what}; the search stopped and {run_dir} holds every child finished "
                            f"before this one: free space (or fix the file system), then run the same command "
                            f"to resume")
