"""The PostgreSQL schema and its migrations, against the private cluster (tests/pg_cluster.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from pg_cluster import PostgresCluster
from surat.store import schema as sqlite_schema
from surat.store.postgres import schema
from surat.store.schema import SchemaTooNew


async def connect(cluster: PostgresCluster, database: str) -> psycopg.AsyncConnection[TupleRow]:
    return await psycopg.AsyncConnection.connect(cluster.dsn(database), autocommit=True)


async def columns(conn: psycopg.AsyncConnection[TupleRow]) -> dict[str, set[str]]:
    cursor = await conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    )
    tables: dict[str, set[str]] = {}
    for table, column in await cursor.fetchall():
        tables.setdefault(table, set()).add(column)
    return tables


async def test_migrate_creates_the_schema_once(pg_cluster: PostgresCluster, pg_database: str) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        assert await schema.schema_version(conn) == 0
        assert await schema.migrate(conn) == schema.SCHEMA_VERSION == len(schema.MIGRATIONS)
        assert await schema.migrate(conn) == schema.SCHEMA_VERSION  # a second run is a no-op
        cursor = await conn.execute("SELECT version FROM schema_version ORDER BY version")
        assert await cursor.fetchall() == [(v,) for v in range(1, schema.SCHEMA_VERSION + 1)]
        assert set(await columns(conn)) == {
            "schema_version", "meta", "nodes", "domains", "accounts", "aliases", "mailboxes",
            "subscriptions", "blobs", "blob_chunks", "messages", "expunged", "queue",
            "queue_recipients", "queue_attempts", "auth_clients", "sent_messages",
            "shared_secrets", "dkim_keys", "sts_policies", "sieve_scripts", "vacation_replies", "imported_messages",
            "tls_results", "tls_reports", "app_passwords",
        }  # fmt: skip


async def test_version_1_is_upgraded_with_the_shared_keys(
    pg_cluster: PostgresCluster, pg_database: str
) -> None:
    """Migration 2: the installation secret and the DKIM keys, which every node must share."""
    async with await connect(pg_cluster, pg_database) as conn:
        assert await schema.migrate(conn, target=1) == 1
        assert "dkim_keys" not in await columns(conn)
        await conn.execute("INSERT INTO domains (name) VALUES ('example.test')")  # data survives
        assert await schema.migrate(conn, target=2) == 2
        tables = await columns(conn)
        assert tables["shared_secrets"] == {"name", "value"}
        assert tables["dkim_keys"] == {"domain", "selector", "algorithm", "private_pem", "created_at"}
        cursor = await conn.execute("SELECT name FROM domains")
        assert await cursor.fetchall() == [("example.test",)]
        # a secret shorter than the store makes, or an algorithm the signer does not know, is refused
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("INSERT INTO shared_secrets VALUES ('x', '\\x00')")
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(
                "INSERT INTO dkim_keys (domain, selector, algorithm, private_pem) VALUES ('a', 's', 'dsa', '')"
            )


async def test_version_2_is_upgraded_with_the_sts_policy_cache(
    pg_cluster: PostgresCluster, pg_database: str
) -> None:
    """Migration 3: the MTA-STS policy cache, shared by every node."""
    async with await connect(pg_cluster, pg_database) as conn:
        assert await schema.migrate(conn, target=2) == 2
        assert "sts_policies" not in await columns(conn)
        assert await schema.migrate(conn, target=3) == 3
        assert (await columns(conn))["sts_policies"] == {
            "domain", "policy_id", "policy", "fetched_at", "expires_at"
        }  # fmt: skip


async def test_every_sqlite_column_has_its_postgresql_column(
    pg_cluster: PostgresCluster, pg_database: str, tmp_path: Path
) -> None:
    """The PostgreSQL schema mirrors the SQLite one at its current version: a SQLite migration added
    without its PostgreSQL counterpart fails here."""
    sqlite_conn = sqlite3.connect(tmp_path / "index.sqlite3", isolation_level=None)
    try:
        sqlite_schema.migrate(sqlite_conn)
        sqlite_tables = {
            table: {row[1] for row in sqlite_conn.execute(f"PRAGMA table_info({table})")}
            for (table,) in sqlite_conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    finally:
        sqlite_conn.close()
    async with await connect(pg_cluster, pg_database) as conn:
        await schema.migrate(conn)
        pg_tables = await columns(conn)
    missing = {
        table: sorted(names - pg_tables.get(table, set()))
        for table, names in sqlite_tables.items()
        if names - pg_tables.get(table, set())
    }
    assert missing == {}
    assert {"lease_owner", "lease_expires_at"} <= pg_tables["queue"]


async def test_a_newer_schema_is_refused(pg_cluster: PostgresCluster, pg_database: str) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        await schema.migrate(conn)
        await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (schema.SCHEMA_VERSION + 1,))
        newer = rf"version {schema.SCHEMA_VERSION + 1} is newer than this Surat \({schema.SCHEMA_VERSION}\)"
        with pytest.raises(SchemaTooNew, match=newer):
            await schema.migrate(conn)


async def test_concurrent_migrations_apply_once(pg_cluster: PostgresCluster, pg_database: str) -> None:
    first, second = await connect(pg_cluster, pg_database), await connect(pg_cluster, pg_database)
    async with first, second:
        assert (
            list(await asyncio.gather(schema.migrate(first), schema.migrate(second)))
            == [schema.SCHEMA_VERSION] * 2
        )
        cursor = await first.execute("SELECT count(*) FROM schema_version")
        assert await cursor.fetchone() == (schema.SCHEMA_VERSION,)


async def test_a_failed_migration_leaves_nothing(pg_cluster: PostgresCluster, pg_database: str) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        await conn.execute("CREATE TABLE domains (name text)")  # migration 1 then fails half-way
        with pytest.raises(psycopg.errors.DuplicateTable):
            await schema.migrate(conn)
        assert await schema.schema_version(conn) == 0
        assert set(await columns(conn)) == {"domains"}  # schema_version and meta rolled back too


@pytest.mark.parametrize(("uid", "accepted"), [(0, False), (1, True), (2**32 - 1, True), (2**32, False)])
async def test_uids_are_32_bit(
    pg_cluster: PostgresCluster, pg_database: str, uid: int, accepted: bool
) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        await schema.migrate(conn)
        await conn.execute("INSERT INTO domains VALUES ('example.test')")
        await conn.execute(
            "INSERT INTO accounts (address, domain, password_hash) VALUES ('a@example.test', 'example.test', 'x')"
        )
        await conn.execute("INSERT INTO mailboxes (account_id, name, uidvalidity) VALUES (1, 'INBOX', 1)")
        await conn.execute("INSERT INTO blobs (id, size) VALUES ('b', 0)")
        insert = (
            "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, blob_id, info)"
            " VALUES (1, %s, 1, now(), 0, 'b', '{}')"
        )
        if accepted:
            await conn.execute(insert, (uid,))
        else:
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(insert, (uid,))


async def test_blob_chunks_are_bounded(pg_cluster: PostgresCluster, pg_database: str) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        await schema.migrate(conn)
        await conn.execute("INSERT INTO blobs (id, size) VALUES ('b', 0)")
        chunk = "INSERT INTO blob_chunks (blob_id, position, data) VALUES ('b', %s, %s)"
        await conn.execute(chunk, (0, b"x" * schema.BLOB_CHUNK_SIZE))
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(chunk, (1, b"x" * (schema.BLOB_CHUNK_SIZE + 1)))


async def test_a_lease_has_an_owner_and_an_expiry(pg_cluster: PostgresCluster, pg_database: str) -> None:
    async with await connect(pg_cluster, pg_database) as conn:
        await schema.migrate(conn)
        await conn.execute("INSERT INTO blobs (id, size) VALUES ('b', 1)")
        insert = (
            "INSERT INTO queue (id, sender, size, blob_id, created_at, next_attempt_at, lease_owner,"
            " lease_expires_at) VALUES (%s, '', 1, 'b', now(), now(), %s, %s)"
        )
        await conn.execute(insert, ("q1", "node-a", "2030-01-01T00:00:00Z"))
        await conn.execute(insert, ("q2", None, None))
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(insert, ("q3", "node-a", None))
