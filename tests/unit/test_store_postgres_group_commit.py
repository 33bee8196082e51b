"""The PostgreSQL store's group commit (surat.store.postgres.deliveries): concurrent deliveries share
transactions and NOTIFYs, a write PostgreSQL refuses fails alone, and the batch bounds. The promises
both backends keep are in tests/store_contract/test_group_commit.py."""

from __future__ import annotations

import asyncio
import io
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from pg_cluster import PostgresCluster
from surat.message.info import compute_message_info
from surat.store.base import Credentials, Delivery, MailboxTarget, OutboundMessage, OutboundRecipient
from surat.store.postgres import schema
from surat.store.postgres.deliveries import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    PendingWrite,
    TakenBody,
    take_batch,
)
from surat.store.postgres.feed import CHANNEL, decode_payload
from surat.store.postgres.pool import Connection
from surat.store.postgres.store import PostgresStore

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CREDS_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def message(n: int) -> bytes:
    return b"From: a@example.org\r\nSubject: message " + str(n).encode() + b"\r\n\r\nHello\r\n"


@pytest.fixture
async def store(pg_cluster: PostgresCluster, pg_database: str) -> AsyncIterator[PostgresStore]:
    dsn = pg_cluster.dsn(pg_database)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
    opened = PostgresStore(dsn)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _account(store: PostgresStore, address: str) -> int:
    if not await store.list_domains():
        await store.add_domain("example.test")
    return (await store.add_account(address, Credentials(CREDS_HASH, None))).id


def _delivery(account_id: int, n: int, remote: OutboundMessage | None = None) -> Delivery:
    data = message(n)
    return Delivery(None, len(data), WHEN, local=(MailboxTarget(account_id),), remote=remote, content=data)


async def test_concurrent_deliveries_share_transactions_and_notifications(store: PostgresStore) -> None:
    account_id = await _account(store, "alice@example.test")
    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}".encode())
        before = store.commit_stats()
        results = await asyncio.gather(*(store.deliver(_delivery(account_id, n)) for n in range(40)))
        stats = store.commit_stats()
        batches = stats.batches - before.batches
        assert stats.items - before.items == 40
        assert 1 <= batches < 40  # one writer: those that arrived during a commit shared the next
        assert stats.largest > 1
        assert sorted(r.local[0][2] for r in results) == list(range(1, 41))
        payloads = [n.payload async for n in listener.notifies(timeout=1.0)]
    # One NOTIFY per group commit, each naming the mailbox once with the batch's MODSEQ.
    assert len(payloads) == batches
    modseqs = []
    for payload in payloads:
        sender, changes = decode_payload(payload)
        assert sender == store.store_id
        assert changes is not None and len(changes) == 1
        modseqs.append(changes[0].modseq)
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == batches


async def test_a_write_postgresql_refuses_fails_alone_and_the_batch_commits(store: PostgresStore) -> None:
    """A write that aborts the batch's transaction (here: text PostgreSQL cannot hold, a NUL in a
    queued recipient) is retried alone and fails alone; the others of its batch commit."""
    account_id = await _account(store, "alice@example.test")
    poisoned = OutboundMessage("a@example.test", (OutboundRecipient("bad\x00@example.net"),))
    calls = [store.deliver(_delivery(account_id, n)) for n in range(12)]
    calls.insert(4, store.deliver(_delivery(account_id, 99, poisoned)))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[4], psycopg.DataError)
    good = [o for i, o in enumerate(outcomes) if i != 4]
    uids = sorted(o.local[0][2] for o in good)  # type: ignore[union-attr]
    assert uids == list(range(1, 13))
    assert await store.list_queue() == []

    async def blobs(conn: Connection) -> int:
        cursor = await conn.execute(b"SELECT count(*) FROM blobs")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    assert await store.with_connection(blobs) == 12


INFO = compute_message_info(io.BytesIO(message(0)))


def _pending(size: int) -> PendingWrite:
    return PendingWrite(TakenBody(b"x" * size, size, False), INFO, WHEN)


async def test_a_batch_is_bounded_in_writes_and_octets() -> None:
    waiting = deque(_pending(10) for _ in range(MAX_BATCH_ITEMS + 5))
    first = take_batch(waiting)
    assert len(first) == MAX_BATCH_ITEMS and len(waiting) == 5
    assert len(take_batch(waiting)) == 5 and not waiting
    half = MAX_BATCH_BYTES // 2
    waiting = deque([_pending(half), _pending(half), _pending(1), _pending(MAX_BATCH_BYTES * 3)])
    assert [w.body.size for w in take_batch(waiting)] == [half, half]  # the next would pass the bound
    assert [w.body.size for w in take_batch(waiting)] == [1]
    assert [w.body.size for w in take_batch(waiting)] == [MAX_BATCH_BYTES * 3]  # the first always goes
