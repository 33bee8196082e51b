"""The POP3 maildrop lock on PostgreSQL (RFC 1939 §8, RFC 2449 §8.1.2 [IN-USE]; issue 12 "POP3 IN-USE
holds across nodes"): a session-level advisory lock per account, so that one maildrop has at most
one POP3 session on every process and node sharing the database.

Why advisory locks held by one connection per process:
- the lock lives exactly as long as the connection that took it: a process (or node) that dies, or
  loses its database connection, holds nothing any more, with no expiry to wait for and no table of
  locks to clean up (as the kernel drops a flock, surat.pop3d.locks.FileMaildropLocks);
- one dedicated connection, not a pooled one: a session-level lock belongs to the server process of
  its connection, and a pooled connection would be handed to transactions of other sessions; one
  per session would cost a database connection for every idle POP3 client.

Session-level advisory locks are re-entrant within one connection (PostgreSQL docs, "Advisory
Locks": a second pg_try_advisory_lock by the holder succeeds), so this process's own sessions are
told apart in `_held` before the database is asked.

Losing the lock: when the connection fails (server restart, failover, `pg_terminate_backend`, a
network failure found by the heartbeat), PostgreSQL has already released, or will release, every
lock it held, so another node's session may lock the maildrop at once. Every lease of the process is
then lost: its session is told (`on_lost`: it closes the connection, nothing marked is deleted), and
`held()` (asked before UPDATE's deletions) answers false. The next acquire opens a new connection.
The window in which a failed connection is not yet noticed is bounded by the heartbeat
(HEARTBEAT_SECONDS + STATEMENT_TIMEOUT) for an idle session, and closed by `held()`, which makes a
round trip on the lock connection, for the deletions.

Keys: the two-key form `pg_try_advisory_lock(LOCK_CLASS, key)`, the class apart from the store's
other advisory locks (directory.py's login-failure class, the migration's 64-bit key); the key is the
account id folded to 32 bits (two accounts 2^32 ids apart would share it: a false [IN-USE], never two
sessions on one maildrop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from surat.log import fields
from surat.store.base import StoreError
from surat.store.setup import first_line

log = logging.getLogger(__name__)

LOCK_CLASS = 0x53755033  # "SuP3"
# Seconds between two checks that the lock connection is alive, while leases are held.
HEARTBEAT_SECONDS = 5.0
# Seconds one statement (try-lock, unlock, a check) may take before the connection is given up, and
# every lease with it: a hung server must not keep a session waiting, nor keep a lease that may be gone.
STATEMENT_TIMEOUT = 5.0


def lock_key(account_id: int) -> int:
    """The account id as the signed 32-bit second key of the two-key advisory lock."""
    folded = account_id & 0xFFFFFFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


class LockConnectionLost(StoreError):
    """The maildrop lock connection failed: every lease of this process is gone."""


class AdvisoryLease:
    """One session's lock on one maildrop."""

    __slots__ = ("_account_id", "_callback", "_locks", "_state")

    def __init__(self, locks: PostgresMaildropLocks, account_id: int) -> None:
        self._locks = locks
        self._account_id = account_id
        self._state = "held"  # "held", "released", "lost"
        self._callback: Callable[[], None] | None = None

    async def release(self) -> None:
        if self._state == "held":
            self._state = "released"
            await self._locks._release(self._account_id)

    async def held(self) -> bool:
        if self._state != "held":
            return False
        await self._locks._check()  # a round trip on the connection that holds the lock
        return self._state == "held"

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def _lose(self) -> None:
        if self._state == "held":
            self._state = "lost"
            if self._callback is not None:
                self._callback()


class PostgresMaildropLocks:
    """`MaildropLocks` over advisory locks on one dedicated connection (see the module docstring).
    The connection is opened at the first acquire (a node that serves no POP3 holds none); `await
    close()` at the end."""

    def __init__(self, dsn: str, connect_options: Mapping[str, Any]) -> None:
        self._dsn = dsn
        # application_name lets an operator find it in pg_stat_activity (and its locks in pg_locks).
        self._connect_options = {
            **connect_options,
            "autocommit": True,
            "application_name": "surat-pop3-locks",
        }
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._held: dict[int, AdvisoryLease] = {}
        self._busy = asyncio.Lock()  # one statement at a time on the one connection
        self._heartbeat: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Future[None]] = set()

    async def acquire(self, account_id: int) -> AdvisoryLease | None:
        if account_id in self._held:  # this process's own session (advisory locks are re-entrant)
            return None
        # Shielded: a session cancelled while the statement runs must not leave a lock that the
        # database granted and nobody holds (it would last as long as the connection).
        attempt = asyncio.ensure_future(self._try_lock(account_id))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, attempt: asyncio.Future[AdvisoryLease | None]) -> None:
        if not attempt.cancelled() and attempt.exception() is None:
            lease = attempt.result()
            if lease is not None:
                release = asyncio.ensure_future(lease.release())
                self._releasing.add(release)  # a reference until done (asyncio keeps weak ones)
                release.add_done_callback(self._releasing.discard)

    async def _try_lock(self, account_id: int) -> AdvisoryLease | None:
        async with self._busy:
            if account_id in self._held:
                return None
            conn = await self._connection()
            row = await self._execute(
                conn, b"SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(account_id))
            )
            if not row:
                return None
            lease = self._held[account_id] = AdvisoryLease(self, account_id)
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(self._beat(), name="surat-pop3-lock-heartbeat")
            return lease

    async def _release(self, account_id: int) -> None:
        async with self._busy:
            if self._held.pop(account_id, None) is None:
                return  # lost with the connection meanwhile: nothing to unlock
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(LockConnectionLost):  # then it is released anyway
                    await self._execute(
                        conn, b"SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, lock_key(account_id))
                    )

    async def _check(self) -> None:
        async with self._busy:
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(LockConnectionLost):  # the leases know they are lost
                    await self._execute(conn, b"SELECT 1", ())

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None:
            try:
                self._conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_options)
            except (psycopg.Error, OSError) as exc:
                raise StoreError(f"cannot connect for the POP3 maildrop locks: {first_line(exc)}") from None
        return self._conn

    async def _execute(
        self, conn: psycopg.AsyncConnection[TupleRow], query: bytes, params: tuple[Any, ...]
    ) -> Any:
        """The first column of the statement's row; on any failure of the connection, every lease
        is lost and LockConnectionLost raised."""
        try:
            async with asyncio.timeout(STATEMENT_TIMEOUT):
                cursor = await conn.execute(query, params)
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._lose_all(first_line(exc))
            raise LockConnectionLost(first_line(exc)) from None
        return None if row is None else row[0]

    async def _lose_all(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        lost = list(self._held.values())
        self._held.clear()
        if lost:
            log.warning("pop3.locks.lost", extra=fields(sessions=len(lost), error=reason))
        for lease in lost:
            lease._lose()
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _beat(self) -> None:
        """While leases are held: find a failed connection within HEARTBEAT_SECONDS +
        STATEMENT_TIMEOUT, so that the sessions holding them end (see the module docstring)."""
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                async with self._busy:
                    if not self._held or self._conn is None:
                        return
                    with contextlib.suppress(LockConnectionLost):  # the leases know they are lost
                        await self._execute(self._conn, b"SELECT 1", ())
        finally:
            self._heartbeat = None

    async def close(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._busy:
            self._held.clear()  # closing the connection releases every lock
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()
