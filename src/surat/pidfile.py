"""`data_dir/surat.pid`: which process is `surat serve` for this data directory.

The server (the supervisor with `workers = N`) writes its pid there and holds an exclusive `flock` on
the file while it runs; `surat reload` reads the pid only while that lock is held. The lock, not the
file's existence, says whether the server is alive: the kernel releases it when the process dies
however it dies (kill -9 leaves the file behind), so a stale file never makes `surat reload` signal
whatever process has since been given the same pid. The lock also stops a second `surat serve` on
the same data directory, whose crash recovery would delete the running server's staged files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from surat.store.filemodes import PRIVATE_FILE_MODE, make_private_dir

__all__ = ["PID_FILE_NAME", "AlreadyRunning", "ServerPidFile", "running_server_pid"]

PID_FILE_NAME = "surat.pid"
# A pid is at most 7 digits on Linux (pid_max <= 4194304); anything longer is not ours.
MAX_PID_TEXT = 32


class AlreadyRunning(Exception):
    """Another `surat serve` holds the pid file; the message names it."""


class ServerPidFile:
    """Held by the running server from `acquire` to `release`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid; AlreadyRunning if another live server holds it."""
        make_private_dir(self.path.parent, parents=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another surat serve (pid {other or 'unknown'}) is running with data_dir {self.path.parent}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a file left by an older run keeps whatever mode it had
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """At a clean stop: remove the file, then let go of the lock (in that order, so that a server
        starting meanwhile locks a new file rather than the one being removed)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def running_server_pid(data_dir: Path) -> int | None:
    """The pid of the live `surat serve` for `data_dir`, or None when none holds the pid file."""
    try:
        fd = os.open(data_dir / PID_FILE_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)  # locked: its holder is alive
        return None  # nobody holds it: left behind by a server that died
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, MAX_PID_TEXT, 0).strip()
    return int(text) if text.isdigit() and int(text) > 0 else None
