"""What only the PostgreSQL store has: the schema check at open, its connections' settings, and the
bounded retry of transactions that PostgreSQL aborted as deadlocks or serialization failures. The
Protocol's behaviour is in tests/store_contract/, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import errors

from pg_cluster import PostgresCluster
from surat.store.base import Change
from surat.store.postgres import schema
from surat.store.postgres.pool import TRANSACTION_ATTEMPTS, Connection, TransactionRetriesExhausted
from surat.store.postgres.store import PostgresStore
from surat.store.setup import StoreUnavailable


@pytest.fixture
def dsn(pg_cluster: PostgresCluster, pg_database: str) -> str:
    return pg_cluster.dsn(pg_database)


async def _sql(dsn: str, query: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(query.encode())


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
    opened = PostgresStore(dsn)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_open_refuses_a_database_without_the_schema(dsn: str) -> None:
    with pytest.raises(StoreUnavailable) as refused:
        await PostgresStore(dsn).open()
    assert str(refused.value) == (
        "store: the database has no Surat schema yet; run `surat store init` to create it"
    )


async def test_open_refuses_a_newer_schema(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
        await conn.execute(b"INSERT INTO schema_version (version) VALUES (%s)", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailable) as refused:
        await PostgresStore(dsn).open()
    assert str(refused.value) == (
        f"store: schema version {schema.SCHEMA_VERSION + 1} is newer than this Surat knows"
        f" ({schema.SCHEMA_VERSION}); run the newer Surat that wrote it"
    )


async def test_connections_commit_synchronously_whatever_the_database_default(
    dsn: str, pg_database: str
) -> None:
    # An operator's (or a managed service's) default of off would make an acknowledged message
    # losable; the store sets it on its own connections.
    await _sql(dsn, f"ALTER DATABASE {pg_database} SET synchronous_commit = off")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
    opened = PostgresStore(dsn)
    await opened.open()
    try:

        async def show(conn: Connection) -> tuple[str, str]:
            cursor = await conn.execute(
                b"SELECT current_setting('synchronous_commit'), current_setting('TimeZone')"
            )
            row = await cursor.fetchone()
            assert row is not None
            return row[0], row[1]

        assert await opened.with_connection(show) == ("on", "UTC")
    finally:
        await opened.close()


async def test_a_deadlocked_transaction_is_retried_and_commits_once(store: PostgresStore) -> None:
    calls = 0

    async def fn(conn: Connection) -> tuple[int, list[Change]]:
        nonlocal calls
        calls += 1
        await conn.execute(b"INSERT INTO domains (name) VALUES (%s)", (f"try{calls}.example",))
        if calls == 1:
            raise errors.DeadlockDetected("deadlock detected")
        return calls, []

    assert await store._transaction(fn) == 2
    # The first attempt was rolled back: only the second one's row is there.
    assert await store.list_domains() == ["try2.example"]


async def test_retries_are_bounded(store: PostgresStore) -> None:
    calls = 0

    async def fn(conn: Connection) -> tuple[None, list[Change]]:
        nonlocal calls
        calls += 1
        raise errors.SerializationFailure("could not serialize access")

    with pytest.raises(TransactionRetriesExhausted):
        await store._transaction(fn)
    assert calls == TRANSACTION_ATTEMPTS
