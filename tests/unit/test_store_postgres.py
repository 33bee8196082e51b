"""What only the PostgreSQL store has: the schema check at open, its connections' settings, and the
bounded retry of transactions that PostgreSQL aborted as deadlocks or serialization failures, and the
group commit of deliveries (shared transactions and NOTIFYs, a refused write failing alone, bounds). The
Protocol's behaviour is in tests/store_contract/, on both backends."""

from __future__ import annotations

import asyncio
import io
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors

from pg_cluster import PostgresCluster
from surat.message.info import compute_message_info
from surat.store.base import (
    Change,
    Credentials,
    Delivery,
    FlagMode,
    MailboxTarget,
    OutboundMessage,
    OutboundRecipient,
)
from surat.store.postgres import schema
from surat.store.postgres.deliveries import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    PendingWrite,
    TakenBody,
    take_batch,
)
from surat.store.postgres.feed import CHANNEL, decode_payload
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


# ------------------------------------------------------------------------------ group commit (deliveries.py)
# The promises both backends keep are in tests/store_contract/test_group_commit.py.

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
CREDS_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def message(n: int) -> bytes:
    return b"From: a@example.org\r\nSubject: message " + str(n).encode() + b"\r\n\r\nHello\r\n"


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


# ------------------------------------------------------------------------------ round trips

# What the delayed link adds to every answer from PostgreSQL: far above this machine's own latency
# (well under a millisecond per round trip), so that elapsed time counts round trips.
LINK_DELAY = 0.1


class DelayedLink:
    """A TCP relay on loopback to PostgreSQL that holds every chunk the server sends for LINK_DELAY
    seconds (in order): a database one network round trip away, as from another machine."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
            loop = asyncio.get_running_loop()
            due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def deliver() -> None:
                while True:
                    at, data = await due.get()
                    await asyncio.sleep(max(0.0, at - loop.time()))
                    if not data:
                        writer.close()
                        return
                    writer.write(data)

            sender = asyncio.ensure_future(deliver())
            self.tasks.add(sender)
            while data := await reader.read(65536):
                await due.put((loop.time() + delay, data))
            await due.put((loop.time() + delay, b""))

        for task in (
            asyncio.ensure_future(pump(client_reader, server_writer, 0.0)),
            asyncio.ensure_future(pump(server_reader, client_writer, LINK_DELAY)),
        ):
            self.tasks.add(task)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _fastest(call: Callable[[], Awaitable[object]], times: int = 3) -> float:
    """The shortest of `times` calls, in seconds: psycopg prepares a statement at its fifth use, which
    costs that call one more round trip."""
    loop = asyncio.get_running_loop()
    fastest = float("inf")
    for _ in range(times):
        start = loop.time()
        await call()
        fastest = min(fastest, loop.time() - start)
    return fastest


async def test_sync_and_flag_changes_take_few_round_trips(dsn: str, pg_cluster: PostgresCluster) -> None:
    """Over a link with LINK_DELAY per answer: `changes_since` (asked before most IMAP replies) is one
    round trip, its three reads pipelined; a STORE is three (BEGIN + SET LOCAL + the lock, the read of
    its messages, then its UPDATE with the mailbox's UPDATE, NOTIFY and COMMIT: shared.py, the whole
    transaction in pipeline mode), of which all hold the mailbox's row lock that every writer of the
    mailbox on every node waits for. They were three and six, then one and four, each round trip a
    network latency in a deployment with PostgreSQL on another machine, and the lock's hold time on
    one machine."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
    link = DelayedLink(pg_cluster.port)
    delayed_dsn = dsn.replace(f":{pg_cluster.port}/", f":{await link.start()}/")
    store = PostgresStore(delayed_dsn)
    await store.open()
    try:
        account_id = await _account(store, "alice@example.test")
        for n in range(3):
            await store.deliver(_delivery(account_id, n))
        inbox = await store.get_mailbox(account_id, "INBOX")
        assert inbox is not None
        # The pool's connection is open and warm: what follows is the statements' round trips alone.
        first = await store.changes_since(inbox.id, 0)
        assert [m.uid for m in first.changed] == [1, 2, 3]
        seconds = await _fastest(lambda: store.changes_since(inbox.id, first.highestmodseq))
        assert LINK_DELAY <= seconds < 2 * LINK_DELAY
        flagged = frozenset({"\\Flagged"})
        modes = iter([FlagMode.ADD, FlagMode.REMOVE, FlagMode.ADD])
        seconds = await _fastest(lambda: store.store_flags(inbox.id, [2], next(modes), flagged))
        assert 3 * LINK_DELAY <= seconds < 4 * LINK_DELAY
        # Three changes, each with the next MODSEQ; the last one set \Flagged again.
        changes = await store.changes_since(inbox.id, first.highestmodseq)
        assert [(m.uid, m.flags, m.modseq) for m in changes.changed] == [
            (2, flagged, first.highestmodseq + 3)
        ]
        assert changes.highestmodseq == first.highestmodseq + 3
    finally:
        await store.close()
        await link.close()
