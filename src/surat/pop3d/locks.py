"""The POP3 maildrop lock (RFC 1939 §8: one session per maildrop; RFC 2449 §8.1.2 [IN-USE]).

An interface with three implementations: in-process (one process on SQLite), a file lock (the
processes of `workers = N` on SQLite) and, on PostgreSQL, an advisory lock that holds across every
process and node on the database (surat.store.postgres.locks).

A lease can be lost without the session asking (the PostgreSQL connection that held it dropped): its
holder learns it through `on_lost`, and checks `held()` before anything that needs exclusive access
(the deletions of UPDATE), so that two sessions never act on one maildrop.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from surat.store.filemodes import PRIVATE_FILE_MODE, make_private_dir


class MaildropLease(Protocol):
    async def release(self) -> None: ...

    async def held(self) -> bool:
        """Still exclusive, checked now (false once the lock was lost)."""
        ...

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` once if the lease is lost before it is released (at most one callback)."""
        ...


class _NeverLost:
    """For leases that last until released: the kernel or this process holds them."""

    __slots__ = ()

    async def held(self) -> bool:
        return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        pass


class MaildropLocks(Protocol):
    async def acquire(self, account_id: int) -> MaildropLease | None:
        """The lease on the account's maildrop, or None while another session holds it."""
        ...

    async def close(self) -> None:
        """After the last session: give up whatever the locks hold (a connection, say)."""
        ...


class _InProcessLease(_NeverLost):
    __slots__ = ("_account_id", "_locks", "_released")

    def __init__(self, locks: InProcessMaildropLocks, account_id: int) -> None:
        self._locks = locks
        self._account_id = account_id
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._locks._held.discard(self._account_id)


class InProcessMaildropLocks:
    def __init__(self) -> None:
        self._held: set[int] = set()

    async def acquire(self, account_id: int) -> MaildropLease | None:
        if account_id in self._held:
            return None
        self._held.add(account_id)
        return _InProcessLease(self, account_id)

    def held(self, account_id: int) -> bool:
        return account_id in self._held

    async def close(self) -> None:
        pass  # held by sessions only


class _FileLease(_NeverLost):
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


class FileMaildropLocks:
    """The maildrop lock across the processes of one machine (`[server] workers = N`): an exclusive
    flock(2) on `<directory>/<account id>.lock`.

    flock rather than fcntl record locks: a flock belongs to the open file description, so two
    sessions of the same process exclude each other as well as sessions of two processes (POSIX
    record locks never conflict within one process). The kernel drops the lock when the holder's
    descriptor closes, including when its process is killed, so a worker killed with kill -9 leaves
    no maildrop locked and no expiry is needed. Lock files are kept (one per account that used POP3):
    removing one while another session opens it would let two sessions lock two different files.
    Several machines on PostgreSQL use a lock in the database instead (surat.store.postgres.locks).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def close(self) -> None:
        pass  # each lease holds its own descriptor

    async def acquire(self, account_id: int) -> MaildropLease | None:
        # Both calls are non-blocking (LOCK_NB) and touch one small local file: no thread hop needed.
        make_private_dir(self.directory, parents=True)
        path = self.directory / f"{account_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return _FileLease(fd)
