"""The store contract suite: every test here runs against each backend in BACKENDS, through the
`Store` Protocol only (surat.store.base), so that every backend keeps the same promises.

Adding a backend: append its name to BACKENDS and a branch to `open_store` that makes its store.
"postgresql" runs on a new database of the tests' private cluster (tests/pg_cluster.py) per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from pg_cluster import PostgresCluster, pg_cluster, pg_database
from surat.store.base import Account, Credentials, ScramCredentials, Store
from surat.store.postgres import schema as postgres_schema
from surat.store.postgres.store import PostgresStore
from surat.store.sqlite import SQLiteStore

__all__ = ["pg_cluster", "pg_database"]  # the PostgreSQL fixtures, imported so that pytest finds them

# The backends the contract runs against.
BACKENDS: tuple[str, ...] = ("sqlite", "postgresql")

CREDS = Credentials(
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", ScramCredentials(b"salt", 4096, b"s" * 32, b"k" * 32)
)

# Opens one more store of the backend under test over the same data (another process, another node).
StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def open_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[StoreFactory]:
    """Opens stores of `backend` over one test's data; all are closed at the end of the test. For
    "postgresql", a new database of the tests' private cluster, its schema made as `surat store init`
    makes it, shared by every store the test opens (several processes or nodes on one database)."""
    opened: list[Store] = []
    dsn = ""
    if backend == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        dsn = cluster.dsn(request.getfixturevalue("pg_database"))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await postgres_schema.migrate(conn)

    async def open_one() -> Store:
        if backend == "sqlite":
            new: Store = SQLiteStore(tmp_path / "data")
        elif backend == "postgresql":
            new = PostgresStore(dsn)
        else:
            raise AssertionError(f"no store for backend {backend!r}")
        await new.open()
        opened.append(new)
        return new

    yield open_one
    for each in opened:
        await each.close()  # a no-op for a store the test closed itself


@pytest.fixture
async def store(open_store: StoreFactory) -> Store:
    return await open_store()


@pytest.fixture
async def alice(store: Store) -> Account:
    """alice@example.test (given as Alice@Example.TEST), in the domain example.test, with SCRAM keys."""
    await store.add_domain("example.test")
    return await store.add_account("Alice@Example.TEST", CREDS)


async def stored_blob_count(store: Store) -> int:
    """How many message bodies the backend holds (blob lifetime checks: copies share one, the last
    expunge removes it)."""
    if isinstance(store, SQLiteStore):
        # IMAP expunges are answered before their WAL sync, and their files go with the sync.
        await store.sync()
        return sum(1 for path in store.blob_dir.rglob("*") if path.is_file())
    assert isinstance(store, PostgresStore)

    async def count(conn: psycopg.AsyncConnection[TupleRow]) -> int:
        cursor = await conn.execute("SELECT count(*) FROM blobs")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    return await store.with_connection(count)


def staged_leftovers(store: Store) -> list[str]:
    """What staged messages left behind outside the store's rows: SQLite's spool files; PostgreSQL
    stages in memory or an anonymous temporary file, so nothing can be left (see postgres/blobs.py)."""
    if isinstance(store, SQLiteStore):
        return [path.name for path in store.spool_dir.iterdir()]
    return []
