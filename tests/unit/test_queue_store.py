"""The queue's write side in the SQLite store: attempts recorded before connecting, results, recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from old_schema import queue_database_at
from surat.store.base import (
    Change,
    ChangeKind,
    Delivery,
    NotFound,
    OutboundMessage,
    OutboundRecipient,
    RecipientState,
    RecipientUpdate,
)
from surat.store.sqlite import INDEX_FILE, SQLiteStore

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
MESSAGE = b"Return-Path: <a@example.test>\r\nFrom: a@example.test\r\nSubject: s\r\n\r\nbody\r\n"


async def queue_two(store: SQLiteStore) -> str:
    remote = OutboundMessage(
        sender="a@example.test",
        recipients=(OutboundRecipient("b@example.net"), OutboundRecipient("c@example.org")),
        body_offset=len(b"Return-Path: <a@example.test>\r\n"),
    )
    result = await store.deliver(Delivery(None, len(MESSAGE), NOW, remote=remote, content=MESSAGE))
    assert result.queue_id is not None
    return result.queue_id


def blob_files(store: SQLiteStore) -> list[Path]:
    return [p for p in store.blob_dir.rglob("*") if p.is_file()]


async def test_attempt_claims_the_entry_and_records_results(store: SQLiteStore) -> None:
    queue_id = await queue_two(store)
    sub = store.changes.subscribe(0)
    number = await store.record_attempt(
        queue_id, NOW, "example.net: mx.example.net", NOW + timedelta(minutes=30)
    )
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
            RecipientUpdate(1, RecipientState.PENDING, "451 4.7.1 later"),
        ],
        later,
        host="mx.example.net",
    )
    entry = await store.get_queue_entry(queue_id)
    assert entry is not None
    assert [(r.state, r.last_reply) for r in entry.recipients] == [
        (RecipientState.DELIVERED, "250 2.0.0 ok"),
        (RecipientState.PENDING, "451 4.7.1 later"),
    ]
    assert entry.next_attempt_at == later
    assert [(a.number, a.host, a.result) for a in entry.attempts] == [(1, "mx.example.net", "b: 250; c: 451")]
    assert await store.record_attempt(queue_id, later, None, later + timedelta(minutes=30)) == 2


async def test_finishing_without_a_next_attempt_removes_the_entry_and_its_blob(store: SQLiteStore) -> None:
    queue_id = await queue_two(store)
    assert len(blob_files(store)) == 1
    number = await store.record_attempt(queue_id, NOW, None, NOW + timedelta(minutes=30))
    updates = [RecipientUpdate(i, RecipientState.FAILED, "550 5.1.1 no") for i in (0, 1)]
    await store.finish_attempt(queue_id, number, "failed", updates, None)
    assert await store.get_queue_entry(queue_id) is None
    assert blob_files(store) == []
    with pytest.raises(NotFound):
        await store.finish_attempt(queue_id, number, "again", updates, None)
    with pytest.raises(NotFound):
        await store.record_attempt(queue_id, NOW, None, NOW)


async def test_recover_makes_interrupted_attempts_due(store: SQLiteStore) -> None:
    interrupted = await queue_two(store)
    finished = await queue_two(store)
    lease = NOW + timedelta(minutes=30)
    await store.record_attempt(interrupted, NOW, "h", lease)
    number = await store.record_attempt(finished, NOW, "h", lease)
    await store.finish_attempt(finished, number, "451 later", [], NOW + timedelta(hours=1))
    sub = store.changes.subscribe(0)
    assert await store.recover_queue(NOW) == 1
    assert sub.pending() == [Change(ChangeKind.QUEUE_CHANGED, 0)]
    assert [e.id for e in await store.due_queue_entries(NOW, 10)] == [interrupted]
    entry = await store.get_queue_entry(interrupted)
    assert entry is not None and entry.attempts[0].result == "interrupted"
    assert await store.recover_queue(NOW) == 0


async def test_dkim_signature_is_stored_at_queueing_or_once_with_an_attempt(store: SQLiteStore) -> None:
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


async def test_entries_queued_before_schema_6_read_as_unsigned(tmp_path: Path) -> None:
    """An existing data directory keeps working: migration 6 adds the column, old entries have NULL."""
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    queue_database_at(data_dir / INDEX_FILE, 5).close()
    store = SQLiteStore(data_dir)
    await store.open()
    try:
        entry = await store.get_queue_entry("q1")
        assert entry is not None and entry.dkim_signature is None
    finally:
        await store.close()
