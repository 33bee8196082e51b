"""The PostgreSQL change feed across nodes (surat.store.postgres.feed): two PostgresStore instances on
one database of the tests' private cluster stand for two nodes. What one commits reaches the other's
subscribers within a second; a lost LISTEN connection makes subscribers re-read, then hear again; a
store never hears its own changes twice. The payload codec is tested without a database at the end."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from pg_cluster import PostgresCluster
from surat.store.base import (
    Account,
    Change,
    ChangeKind,
    Credentials,
    Delivery,
    FlagMode,
    MailboxTarget,
    Subscription,
)
from surat.store.postgres import feed, schema
from surat.store.postgres.feed import (
    CHANNEL,
    MAX_PAYLOAD,
    ChangeNotificationError,
    decode_payload,
    encode_payload,
)
from surat.store.postgres.store import PostgresStore
from surat.workers.relay import CHANGES_PER_LINE

# Issue 12: a change committed on one node reaches IDLE sessions on every other node in < 1 s.
DEADLINE = 1.0
# How long the tests wait for the listener to reconnect (its backoff starts at 0.1 s).
RECONNECT_WAIT = 10.0
CREDS = Credentials("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
# An account id no test creates: the barrier's notifications go to its subscribers only.
BARRIER_ACCOUNT = 2**40


@pytest.fixture
def dsn(pg_cluster: PostgresCluster, pg_database: str) -> str:
    return pg_cluster.dsn(pg_database)


@pytest.fixture
async def nodes(dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Stores A and B on one database, as on two nodes."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)
    a, b = PostgresStore(dsn), PostgresStore(dsn)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _sql(dsn: str, query: str, params: tuple[object, ...] = ()) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(query.encode(), params)


async def _alice(store: PostgresStore) -> Account:
    await store.add_domain("example.test")
    return await store.add_account("alice@example.test", CREDS)


async def _deliver(store: PostgresStore, *targets: MailboxTarget) -> list[tuple[int, int, int]]:
    delivery = Delivery(None, len(MESSAGE), WHEN, local=targets, content=MESSAGE)
    return (await store.deliver(delivery)).local


async def _next(changes: AsyncIterator[Change], timeout: float = DEADLINE) -> Change:
    return await asyncio.wait_for(anext(changes), timeout)


async def _heard_so_far(dsn: str, store: PostgresStore) -> None:
    """Return once `store` has handled every notification committed before this call: PostgreSQL
    delivers notifications in commit order, so a marker sent now arrives after all of them."""
    with store.changes.subscribe(BARRIER_ACCOUNT) as barrier:
        marker = Change(ChangeKind.FLAGS_CHANGED, BARRIER_ACCOUNT, 1, (), 1)
        payload = encode_payload("barrier", [marker])
        await _sql(dsn, "SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        assert await _next(aiter(barrier), 5.0) == marker


async def _quiet(dsn: str, b: PostgresStore, subscription: Subscription) -> None:
    """Forget what `subscription` on `b` heard of the test's set-up."""
    await _heard_so_far(dsn, b)
    subscription.pending()


@dataclass
class Watched:
    """alice, made on node A, and a subscription to her account on node B that heard nothing yet."""

    a: PostgresStore
    b: PostgresStore
    alice: Account
    on_b: Subscription
    changes: AsyncIterator[Change]


@pytest.fixture
async def watched(dsn: str, nodes: tuple[PostgresStore, PostgresStore]) -> AsyncIterator[Watched]:
    a, b = nodes
    alice = await _alice(a)
    with b.changes.subscribe(alice.id) as on_b:
        await _quiet(dsn, b, on_b)
        yield Watched(a, b, alice, on_b, aiter(on_b))


async def _b_hears_a_delivery_on_a(watched: Watched) -> Change:
    """Deliver to alice on A; what B's subscription hears (within DEADLINE), checked and returned."""
    ((_, inbox, _uid),) = await _deliver(watched.a, MailboxTarget(watched.alice.id))
    heard = await _next(watched.changes)
    assert (heard.kind, heard.account_id, heard.mailbox_id) == (
        ChangeKind.MESSAGES_ADDED,
        watched.alice.id,
        inbox,
    )
    return heard


async def test_a_delivery_on_one_node_reaches_the_other_within_a_second(watched: Watched) -> None:
    with watched.a.changes.subscribe(watched.alice.id) as on_a:
        started = time.monotonic()
        heard = await _b_hears_a_delivery_on_a(watched)
        elapsed = time.monotonic() - started
        (local,) = on_a.pending()
    assert elapsed < DEADLINE
    assert local.kind is ChangeKind.MESSAGES_ADDED and len(local.uids) == 1
    # UIDs stay home: B re-reads the mailbox since its MODSEQ.
    assert heard == Change(ChangeKind.MESSAGES_ADDED, watched.alice.id, local.mailbox_id, (), local.modseq)


async def test_flags_and_expunges_reach_the_other_node(watched: Watched) -> None:
    a, alice, changes = watched.a, watched.alice, watched.changes
    added = await _b_hears_a_delivery_on_a(watched)
    inbox = added.mailbox_id
    assert inbox is not None
    (message,) = await a.list_messages(inbox)
    flagged = await a.store_flags(inbox, [message.uid], FlagMode.ADD, frozenset({"\\Deleted"}))
    (update,) = flagged.updated
    assert await _next(changes) == Change(ChangeKind.FLAGS_CHANGED, alice.id, inbox, (), update.modseq)
    assert await a.expunge(inbox, [message.uid]) == [message.uid]
    expunged = await _next(changes)
    assert (expunged.kind, expunged.account_id, expunged.mailbox_id) == (
        ChangeKind.MESSAGES_EXPUNGED,
        alice.id,
        inbox,
    )
    assert expunged.modseq > update.modseq


async def test_one_transaction_is_one_notification_in_full_or_as_a_summary(
    dsn: str, nodes: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = nodes
    alice = await _alice(a)
    bob = await a.add_account("bob@example.test", CREDS)
    names = [f"list{n}" for n in range(CHANGES_PER_LINE + 1)]
    boxes = [await a.create_mailbox(alice.id, name) for name in names]
    with b.changes.subscribe(alice.id) as on_alice, b.changes.subscribe(bob.id) as on_bob:
        await _quiet(dsn, b, on_alice)
        on_bob.pending()
        # Two mailboxes: both changes, in full.
        await _deliver(a, MailboxTarget(alice.id, names[0]), MailboxTarget(alice.id, names[1]))
        first, second = await _next(aiter(on_alice)), await _next(aiter(on_alice))
        assert [(first.kind, first.mailbox_id), (second.kind, second.mailbox_id)] == [
            (ChangeKind.MESSAGES_ADDED, boxes[0].id),
            (ChangeKind.MESSAGES_ADDED, boxes[1].id),
        ]
        # More distinct changes than one payload carries: the summary, and every subscriber of B
        # (bob's too, whom the delivery did not touch) re-reads.
        await _deliver(a, *(MailboxTarget(alice.id, name) for name in names))
        assert await _next(aiter(on_alice)) == Change(ChangeKind.OVERFLOW, alice.id)
        assert await _next(aiter(on_bob)) == Change(ChangeKind.OVERFLOW, bob.id)
        await _heard_so_far(dsn, b)
        assert on_alice.pending() == [] and on_bob.pending() == []


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat every 0.2 s, given up after 0.5 s, for the stores opened after this fixture."""
    monkeypatch.setattr(feed, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(feed, "HEARTBEAT_TIMEOUT", 0.5)


@pytest.mark.parametrize("failure", ["terminated", "stops answering"])
async def test_a_lost_listen_connection_makes_subscribers_reread_then_hear_again(
    dsn: str, quick_heartbeat: None, watched: Watched, failure: str
) -> None:
    alice = watched.alice
    lost = watched.b._listener.backend_pid
    assert lost is not None
    if failure == "terminated":
        await _sql(dsn, "SELECT pg_terminate_backend(%s)", (lost,))
        noticed_within = DEADLINE
    else:
        # The server process stops answering and keeps the connection open: the heartbeat finds it.
        os.kill(lost, signal.SIGSTOP)
        noticed_within = 0.2 + 0.5 + feed.PSYCOPG_CANCEL_BOUND + 1.0
    try:
        assert await _next(watched.changes, noticed_within) == Change(ChangeKind.OVERFLOW, alice.id)
        deadline = time.monotonic() + RECONNECT_WAIT
        while watched.b._listener.backend_pid in (None, lost):
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.02)
    finally:
        if failure != "terminated":
            os.kill(lost, signal.SIGCONT)
    # Listening again: one more re-read covers what was committed while nobody listened.
    assert watched.on_b.pending() == [Change(ChangeKind.OVERFLOW, alice.id)]
    await _b_hears_a_delivery_on_a(watched)


async def test_a_store_does_not_hear_its_own_changes_twice(
    dsn: str, nodes: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = nodes
    alice = await _alice(a)
    with a.changes.subscribe(alice.id) as on_a:
        await _heard_so_far(dsn, a)
        on_a.pending()
        ((_, inbox, uid),) = await _deliver(a, MailboxTarget(alice.id))
        # B's change commits after A's delivery, so A's listener has handled A's own notification
        # by the time B's arrives.
        flagged = await b.store_flags(inbox, [uid], FlagMode.ADD, frozenset({"\\Seen"}))
        changes = aiter(on_a)
        added, from_b = await _next(changes), await _next(changes)
        await _heard_so_far(dsn, a)
        assert on_a.pending() == []
    assert (added.kind, added.uids) == (ChangeKind.MESSAGES_ADDED, (uid,))  # the local one, with UIDs
    assert from_b == Change(ChangeKind.FLAGS_CHANGED, alice.id, inbox, (), flagged.updated[0].modseq)


async def test_a_foreign_notification_on_the_channel_makes_subscribers_reread(
    dsn: str, watched: Watched
) -> None:
    await _sql(dsn, "SELECT pg_notify(%s, %s)", (CHANNEL, "not a surat payload"))
    assert await _next(watched.changes) == Change(ChangeKind.OVERFLOW, watched.alice.id)
    await _b_hears_a_delivery_on_a(watched)  # and it still listens


# ------------------------------------------------------------------------------------ the payload


def test_changes_collapse_to_one_per_kind_and_mailbox_with_the_highest_modseq() -> None:
    changes = [
        Change(ChangeKind.MESSAGES_ADDED, 7, 3, (1,), 10),
        Change(ChangeKind.FLAGS_CHANGED, 7, 3, (1,), 11),
        Change(ChangeKind.MESSAGES_ADDED, 7, 3, (2,), 12),
        Change(ChangeKind.QUEUE_CHANGED, 0),
        Change(ChangeKind.OVERFLOW, 7),  # a subscriber's own marker is never sent
    ]
    payload = encode_payload("n1", changes)
    assert encode_payload("n1", [Change(ChangeKind.OVERFLOW, 7)]) is None  # nothing to send
    assert payload == """n1 [["messages_added",7,3,12],["flags_changed",7,3,11],["queue_changed",0,null,0]]"""
    assert decode_payload(payload) == (
        "n1",
        [
            Change(ChangeKind.MESSAGES_ADDED, 7, 3, (), 12),
            Change(ChangeKind.FLAGS_CHANGED, 7, 3, (), 11),
            Change(ChangeKind.QUEUE_CHANGED, 0),
        ],
    )


@pytest.mark.parametrize(
    ("count", "ids", "in_full"),
    [
        (CHANGES_PER_LINE, 1, True),  # the most one payload carries in full
        (CHANGES_PER_LINE + 1, 1, False),  # one more: the summary
        (100, 2**62, True),  # large ids: ~6 KB, under PostgreSQL's 8000 bytes
        (200, 2**62, False),  # ~12 KB: the summary
    ],
)
def test_what_does_not_fit_one_payload_becomes_the_summary(count: int, ids: int, in_full: bool) -> None:
    changes = [Change(ChangeKind.MESSAGES_ADDED, ids, ids + n, (), ids) for n in range(count)]
    payload = encode_payload("n1", changes)
    assert payload is not None and len(payload.encode()) <= MAX_PAYLOAD
    assert decode_payload(payload) == ("n1", changes if in_full else None)


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "n1",
        ' [["flags_changed",1,1,1]]',
        'n-1 [["flags_changed",1,1,1]]',
        'n1 [["overflow",1,1,1]]',
        'n1 "ready"',
        "n1 []",
        "n1 {}",
        'n1 [["flags_changed",1,1,1]',
        "n1 " + "x" * MAX_PAYLOAD,
    ],
)
def test_payloads_that_are_not_surat_changes_are_refused(payload: str) -> None:
    with pytest.raises(ChangeNotificationError):
        decode_payload(payload)
