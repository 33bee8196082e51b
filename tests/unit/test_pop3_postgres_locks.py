"""The POP3 maildrop lock on PostgreSQL (`PostgresMaildropLocks`, RFC 1939 §8 / RFC 2449 §8.1.2
IN-USE): advisory locks that hold across processes and nodes, lost with their connection. Two lock
objects stand for two processes (each has its own connection)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import psycopg
import pytest

from pg_cluster import PostgresCluster
from surat.store.base import StoreError
from surat.store.postgres.locks import LOCK_CLASS, PostgresMaildropLocks, lock_key
from surat.store.postgres.pool import connect_options


@pytest.fixture
async def dsn(pg_cluster: PostgresCluster, pg_database: str) -> str:
    return pg_cluster.dsn(pg_database)


@pytest.fixture
async def two_processes(dsn: str) -> AsyncIterator[tuple[PostgresMaildropLocks, PostgresMaildropLocks]]:
    first = PostgresMaildropLocks(dsn, connect_options(None))
    second = PostgresMaildropLocks(dsn, connect_options(None))
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def advisory_locks_held(dsn: str) -> list[int]:
    """The keys of the maildrop locks PostgreSQL holds, whoever holds them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted",
            (LOCK_CLASS,),
        ).fetchall()
    return sorted(int(row[0]) for row in rows)


def terminate_lock_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                ("surat-pop3-locks",),
            ).fetchall()
        )


async def test_one_session_per_maildrop_in_one_process_and_across_processes(
    two_processes: tuple[PostgresMaildropLocks, PostgresMaildropLocks], dsn: str
) -> None:
    first, second = two_processes
    lease = await first.acquire(7)
    assert lease is not None
    # Advisory locks are re-entrant on one connection: the process itself must refuse its second session.
    assert await first.acquire(7) is None
    assert await second.acquire(7) is None
    other = await second.acquire(8)  # another maildrop is free
    assert other is not None
    assert await lease.held()
    assert advisory_locks_held(dsn) == [7, 8]
    await lease.release()
    assert not await lease.held()
    assert advisory_locks_held(dsn) == [8]
    again = await second.acquire(7)
    assert again is not None
    await again.release()
    await lease.release()  # twice: nothing more happens
    await other.release()
    assert advisory_locks_held(dsn) == []


async def test_a_lost_connection_loses_every_lease_and_tells_their_sessions(
    two_processes: tuple[PostgresMaildropLocks, PostgresMaildropLocks], dsn: str
) -> None:
    first, second = two_processes
    leases = [await first.acquire(account) for account in (1, 2)]
    told: list[int] = []
    for account, lease in zip((1, 2), leases, strict=True):
        assert lease is not None
        lease.on_lost(functools.partial(told.append, account))
    assert await asyncio.to_thread(terminate_lock_connections, dsn) == 1
    # PostgreSQL released the locks with the connection: another process may take them at once...
    taken = await second.acquire(1)
    assert taken is not None
    # ...so this process's leases are gone, and it finds out on its next use of the connection.
    assert leases[0] is not None
    assert not await leases[0].held()
    assert sorted(told) == [1, 2]
    assert await first.acquire(1) is None  # held by the other process now
    reacquired = await first.acquire(2)  # on a new connection
    assert reacquired is not None
    assert await reacquired.held()
    await reacquired.release()
    await taken.release()


async def test_a_cancelled_acquire_leaves_no_lock_behind(
    two_processes: tuple[PostgresMaildropLocks, PostgresMaildropLocks], dsn: str
) -> None:
    first, second = two_processes
    warm = await first.acquire(99)  # connected: the acquire below is one statement
    assert warm is not None
    attempt = asyncio.ensure_future(first.acquire(5))
    await asyncio.sleep(0)  # the statement is under way
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    for _ in range(100):  # the release of what the database granted runs in the background
        if 5 not in advisory_locks_held(dsn):
            break
        await asyncio.sleep(0.02)
    lease = await second.acquire(5)
    assert lease is not None
    await lease.release()
    await warm.release()


async def test_a_database_that_cannot_be_reached_is_a_store_error(pg_cluster: PostgresCluster) -> None:
    locks = PostgresMaildropLocks(pg_cluster.dsn("no_such_database"), connect_options(None))
    with pytest.raises(StoreError, match="cannot connect for the POP3 maildrop locks"):
        await locks.acquire(1)
    await locks.close()


def test_account_ids_fold_into_the_signed_32_bit_key() -> None:
    assert [lock_key(n) for n in (1, 2**31 - 1, 2**31, 2**32 + 5)] == [1, 2**31 - 1, -(2**31), 5]
