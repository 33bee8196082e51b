"""The PostgreSQL store's connections: one `AsyncConnectionPool` per store, transactions with a bounded
retry of serialization failures and deadlocks, and the change feed: published on this process's feed
only after commit, and sent to the other stores on the database by a NOTIFY inside the transaction
(feed.py, which also holds the listener that receives theirs).

Every connection of the pool is configured once (`_configure`): `synchronous_commit = on`, whatever the
server's default, because a delivery is acknowledged (SMTP 250, IMAP APPEND OK) as soon as COMMIT
returns (ARCHITECTURE decision 4, issue 12 "Durability"); and the session time zone UTC, so that
`timestamptz` values come back in one zone and the store converts them itself.

The one exception is per transaction (`_attempts(..., synchronous=False)`): the shared transactions of
IMAP flag changes, \\Recent claims and IMAP expunges (shared.py) run with `SET LOCAL
synchronous_commit = off`, the PostgreSQL form of the SQLite store's documented decision (sqlite.py,
FLAG_SYNC_DELAY): their COMMIT is in PostgreSQL when the client gets its answer, so a crash of Surat
loses nothing, while a crash of PostgreSQL or power loss may undo the last ~0.6 s (3 x
wal_writer_delay) of them; mail, COPY/MOVE, APPEND, deliveries and the queue keep the synchronous
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from surat.store.base import Change, StoreError
from surat.store.feed import InProcessChangeFeed
from surat.store.postgres.feed import ChangeListener, new_store_id, notify_statement

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

# Seconds to wait for the server (connect, or a free pool connection) before giving up.
CONNECT_TIMEOUT = 10.0
# Attempts of one transaction that PostgreSQL aborted as a deadlock or a serialization failure. The
# store takes row locks in a fixed order (mailboxes by id, then accounts), so these are rare; the
# bound keeps a pathological case from looping, and the backoff (up to RETRY_BACKOFF seconds, random)
# keeps two retrying nodes from colliding again in step.
TRANSACTION_ATTEMPTS = 5
RETRY_BACKOFF = 0.05
DEFAULT_POOL_SIZE = 8


class TransactionRetriesExhausted(StoreError):
    """A transaction kept failing on deadlocks or serialization failures; nothing of it was committed."""


async def _configure(conn: Connection) -> None:
    # Two SETs in one simple query (no parameters): one round trip per new connection.
    await conn.execute(b"SET synchronous_commit = on; SET TIME ZONE 'UTC'")


def connect_options(password: str | None) -> dict[str, Any]:
    """psycopg's connect() options for every connection of a store (pool, LISTEN, POP3 locks)."""
    options: dict[str, Any] = {"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)}
    if password is not None:  # else libpq's own sources: the dsn, PGPASSWORD, ~/.pgpass
        options["password"] = password
    return options


class PooledStore:
    """Connections, transactions and publishing for the PostgreSQL store's role modules."""

    def __init__(
        self,
        dsn: str,
        *,
        password: str | None = None,
        feed: InProcessChangeFeed | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.dsn = dsn
        # The feed must publish locally only (not a workers' RelayedChangeFeed): the database carries
        # the changes to the other processes and nodes, and the listener publishes theirs on it.
        self.changes: InProcessChangeFeed = feed if feed is not None else InProcessChangeFeed()
        self.store_id = new_store_id()
        kwargs = connect_options(password)
        self._pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=_configure,
            timeout=CONNECT_TIMEOUT,
            name="surat-store",
        )
        self._listener = ChangeListener(dsn, kwargs, self.changes, self.store_id)
        self._open = False

    def _require_open(self) -> AsyncConnectionPool[Connection]:
        if not self._open:
            raise StoreError("store is not open")
        return self._pool

    async def with_connection(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run reads on a pooled connection in autocommit: each statement sees what was committed
        before it started (callers that need one snapshot use one statement)."""
        pool = self._require_open()
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except PoolTimeout:
            raise StoreError("no database connection available") from None

    async def _fetchone(self, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        async def fn(conn: Connection) -> tuple[Any, ...] | None:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchone()

        return await self.with_connection(fn)

    async def _fetchall(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def fn(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchall()

        return await self.with_connection(fn)

    async def _transaction(
        self, fn: Callable[[Connection], Awaitable[tuple[T, list[Change]]]], *, pipelined: bool = False
    ) -> T:
        """Run `fn` in one transaction, committed before this returns; then publish its changes.

        `fn` may run again (up to TRANSACTION_ATTEMPTS times) when PostgreSQL aborts the transaction
        as a deadlock or a serialization failure, so it must not have effects outside the database.
        An exception from `fn` rolls everything back. `pipelined`: see `_run_transaction`."""
        self._require_open()
        return await self._attempts(fn, pipelined=pipelined)

    async def _attempts(
        self,
        fn: Callable[[Connection], Awaitable[tuple[T, list[Change]]]],
        *,
        pipelined: bool = False,
        synchronous: bool = True,
    ) -> T:
        """`_transaction` without the open check: for the group commits' writers, which finish the
        writes accepted before `close()` (deliveries.py, shared.py). `synchronous=False` only for
        the writes the module docstring names."""
        pool = self._pool
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    result, changes = await self._run_transaction(
                        conn, fn, pipelined=pipelined, synchronous=synchronous
                    )
                break
            except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise TransactionRetriesExhausted(
                        f"transaction failed {attempt} times: {type(exc).__name__}"
                    ) from exc
                await asyncio.sleep(random.uniform(0, RETRY_BACKOFF * attempt))
            except PoolTimeout:
                raise StoreError("no database connection available") from None
        # After COMMIT returned: a subscriber that reads the store on this change sees it.
        if changes:
            self.changes.publish(changes)
        return result

    async def _run_transaction(
        self,
        conn: Connection,
        fn: Callable[[Connection], Awaitable[tuple[T, list[Change]]]],
        *,
        pipelined: bool = False,
        synchronous: bool = True,
    ) -> tuple[T, list[Change]]:
        """BEGIN, `fn`, then its one NOTIFY and the COMMIT sent together (psycopg's pipeline mode):
        one round trip for both, where a NOTIFY statement of its own cost one more (issue 12, "one
        NOTIFY per group commit, in the commit's round trip"). The NOTIFY is delivered by that COMMIT,
        never if the transaction rolls back. Nested `conn.transaction()` blocks inside `fn` are
        savepoints (psycopg makes one when a transaction is already open).

        `pipelined`: the whole transaction runs in pipeline mode, so BEGIN (and the SET LOCAL) go in
        the round trip of `fn`'s first read, and statements whose results `fn` never fetches go with
        the next read or the COMMIT (issue 12: round trips per command). Only for `fn`s without COPY,
        which pipeline mode does not allow."""
        try:
            async with conn.pipeline() if pipelined else contextlib.nullcontext():
                await conn.execute(b"BEGIN")
                if not synchronous:
                    # The flag/expunge/\\Recent durability rule of the module docstring, enforced here.
                    await conn.execute(b"SET LOCAL synchronous_commit = off")
                result, changes = await fn(conn)
                notify = notify_statement(self.store_id, changes)
                # Pipelined, the outer block's Sync at its end sends them; else a block of their own
                # (a nested one would cost one more Sync, one more round trip).
                async with contextlib.nullcontext() if pipelined else conn.pipeline():
                    if notify is not None:
                        await conn.execute(*notify)
                    await conn.execute(b"COMMIT")
        except BaseException:
            # A failed COMMIT has ended the transaction already; anything else is rolled back here
            # (the pool would do it too, with a warning, on the connection's return).
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.execute(b"ROLLBACK")
            raise
        return result, changes
