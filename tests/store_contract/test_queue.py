"""The outbound queue on every backend: entries as queued, due/reschedule/flush/drop, attempts recorded
before connecting, results, recovery, DKIM fields stored once; and on PostgreSQL, leases across nodes
(two stores on one database): a claim is never given to two nodes, a dead node's entries are taken
over only once its lease expired, and start-up recovery leaves another node's live lease alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from staging import staged
from surat.config import HostPort
from surat.delivery.queue import QueueRunner, RunnerSettings
from surat.dns.fake import FakeResolver
from surat.store.base import (
    Account,
    Change,
    ChangeKind,
    Delivery,
    MailboxTarget,
    NotFound,
    OutboundMessage,
    OutboundRecipient,
    QueueEntry,
    QueueSummary,
    RecipientState,
    RecipientUpdate,
    Store,
)
from surat.store.postgres.queue import LeaseLost
from surat.store.postgres.store import PostgresStore
from unit.test_queue_runner import Clock, enqueue, inbox, runner

from .conftest import CREDS, StoreFactory, stored_blob_count
from .test_messages import inbox_id, message

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
LEASE = timedelta(minutes=30)
MESSAGE = b"Return-Path: <a@example.test>\r\nFrom: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"


async def queue_one(store: Store, local: tuple[MailboxTarget, ...] = ()) -> str:
    """A staged message with every DSN parameter, for two remote recipients (and `local` copies)."""
    data = message(7)
    remote = OutboundMessage(
        sender="alice@example.test",
        recipients=(
            OutboundRecipient(
                "bob@example.net", notify=("SUCCESS", "FAILURE"), orcpt="rfc822;bob@example.net"
            ),
            OutboundRecipient("carol@example.org"),
        ),
        envid="env-1",
        ret="HDRS",
        smtputf8=True,
        eight_bit=True,
        authenticated_user="alice@example.test",
        body_offset=35,
        requiretls=True,
    )
    result = await store.deliver(
        Delivery(await staged(store.blobs, data), len(data), WHEN, local=local, remote=remote)
    )
    assert result.queue_id is not None
    return result.queue_id


async def queue_two(store: Store) -> str:
    """A message in memory for two remote recipients, its Return-Path for local copies only."""
    remote = OutboundMessage(
        sender="a@example.test",
        recipients=(OutboundRecipient("b@example.net"), OutboundRecipient("c@example.org")),
        body_offset=len(b"Return-Path: <a@example.test>\r\n"),
    )
    result = await store.deliver(Delivery(None, len(MESSAGE), NOW, remote=remote, content=MESSAGE))
    assert result.queue_id is not None
    return result.queue_id


# ----------------------------------------------------------------------------------------- every backend


async def test_queue(store: Store, alice: Account) -> None:
    sub = store.changes.subscribe(0)
    queue_id = await queue_one(store)
    assert sub.pending() == [Change(ChangeKind.QUEUE_CHANGED, 0)]
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    assert entry.sender == "alice@example.test" and entry.size == len(message(7))
    assert [(r.address, r.state, r.notify, r.orcpt) for r in entry.recipients] == [
        ("bob@example.net", RecipientState.PENDING, ("SUCCESS", "FAILURE"), "rfc822;bob@example.net"),
        ("carol@example.org", RecipientState.PENDING, (), None),
    ]
    assert (entry.envid, entry.ret, entry.smtputf8, entry.eight_bit) == ("env-1", "HDRS", True, True)
    assert entry.requiretls  # RFC 8689 §4.1: kept with the entry
    assert entry.authenticated_user == "alice@example.test" and entry.body_offset == 35
    assert (await store.blobs.read(entry.blob_id)) == message(7)
    now = datetime.now(UTC)
    assert [e.id for e in await store.due_queue_entries(now + timedelta(seconds=1), 10)] == [queue_id]
    later = now + timedelta(hours=1)
    await store.reschedule(queue_id, later)
    assert await store.due_queue_entries(now + timedelta(seconds=1), 10) == []
    rescheduled = await store.get_queue_entry(queue_id)
    assert rescheduled is not None and abs(rescheduled.next_attempt_at - later) < timedelta(milliseconds=1)
    second = await queue_one(store, local=(MailboxTarget(alice.id),))
    assert [e.id for e in await store.list_queue()] == [queue_id, second]
    assert await store.flush_queue(now) == 2
    assert len(await store.due_queue_entries(now, 10)) == 2
    assert len(await store.due_queue_entries(now, 1)) == 1
    await store.drop_queue_entry(queue_id)
    assert await store.get_queue_entry(queue_id) is None
    with pytest.raises(NotFound):
        await store.drop_queue_entry(queue_id)
    with pytest.raises(NotFound):
        await store.reschedule(queue_id, now)
    assert await stored_blob_count(store) == 1
    # The second entry's blob is shared with the local copy: dropping the entry keeps it.
    await store.drop_queue_entry(second)
    assert await stored_blob_count(store) == 1
    await store.expunge(await inbox_id(store, alice), [1])
    assert await stored_blob_count(store) == 0


async def test_requiretls_is_false_unless_given(store: Store) -> None:
    entry = await store.get_queue_entry(await queue_two(store))
    assert entry is not None and not entry.requiretls


async def test_queue_summary_counts_entries_and_finds_the_oldest(store: Store) -> None:
    assert await store.queue_summary() == QueueSummary(0, None)
    first = await queue_one(store)
    await asyncio.sleep(0.01)
    second = await queue_two(store)
    entries = {e.id: e for e in await store.list_queue()}
    summary = await store.queue_summary()
    assert summary.entries == 2
    assert summary.oldest is not None
    assert abs(summary.oldest - entries[first].created_at) < timedelta(milliseconds=1)
    await store.drop_queue_entry(first)
    later = await store.queue_summary()
    assert later.entries == 1 and later.oldest is not None
    assert abs(later.oldest - entries[second].created_at) < timedelta(milliseconds=1)


async def test_attempt_claims_the_entry_and_records_results(store: Store) -> None:
    queue_id = await queue_two(store)
    sub = store.changes.subscribe(0)
    number = await store.record_attempt(queue_id, NOW, "example.net: mx.example.net", NOW + LEASE)
    assert number == 1
    assert sub.pending() == []  # claiming must not wake the runner that claims
    # Claimed: not due until the lease ends, and the attempt is visible in flight.
    assert await store.due_queue_entries(NOW + timedelta(minutes=29), 10) == []
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    (attempt,) = entry.attempts
    assert (attempt.number, attempt.started_at, attempt.host, attempt.result) == (
        1,
        NOW,
        "example.net: mx.example.net",
        None,
    )

    later = NOW + timedelta(minutes=1)
    await store.finish_attempt(
        queue_id,
        number,
        "b: 250; c: 451",
        [
            RecipientUpdate(0, RecipientState.DELIVERED, "250 2.0.0 ok"),
            RecipientUpdate(1, RecipientState.PENDING, "451 4.7.1 later", delay_notified=True),
        ],
        later,
        host="mx.example.net",
    )
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    assert [(r.state, r.last_reply, r.delay_notified) for r in entry.recipients] == [
        (RecipientState.DELIVERED, "250 2.0.0 ok", False),
        (RecipientState.PENDING, "451 4.7.1 later", True),
    ]
    assert entry.next_attempt_at == later
    assert [(a.number, a.host, a.result) for a in entry.attempts] == [(1, "mx.example.net", "b: 250; c: 451")]
    assert await store.record_attempt(queue_id, later, None, later + LEASE) == 2
    # A delay notice mark is never cleared by a later update.
    await store.finish_attempt(
        queue_id, 2, "c: 451", [RecipientUpdate(1, RecipientState.PENDING, "451 again")], later
    )
    again = await store.get_queue_entry(queue_id)
    assert again is not None and again.recipients[1].delay_notified


async def test_finishing_without_a_next_attempt_removes_the_entry_and_its_blob(store: Store) -> None:
    queue_id = await queue_two(store)
    assert await stored_blob_count(store) == 1
    number = await store.record_attempt(queue_id, NOW, None, NOW + LEASE)
    updates = [RecipientUpdate(i, RecipientState.FAILED, "550 5.1.1 no") for i in (0, 1)]
    await store.finish_attempt(queue_id, number, "failed", updates, None)
    assert await store.get_queue_entry(queue_id) is None
    assert await stored_blob_count(store) == 0
    with pytest.raises(NotFound):
        await store.finish_attempt(queue_id, number, "again", updates, None)
    with pytest.raises(NotFound):
        await store.record_attempt(queue_id, NOW, None, NOW)


async def test_recover_makes_interrupted_attempts_due(store: Store) -> None:
    interrupted = await queue_two(store)
    finished = await queue_two(store)
    await store.record_attempt(interrupted, NOW, "h", NOW + LEASE)
    number = await store.record_attempt(finished, NOW, "h", NOW + LEASE)
    await store.finish_attempt(finished, number, "451 later", [], NOW + timedelta(hours=1))
    sub = store.changes.subscribe(0)
    assert await store.recover_queue(NOW) == 1
    assert sub.pending() == [Change(ChangeKind.QUEUE_CHANGED, 0)]
    assert [e.id for e in await store.due_queue_entries(NOW, 10)] == [interrupted]
    entry = await store.get_queue_entry(interrupted)
    assert entry is not None and entry.attempts[0].result == "interrupted"
    assert await store.recover_queue(NOW) == 0


async def test_dkim_signature_is_stored_at_queueing_or_once_with_an_attempt(store: Store) -> None:
    """Issue 18: the fields made at submission come back with the entry; an entry queued without
    them gets them from its first attempt record, and a later attempt never replaces them."""
    signed = OutboundMessage(
        sender="a@example.test",
        recipients=(OutboundRecipient("b@example.net"),),
        dkim_signature=b"DKIM-Signature: v=1; a=ed25519-sha256; b=AAAA\r\n",
    )
    result = await store.deliver(Delivery(None, len(MESSAGE), NOW, remote=signed, content=MESSAGE))
    assert result.queue_id is not None
    entry = await store.get_queue_entry(result.queue_id)
    assert entry is not None and entry.dkim_signature == signed.dkim_signature
    await store.record_attempt(entry.id, NOW, None, NOW, dkim_signature=b"DKIM-Signature: other\r\n")
    again = await store.get_queue_entry(entry.id)
    assert again is not None and again.dkim_signature == signed.dkim_signature

    unsigned = await queue_two(store)
    first = await store.get_queue_entry(unsigned)
    assert first is not None and first.dkim_signature is None
    await store.record_attempt(unsigned, NOW, None, NOW)  # no signature made: still undecided
    await store.record_attempt(unsigned, NOW, None, NOW, dkim_signature=b"DKIM-Signature: made\r\n")
    await store.record_attempt(unsigned, NOW, None, NOW, dkim_signature=b"DKIM-Signature: again\r\n")
    later = await store.get_queue_entry(unsigned)
    assert later is not None and later.dkim_signature == b"DKIM-Signature: made\r\n"


async def test_renewal_moves_only_attempts_in_flight(store: Store) -> None:
    """The runner's heartbeat (`renew_leases`): an attempt in flight stays not due for `lease` from
    the renewal; an entry whose attempt finished keeps the next attempt its result set; on one node
    nothing is ever reported taken over."""
    in_flight, finished = await queue_two(store), await queue_two(store)
    await store.record_attempt(in_flight, NOW, "h", NOW + LEASE)
    number = await store.record_attempt(finished, NOW, "h", NOW + LEASE)
    retry_at = NOW + timedelta(minutes=5)
    await store.finish_attempt(finished, number, "451 later", [], retry_at)
    renewed_at = NOW + timedelta(minutes=20)
    assert await store.renew_leases([in_flight, finished], renewed_at, LEASE) == []
    entry, other = await store.get_queue_entry(in_flight), await store.get_queue_entry(finished)
    assert entry is not None and other is not None
    assert entry.next_attempt_at == renewed_at + LEASE
    assert other.next_attempt_at == retry_at
    assert [e.id for e in await store.due_queue_entries(renewed_at + LEASE - timedelta(seconds=1), 10)] == [
        finished
    ]
    assert await store.renew_leases([], renewed_at, LEASE) == []
    await store.drop_queue_entry(in_flight)
    assert await store.renew_leases([in_flight], renewed_at, LEASE) == []  # gone: not "taken over"


class _SilentPeer:
    """A next hop on loopback that accepts and never greets: an attempt to it stays in flight (the
    client's greeting timeout is 5 minutes) for as long as the test needs."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HostPort:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return HostPort("127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()


@contextlib.asynccontextmanager
async def _attempt_in_flight(store: Store, tmp_path: Path) -> AsyncIterator[QueueEntry]:
    """An entry for slow.test queued on `store` and a runner with a 0.6 s lease attempting it to a
    `_SilentPeer`: the attempt stays in flight until the runner stops at the end."""
    async with _SilentPeer() as hop:
        entry = await enqueue(store, [OutboundRecipient("x@slow.test")])
        settings = RunnerSettings(
            hostname="mail.example.test", routes={"slow.test": hop}, lease=timedelta(seconds=0.6)
        )
        queue_runner = QueueRunner(store, FakeResolver(), settings, data_dir=tmp_path / "data")
        await queue_runner.start()
        try:
            yield entry
        finally:
            await queue_runner.stop()


async def test_the_runner_renews_the_lease_of_a_long_attempt(
    backend: str, open_store: StoreFactory, tmp_path: Path
) -> None:
    """An attempt that lasts several leases keeps its entry: not due again on this node (SQLite), not
    claimable by another node (PostgreSQL), because the heartbeat renews it every third of a lease."""
    store = await open_store()
    async with _attempt_in_flight(store, tmp_path) as entry:
        await asyncio.sleep(2.0)  # more than three leases
        in_flight = await store.get_queue_entry(entry.id)
        assert in_flight is not None and [x.result for x in in_flight.attempts] == [None]
        assert in_flight.next_attempt_at > datetime.now(UTC)
        if backend == "postgresql":
            other = await open_store()
            assert await other.due_queue_entries(datetime.now(UTC) + timedelta(days=1), 10) == []


# ----------------------------------------------------------------------------------------- leases (PostgreSQL)


async def two_nodes(backend: str, open_store: StoreFactory) -> tuple[PostgresStore, PostgresStore]:
    if backend != "postgresql":
        pytest.skip("leases between nodes: PostgreSQL (SQLite serves one node, its queue in worker 0)")
    a, b = await open_store(), await open_store()
    assert isinstance(a, PostgresStore) and isinstance(b, PostgresStore)
    assert a.node_id != b.node_id
    return a, b


async def test_concurrent_claims_never_return_one_entry_twice(backend: str, open_store: StoreFactory) -> None:
    a, b = await two_nodes(backend, open_store)
    queued = {await queue_two(a) for _ in range(30)}
    due = datetime.now(UTC) + timedelta(seconds=1)
    claims = await asyncio.gather(*(node.due_queue_entries(due, 4) for _ in range(6) for node in (a, b)))
    by_a = [e.id for claim in claims[0::2] for e in claim]
    by_b = [e.id for claim in claims[1::2] for e in claim]
    assert not set(by_a) & set(by_b)
    # A node may get its own claims again (the runner skips those in flight), never the other's.
    assert set(by_a) | set(by_b) <= queued and by_a and by_b
    rest = {e.id for e in await b.due_queue_entries(due, 100)}
    assert rest == queued - set(by_a)


async def test_a_dead_node_entry_is_taken_over_only_after_its_lease(
    backend: str, open_store: StoreFactory
) -> None:
    a, b = await two_nodes(backend, open_store)
    a.lease = timedelta(seconds=1)
    queue_id = await queue_two(a)
    due = datetime.now(UTC) + timedelta(seconds=1)
    assert [e.id for e in await a.due_queue_entries(due, 10)] == [queue_id]
    # A recorded its attempt with a one second lease and died: B waits for the lease to end.
    number = await a.record_attempt(queue_id, due, "mx.example.net", due + timedelta(seconds=1))
    assert number == 1
    assert await b.due_queue_entries(due + timedelta(seconds=2), 10) == []
    with pytest.raises(LeaseLost):
        await b.record_attempt(queue_id, due, None, due + LEASE)
    await asyncio.sleep(1.2)
    (taken,) = await b.due_queue_entries(due + timedelta(seconds=2), 10)
    assert taken.id == queue_id
    assert [(x.number, x.result) for x in taken.attempts] == [(1, "interrupted")]
    assert await b.record_attempt(queue_id, due, None, due + LEASE) == 2
    # A comes back to life: the entry is B's now.
    assert await a.due_queue_entries(due + LEASE, 10) == []
    with pytest.raises(LeaseLost):
        await a.record_attempt(queue_id, due, None, due + LEASE)


async def test_recovery_leaves_another_node_live_lease_alone(backend: str, open_store: StoreFactory) -> None:
    a, b = await two_nodes(backend, open_store)
    of_a = await queue_two(a)
    of_b = await queue_two(a)
    await a.record_attempt(of_a, NOW, "h", NOW + LEASE)  # A delivering, alive
    await b.record_attempt(of_b, NOW, "h", NOW + LEASE)  # B's own, cut short by B's crash
    # B starts again (same node here: its own attempts are its to recover).
    assert await b.recover_queue(NOW) == 1
    entry_a, entry_b = await a.get_queue_entry(of_a), await a.get_queue_entry(of_b)
    assert entry_a is not None and entry_b is not None
    assert [x.result for x in entry_a.attempts] == [None]
    assert [x.result for x in entry_b.attempts] == ["interrupted"]
    assert entry_a.next_attempt_at == NOW + LEASE and entry_b.next_attempt_at == NOW
    assert [e.id for e in await b.due_queue_entries(NOW + LEASE, 10)] == [of_b]
    # A finishes normally; its lease ends with the attempt and anyone may take the next one.
    await a.finish_attempt(of_a, 1, "451 later", [], NOW)
    assert {e.id for e in await b.due_queue_entries(NOW, 10)} == {of_a, of_b}


async def test_retry_of_an_entry_in_flight_on_another_node_keeps_its_lease(
    backend: str, open_store: StoreFactory
) -> None:
    a, b = await two_nodes(backend, open_store)
    queue_id = await queue_two(a)
    await a.record_attempt(queue_id, NOW, "h", NOW + LEASE)
    await b.reschedule(queue_id, NOW)  # `surat queue retry` on node B
    assert await b.flush_queue(NOW) == 1  # `surat queue flush`
    assert await b.due_queue_entries(NOW, 10) == []
    assert [e.id for e in await a.due_queue_entries(NOW, 10)] == [queue_id]
    await a.reschedule(queue_id, NOW)  # the owner's own reschedule releases the entry
    assert [e.id for e in await b.due_queue_entries(NOW, 10)] == [queue_id]


async def test_renewal_keeps_live_leases_and_reports_the_entries_taken_over(
    backend: str, open_store: StoreFactory
) -> None:
    a, b = await two_nodes(backend, open_store)
    kept, lost = await queue_two(a), await queue_two(a)
    due, far = datetime.now(UTC) + timedelta(seconds=1), datetime.now(UTC) + timedelta(days=1)
    short = timedelta(seconds=1)
    assert {e.id for e in await a.due_queue_entries(due, 10, short)} == {kept, lost}
    await a.record_attempt(kept, due, "h", due + short)
    await a.record_attempt(lost, due, "h", due + short)
    # A renews `kept` only (say, `lost` is stuck behind a stalled heartbeat): B takes `lost` over.
    assert await a.renew_leases([kept], datetime.now(UTC), timedelta(seconds=30)) == []
    await asyncio.sleep(1.2)
    assert [e.id for e in await b.due_queue_entries(far, 10, LEASE)] == [lost]
    # A's next beat finds it: B's now, reported; `kept` renewed again; nothing moved to A.
    assert await a.renew_leases([kept, lost], datetime.now(UTC), timedelta(seconds=30)) == [lost]
    assert [e.id for e in await b.due_queue_entries(far, 10)] == [lost]  # its own again, never `kept`
    with pytest.raises(LeaseLost):
        await a.record_attempt(lost, due, None, due + LEASE)


async def test_the_heartbeat_logs_an_entry_another_node_took_over(
    backend: str, open_store: StoreFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await two_nodes(backend, open_store)
    async with _attempt_in_flight(a, tmp_path) as entry:
        await wait_until_attempted(a, entry.id)
        # A stalls past its lease (simulated: the lease ends now, as if no beat got through)
        # and B takes the entry over at its next claim.
        async with await psycopg.AsyncConnection.connect(a.dsn, autocommit=True) as conn:
            await conn.execute("UPDATE queue SET lease_expires_at = now() WHERE id = %s", (entry.id,))
        assert [e.id for e in await b.due_queue_entries(datetime.now(UTC) + timedelta(days=1), 10)] == [
            entry.id
        ]
        with caplog.at_level(logging.WARNING, logger="surat.delivery.queue"):
            await asyncio.sleep(0.5)  # more than one beat (0.2 s)
        assert any(r.getMessage() == "queue.lease_lost" for r in caplog.records), caplog.text


async def wait_until_attempted(store: Store, queue_id: str) -> None:
    for _ in range(100):
        entry = await store.get_queue_entry(queue_id)
        if entry is not None and entry.attempts:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no attempt recorded")


async def test_a_node_that_closes_hands_its_entries_back(backend: str, open_store: StoreFactory) -> None:
    a, b = await two_nodes(backend, open_store)
    queue_id = await queue_two(a)
    await a.record_attempt(queue_id, NOW, "h", NOW + LEASE)
    assert await b.due_queue_entries(NOW + LEASE, 10) == []
    await a.close()
    (taken,) = await b.due_queue_entries(NOW + LEASE, 10)
    assert taken.id == queue_id and [x.result for x in taken.attempts] == ["interrupted"]


async def test_two_runners_on_two_nodes_attempt_each_entry_once(
    backend: str, open_store: StoreFactory, tmp_path: Path
) -> None:
    """The queue runner, unchanged, on two nodes: each entry is attempted (here: bounced, null MX
    RFC 7505) by exactly one of them."""
    a, b = await two_nodes(backend, open_store)
    await a.add_domain("example.test")
    alice = await a.add_account("alice@example.test", CREDS)
    queued = [await enqueue(a, [OutboundRecipient("x@null.test")]) for _ in range(20)]
    clock = Clock(datetime.now(UTC) + timedelta(seconds=1))
    runners = [runner(node, tmp_path / node.node_id, clock) for node in (a, b)]
    started = await asyncio.gather(*(each.run_once() for _ in range(3) for each in runners))
    assert sum(started) == len(queued)
    await asyncio.gather(*(each.idle() for each in runners))
    assert await b.list_queue() == []
    assert len(await inbox(b, alice)) == len(queued)  # one bounce each, none twice
